"""Roster management (RFC 6121 §2): the ``jabber:iq:roster`` get, set and remove, versioning.

An account's roster is what it stored (``convergence.store.roster``) combined with the **shared
roster** (``[xmpp] shared_roster``, on by default): every other account of the domain and the
service users (echo, the HTTP user) appear in the group ``Friends`` with subscription ``both``,
like the original sample. The combination and the roster version (§2.6) are protocol-neutral and
live in :mod:`convergence.contacts` (the HTTP API shows the same roster); a shared contact cannot
be removed (``not-allowed``).

A resource that asked for the roster is *interested* (§2.1.6) and gets every roster push
(``roster_push.py``). Removing an item cancels the subscriptions both ways (§2.5.2,
``subscription_handling.contact_removed``).
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import replace

from convergence import Address, AddressError, contacts
from convergence.store import roster as store
from convergence.store.roster import Item

from .roster_push import NS, QUERY, item_element, push
from .stanzas import StanzaError, iq_result, tag
from .subscription_handling import contact_removed

MAX_TEXT = 1023  # bytes of a name or a group name; longer is not-acceptable (§2.3.3)


def register_iq(router) -> None:
    router.register(QUERY, roster_iq, features=(NS,))


def roster_iq(service, session, iq: ET.Element) -> ET.Element:
    """Roster get (§2.2, with versioning §2.6) and roster set (§2.3 add, §2.4 update, §2.5 remove)."""
    query = iq.find(QUERY)
    if iq.get("type") == "get":
        return _get(service, session, iq, query)
    _set(service, session, query)
    return iq_result(iq)


def _get(service, session, iq, query) -> ET.Element:
    session.interested = True
    items, version = contacts.view(service.core, session.account)
    if query.get("ver") == version:
        return iq_result(iq)  # §2.6.3: nothing changed since the client's version
    result = ET.Element(QUERY, ver=version)
    result.extend(item_element(i) for i in items)
    return iq_result(iq, result)


def _set(service, session, query) -> None:
    children = list(query)
    if len(children) != 1 or children[0].tag != tag("item", NS):
        raise StanzaError("bad-request", "a roster set carries exactly one item")  # §2.3.3
    element = children[0]
    try:
        contact = Address.parse(element.get("jid") or "")
    except AddressError as exc:
        raise StanzaError("jid-malformed", str(exc)) from None
    account = session.account
    if element.get("subscription") == "remove":
        return _remove(service, account, contact)
    name = element.get("name") or None
    groups = [g.text or "" for g in element.findall(tag("group", NS))]
    if any(not g.strip() for g in groups):
        raise StanzaError("not-acceptable", "a group name is empty")
    if len(set(groups)) != len(groups):
        raise StanzaError("bad-request", "a group is listed twice")
    if any(len(t.encode()) > MAX_TEXT for t in [name or ""] + groups):
        raise StanzaError("not-acceptable", f"names are limited to {MAX_TEXT} bytes")
    # subscription, ask and approved in a set are the server's business: ignored (§2.1.2)
    current = store.get(service.core.db, account.local, contact.jid) or Item(contact.jid)
    store.save(service.core.db, account.local, replace(current, name=name, groups=tuple(groups)))
    push(service, account, contact.jid)


def _remove(service, account: Address, contact: Address) -> None:
    """§2.5: drop the item; subscriptions both ways are cancelled (§2.5.2) by the subscription code."""
    if contacts.is_shared(service.core, account, contact):
        raise StanzaError("not-allowed", "a shared roster contact cannot be removed")
    item = store.get(service.core.db, account.local, contact.jid)
    if item is None:
        raise StanzaError("item-not-found", f"{contact} is not on the roster")
    contact_removed(service, account, contact, item)
    push(service, account, contact.jid)
