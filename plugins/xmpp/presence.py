"""Presence broadcast (RFC 6121 §4) for local sessions: every <presence/> a bound session sends.

- **Broadcast** (§4.2–§4.5): presence without ``to`` goes to the contacts that see the user's
  presence (subscription ``from``/``both``, or everyone on the shared roster) and to all of the
  user's available resources, the sender included. The first available presence is *initial*: the
  server then answers the probes of §4.3 itself (the last presence of each available resource of
  every contact the user sees, and the combined presence of contacts online through SIP, HTTP or as
  service users), redelivers pending subscription requests (§3.1.3) and the offline messages
  (XEP-0160). ``unavailable``, sent or caused by the session ending (``closed``), goes to the same
  contacts and to every target of directed presence.
- **Directed presence** (§4.6) to a JID the broadcast does not reach is remembered in
  ``session.directed`` so that it gets ``unavailable`` too.
- **Subscription stanzas** (§3) go to ``subscription_handling.py``; who sees whom, and the stanzas
  sent to sessions, are ``visibility.py``.
- **Non-XMPP presence**: each SIP binding or HTTP stream of an account is shown as a resource of
  its own, from the endpoint's full JID (``user@domain/<endpoint resource>``), available while it
  is there and ``unavailable`` when it goes; a service user (echo, the HTTP user) from its bare JID.
  ``account_changed`` runs on the core's ``on_presence``, ``on_register``, ``on_login`` and
  ``on_logout`` and sends only what changed; XMPP sessions broadcast their own presence.

What presence remembers lives on the service: the last available stanza of each session
(``service.last_presence``, for probes, §4.3.2) and, per account, the non-XMPP presence last shown
from each JID (``service.shown``). Contacts of other domains (federation) are reached through
``s2s_presence``: remote watchers in the broadcast, probes at initial presence, directed presence
over s2s; without federation they get ``remote-server-not-found``.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET

from convergence import Address, AddressError, Presence, contacts
from convergence.presence import UNAVAILABLE
from convergence.store import roster as store

from . import blocking, s2s_presence
from .stanzas import StanzaError, error_reply, tag
from .subscription_handling import subscription
from .subscriptions import KINDS
from .visibility import (deliver, foreign, own, readdressed, send, show, stanza, stanza_of,
                         watched, watcher_accounts, watchers)

SHOWS = ("away", "chat", "dnd", "xa")
TYPES = (None, "unavailable", "probe", "error") + KINDS


# -- entry points (called by the c2s code and the core hooks) --
def outbound(service, session, element: ET.Element) -> None:
    """A <presence/> from a bound session; ``from`` is already stamped (RFC 6120 §8.1.2.1)."""
    kind = element.get("type")
    try:
        if kind not in TYPES:
            raise StanzaError("bad-request", f"unknown presence type {kind!r}")
        to = _address(element.get("to")) if element.get("to") else None
        if to is not None and kind != "error" and service.blocking.blocks(session.account, to):
            raise blocking.blocked_error()  # XEP-0191 §3.3: presence to a JID the user blocks
        if kind in KINDS:
            subscription(service, session, kind, to, element)
        elif kind == "probe":
            if to is not None and to.bare in watched(service, session.account):
                show(service, to.bare, [session])
        elif kind == "error":
            target = service.session(to) if to is not None and to.resource else None
            if target is not None:
                target.send(element)
        elif to is None:
            _broadcast(service, session, element)
        else:
            _directed(service, session, to, element)
    except StanzaError as error:
        session.send(error_reply(element, error))


def closed(service, session) -> None:
    """A bound session ended for any reason: ``unavailable`` to everyone who saw it (§4.5.2)."""
    service.iq.emit("closed", service, session)
    if session.available:
        session.available = False
        gone = stanza("unavailable", session.address)
        send(watchers(service, session.account) + own(service, session.account), gone)
        _forget(service, session)
    for target in session.directed:
        deliver(service, target, stanza("unavailable", session.address, target))
    session.directed.clear()


def account_changed(service, account: Address, presence: Presence | None = None) -> None:
    """An endpoint of ``account`` came, went or changed, or a service user's presence changed.

    Shows the sessions that see the account what changed among its non-XMPP endpoints (SIP
    bindings, HTTP streams; each from its full JID) or its service presence (from the bare JID).
    Idempotent: nothing is sent when nothing changed (XMPP sessions broadcast their own presence).
    """
    shown = service.shown
    before, current = shown.get(account, {}), foreign(service.core, account)
    if current:
        shown[account] = current
    else:
        shown.pop(account, None)
    changes = [stanza_of(jid, p) for jid, p in current.items() if before.get(jid) != p]
    changes += [stanza("unavailable", jid) for jid in before if jid not in current]
    if changes:
        targets = watchers(service, account)
        for change in changes:
            send(targets, change)


# -- broadcast and directed presence (§4) --
def _broadcast(service, session, element: ET.Element) -> None:
    available = element.get("type") is None
    initial = available and not session.available
    if available:
        session.presence = _parse(element)
        service.last_presence[session.address] = (session, element)
    else:
        session.presence = UNAVAILABLE
        _forget(service, session)
    was_available, session.available = session.available, available
    service.iq.emit("presence", service, session, element)  # caps (XEP-0115), avatar hash (XEP-0153)
    service.core.presence.update(session)
    if not (available or was_available):
        return  # unavailable from a resource that never was available: nobody to tell
    account = session.account
    # What initial presence needs from the store, read in one transaction.
    state = store.initial_presence(service.core.db, account.local, account.jid,
                                   watchers=not contacts.shared_on(service.core)) if initial else None
    send(watchers(service, account, state) + own(service, account), element)
    if not available:
        for target in session.directed:
            deliver(service, target, readdressed(element, session.address, target))
        session.directed.clear()
    if initial:
        last = service.last_presence
        for other in own(service, account):  # the account's other resources (§4.3.2)
            if other is not session:
                session.send(readdressed(last[other.address][1], other.address, session.address))
        for contact in watched(service, account, state):
            show(service, contact, [session])
        s2s_presence.probe(service, account)  # contacts of other domains answer by themselves
        for contact, text in state.requests:
            if not service.blocking.blocks(account, Address.from_jid(contact)):  # XEP-0191 §3.3
                session.send(ET.fromstring(text))  # §3.1.3: still waiting for an answer
        service.core.router.deliver_stored(account)


def _directed(service, session, to: Address, element: ET.Element) -> None:
    """§4.6: presence to one JID; remembered so that ``unavailable`` reaches it later."""
    service.iq.emit("directed", service, session, element)  # the avatar hash (XEP-0398 §4)
    deliver(service, to, element)  # another domain: over federation (remote-server-not-found without)
    if element.get("type") == "unavailable":
        session.directed.discard(to)
    elif session.available and to.bare not in watcher_accounts(service, session.account):
        session.directed.add(to)


def _forget(service, session) -> None:
    last = service.last_presence
    if last.get(session.address, (None,))[0] is session:
        del last[session.address]


# -- parsing --
def _address(text: str) -> Address:
    try:
        return Address.parse(text)
    except AddressError as exc:
        raise StanzaError("jid-malformed", str(exc)) from None


def _parse(element: ET.Element) -> Presence:
    """§4.7: show, status and priority of an available presence."""
    show_text = element.findtext(tag("show"))
    if show_text is not None and show_text.strip() not in SHOWS:
        raise StanzaError("bad-request", f"<show/> must be one of {', '.join(SHOWS)}")
    try:
        priority = int(element.findtext(tag("priority")) or 0)
    except ValueError:
        priority = 128
    if not -128 <= priority <= 127:
        raise StanzaError("bad-request", "<priority/> must be an integer from -128 to 127")
    return Presence(True, show_text.strip() if show_text else None, element.findtext(tag("status")),
                    priority)
