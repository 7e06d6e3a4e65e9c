"""Roster management (RFC 6121 §2): get, set, remove, roster pushes, versioning, shared roster.

An account's roster is what it stored (``convergence.store.roster``) combined with the **shared
roster** (``[xmpp] shared_roster``, on by default): every other account of the domain and the
service users (echo, the HTTP user) appear in the group ``Friends`` with subscription ``both``,
like the original sample. The combination and the roster version (§2.6) are protocol-neutral and
live in :mod:`convergence.contacts` (the HTTP API shows the same roster); a shared contact cannot
be removed (``not-allowed``).

A resource that asked for the roster is *interested* (§2.1.6) and gets every roster push.
"""
from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from dataclasses import replace

from convergence import Address, AddressError, contacts
from convergence.store import roster as store
from convergence.store.roster import Item

from . import presence
from .iq import handler
from .stanzas import StanzaError, iq_result, tag

NS = "jabber:iq:roster"
QUERY = f"{{{NS}}}query"
#: The roster versioning stream feature (§2.6.1), offered by the c2s stream.
VERSIONING_FEATURE = "{urn:xmpp:features:rosterver}ver"
MAX_TEXT = 1023  # bytes of a name or a group name; longer is not-acceptable (§2.3.3)


def item_element(item: Item) -> ET.Element:
    """``<item/>`` as in a roster result or push (§2.1.2)."""
    attrs = {"jid": item.jid, "subscription": item.subscription}
    if item.name:
        attrs["name"] = item.name
    if item.ask:
        attrs["ask"] = "subscribe"
    if item.approved:
        attrs["approved"] = "true"
    element = ET.Element(tag("item", NS), attrs)
    for group in item.groups:
        ET.SubElement(element, tag("group", NS)).text = group
    return element


# -- roster pushes (§2.1.6) --
def push(service, account: Address, jid: str) -> None:
    """Send the current state of ``jid`` on ``account``'s roster (or its removal) to every
    interested resource of the account."""
    sessions = [s for s in service.sessions(account) if s.interested]
    if not sessions:
        return
    items, version = contacts.view(service.core, account)
    item = next((i for i in items if i.jid == jid), None)
    element = item_element(item) if item else ET.Element(tag("item", NS), jid=jid, subscription="remove")
    for session in sessions:
        iq = ET.Element(tag("iq"), type="set", id=f"push-{uuid.uuid4().hex[:12]}",
                        to=str(session.address))
        ET.SubElement(iq, QUERY, ver=version).append(element)
        session.send(iq)


def account_changed(service, account: Address, change: str) -> None:
    """An account was created or deleted (core ``on_account``): with the shared roster on, push it
    to the interested resources of every other account."""
    if change not in ("created", "deleted") or not contacts.shared_on(service.core):
        return
    for owner in {s.account for s in service.all_sessions() if s.interested} - {account}:
        push(service, owner, account.jid)


# -- the jabber:iq:roster IQ --
@handler(QUERY, features=(NS,))
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
    """§2.5: drop the item; subscriptions both ways are cancelled (§2.5.2) by the presence code."""
    if contacts.is_shared(service.core, account, contact):
        raise StanzaError("not-allowed", "a shared roster contact cannot be removed")
    item = store.get(service.core.db, account.local, contact.jid)
    if item is None:
        raise StanzaError("item-not-found", f"{contact} is not on the roster")
    presence.contact_removed(service, account, contact, item)
    push(service, account, contact.jid)
