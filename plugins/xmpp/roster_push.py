"""Roster pushes (RFC 6121 §2.1.6): an item's new state to every interested resource of its owner.

A resource that asked for the roster (``roster.py``) is *interested*; every change of an item —
a roster set or remove, a subscription state change (``subscription_handling.py``), an account
created or deleted while the shared roster is on — is pushed to each such resource as an IQ set
carrying the item and the roster's new version (§2.6). The roster itself (stored items combined
with the shared roster) comes from :mod:`convergence.contacts`.
"""
from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET

from convergence import Address, contacts
from convergence.store.roster import Item

from . import cluster_relay
from .stanzas import tag

NS = "jabber:iq:roster"
QUERY = f"{{{NS}}}query"


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


def push(service, account: Address, jid: str, local: bool = False) -> None:
    """Send the current state of ``jid`` on ``account``'s roster (or its removal) to every
    interested resource of the account (in a cluster, on other nodes too, unless ``local``)."""
    if not local:
        cluster_relay.push(service, account, jid)
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
