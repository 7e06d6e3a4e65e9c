"""Who sees whose presence, and presence stanzas to local sessions (RFC 6121 §4, §8.5).

Shared by the broadcast (``presence.py``) and the subscription handling
(``subscription_handling.py``). An account's presence is seen by the local accounts subscribed to
it (``from``/``both``), or by every account with the shared roster (``convergence.contacts``); it
is what its available XMPP sessions last sent (``service.last_presence``) plus what
``foreign`` gives: each available SIP binding or HTTP stream from its full JID, or a service
user's presence from its bare JID.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET

from convergence import Address, Presence, contacts
from convergence.store import roster as store

from . import cluster_relay, s2s_presence
from .stanzas import tag


# -- who sees whom --
def watcher_accounts(service, account: Address, state: store.InitialPresence | None = None) -> set[Address]:
    """The local accounts that see ``account``'s presence (``state``: read already)."""
    core = service.core
    if contacts.shared_on(core):
        return {s.account for s in service.all_sessions()} - {account.bare}
    names = state.watchers if state else store.watchers(core.db, account.jid)
    return {core.address(name) for name in names}


def watchers(service, account: Address, state: store.InitialPresence | None = None) -> list:
    """The available sessions that see ``account``'s presence, and its contacts of other domains
    that do (``s2s_presence.RemoteWatcher``: they take stanzas like a session)."""
    return [s for a in watcher_accounts(service, account, state) for s in own(service, a)] \
        + s2s_presence.watchers(service, account)


def watched(service, account: Address, state: store.InitialPresence | None = None) -> list[Address]:
    """The local contacts whose presence ``account`` sees (subscription ``to``/``both``)."""
    return contacts.watched(service.core, account, (state.items, state.version) if state else None)


def own(service, account: Address) -> list:
    """The available XMPP sessions of ``account``."""
    return [s for s in service.sessions(account) if s.available]


def foreign(core, account: Address) -> dict[Address, Presence]:
    """What to show of ``account`` besides its XMPP sessions: each available non-XMPP endpoint by
    its full JID, or a service user's presence by its bare JID."""
    if account.bare in contacts.service_users(core):
        presence = core.presence.presence(account)
        return {account.bare: presence} if presence.available else {}
    return {e.address: e.presence for e in core.presence.endpoints(account)
            if e.protocol != "xmpp" and e.presence.available}


# -- showing and withdrawing an account's presence --
def show(service, account: Address, sessions: list) -> None:
    """The current presence of ``account`` to ``sessions``: the probe answer (§4.3.2), or what a
    contact that just started seeing it gets (§3.1.5)."""
    last = service.last_presence
    for other in own(service, account):
        send(sessions, last[other.address][1], other.address)
    for jid, presence in foreign(service.core, account).items():
        send(sessions, stanza_of(jid, presence))


def seen_by(service, contact: Address) -> list:
    """Where ``contact`` sees presence: its available sessions, or for a contact of another
    domain its server (federation)."""
    if s2s_presence.remote(service, contact):
        return [s2s_presence.RemoteWatcher(service, contact.bare)]
    return own(service, contact) + cluster_relay.watchers(service, contact)  # on other nodes too


def withdraw(service, account: Address, contact: Address) -> None:
    """``contact`` no longer sees ``account``: unavailable from each of its resources."""
    unavailable_to(service, account, seen_by(service, contact))


def unavailable_to(service, account: Address, targets: list, screen: bool = True) -> None:
    """``unavailable`` from each of ``account``'s resources (XMPP and others) to ``targets``;
    across a block list too when not ``screen`` (the one a new block sends, XEP-0191 §3.3)."""
    for session in own(service, account):
        send(targets, stanza("unavailable", session.address), screen=screen)
    for jid in foreign(service.core, account):
        send(targets, stanza("unavailable", jid), screen=screen)


# -- stanzas --
def stanza(kind: str | None, sender: Address, to: Address | None = None) -> ET.Element:
    attrs = {"from": str(sender)}
    if kind:
        attrs["type"] = kind
    if to is not None:
        attrs["to"] = str(to)
    return ET.Element(tag("presence"), attrs)


def stanza_of(sender: Address, presence: Presence) -> ET.Element:
    """A presence stanza saying ``presence`` (§4.7)."""
    element = stanza(None if presence.available else "unavailable", sender)
    if presence.show:
        ET.SubElement(element, tag("show")).text = presence.show
    if presence.status:
        ET.SubElement(element, tag("status")).text = presence.status
    if presence.priority:
        ET.SubElement(element, tag("priority")).text = str(presence.priority)
    return element


def readdressed(element: ET.Element, sender: Address, to: Address) -> ET.Element:
    copy = ET.Element(element.tag, dict(element.attrib))
    copy.text = element.text
    copy.extend(element)
    copy.set("from", str(sender))
    copy.set("to", str(to))
    return copy


def send(sessions: list, element: ET.Element, sender: Address | None = None,
         screen: bool = True) -> None:
    """``element`` to each session, addressed to it (and from ``sender`` when given); with
    ``screen``, not to a session across a block list (XEP-0191 §3.3: presence is not delivered,
    no error)."""
    sender = sender or Address.parse(element.get("from"))
    for session in sessions:
        if not screen or not session.service.blocking.hides(sender, session.address):
            session.send(readdressed(element, sender, session.address))


def deliver(service, to: Address, element: ET.Element, local: bool = False) -> None:
    """A presence stanza to a local JID (RFC 6121 §8.5): the named resource, or every available
    resource of the account; nothing for a JID with no such session (§8.5.1, §8.5.3.2.2).
    A JID of another domain: over federation (``s2s_presence.send``); of the MUC domain: to
    the MUC service (entering, leaving a room, ``muc_service.py``). Nothing across a block list
    (XEP-0191 §3.3). In a cluster, sessions on other nodes get it too (``cluster_relay``), unless
    ``local`` (it came from another node)."""
    sender = Address.parse(element.get("from"))
    if service.blocking.hides(sender, to):
        return
    muc = getattr(service, "muc", None)
    if muc is not None and to.domain == muc.domain:
        muc.presence(readdressed(element, sender, to))
        return
    if s2s_presence.remote(service, to):
        s2s_presence.send(service, readdressed(element, sender, to))
        return
    if not local:
        cluster_relay.deliver(service, to, readdressed(element, sender, to))
    if to.resource:
        session = service.session(to)
        if session is not None:
            session.send(readdressed(element, sender, to))
        return
    for session in own(service, to):
        session.send(readdressed(element, sender, to))
