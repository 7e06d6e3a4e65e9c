"""In-band registration (XEP-0077), only with ``[xmpp] allow_registration = true``.

Before authentication a client may ask for the form (§3.1) and create an account with a username
and password; once authenticated it may change its password (§3.3) or remove its account (§3.2,
which ends every stream of the account). With registration off the IQ is answered
``service-unavailable``, and neither the stream feature (c2s.py) nor the ``jabber:iq:register``
disco#info feature is offered.

The core derives the password secrets (PBKDF2) in the hub's threadpool, so registering does not
stall other streams.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET

from convergence import AddressError
from convergence.credentials import PasswordError
from convergence.store import accounts

from .stanzas import StanzaError, iq_result, tag

NS = "jabber:iq:register"
QUERY = f"{{{NS}}}query"


def enabled(service) -> bool:
    return bool(service.settings["allow_registration"])


def register_iq(router) -> None:
    router.register(QUERY, register, features=(NS,), before_auth=True, offered=enabled)


def register(service, session, iq: ET.Element) -> ET.Element:
    if not enabled(service):
        raise StanzaError("service-unavailable", "in-band registration is off")
    query = iq[0]
    account = session.account if session.address is not None else None
    if iq.get("type") == "get":
        return iq_result(iq, _form(account))
    if query.find(tag("remove", NS)) is not None:
        return _remove(service, session, iq, account)
    name, password = query.findtext(tag("username", NS)), query.findtext(tag("password", NS))
    if not name or not password:
        raise StanzaError("not-acceptable", "username and password are required")  # §3.1
    core = service.core
    try:
        address = core.address(name)
        if account is not None and address != account:
            raise StanzaError("not-allowed", "only your own password can be changed")
        if account is None:
            core.add_account(address.local, password)
        else:
            core.set_password(address.local, password, endpoint=session)  # §3.3: it stays
    except (AddressError, PasswordError) as exc:
        raise StanzaError("not-acceptable", str(exc)) from None
    except accounts.AccountExists:
        raise StanzaError("conflict", f"{address} is taken") from None
    return iq_result(iq)


def _form(account) -> ET.Element:
    """§3.1: the fields to fill in; for an account, §3.2.1's <registered/> with its username."""
    query = ET.Element(QUERY)
    if account is None:
        ET.SubElement(query, tag("instructions", NS)).text = "Choose a username and password."
        ET.SubElement(query, tag("username", NS))
    else:
        ET.SubElement(query, tag("registered", NS))
        ET.SubElement(query, tag("username", NS)).text = account.local
    ET.SubElement(query, tag("password", NS))
    return query


def _remove(service, session, iq, account) -> None:
    """§3.2: cancel the registration; the result is sent, then every stream of the account ends."""
    if account is None:
        raise StanzaError("not-authorized", "log in to remove your account")
    core = service.core
    try:
        core.delete_account(account.local, endpoint=session)  # answered before it ends
    except accounts.NoSuchAccount:
        raise StanzaError("item-not-found", f"{account} does not exist") from None
    session.send(iq_result(iq))
    for other in service.sessions(account):
        other.close("not-authorized", "the account was removed")

