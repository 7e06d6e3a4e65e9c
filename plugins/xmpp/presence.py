"""Presence (RFC 6121 §3 and §4) for local sessions: every <presence/> a bound session sends.

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
- **Subscriptions** (§3): the state machine is ``subscriptions.py``; here its decisions are applied
  to both sides of a local relationship: store, roster push, routing, the automatic ``subscribed``,
  and presence sent or withdrawn when a contact starts or stops seeing the user.
- **Non-XMPP presence**: each SIP binding or HTTP stream of an account is shown as a resource of
  its own, from the endpoint's full JID (``user@domain/<endpoint resource>``), available while it
  is there and ``unavailable`` when it goes; a service user (echo, the HTTP user) from its bare JID.
  ``account_changed`` runs on the core's ``on_presence``, ``on_register``, ``on_login`` and
  ``on_logout`` and sends only what changed; XMPP sessions broadcast their own presence.

The shared roster makes every local account and service user a ``both`` contact of every account:
subscription stanzas between them are answered (``subscribe`` → ``subscribed``) but change nothing.
Contacts on other domains are not reachable (no server-to-server yet): directed presence and
subscription stanzas to them get ``remote-server-not-found``.
"""
from __future__ import annotations

import weakref
import xml.etree.ElementTree as ET

from convergence import Address, AddressError, Presence, contacts
from convergence.presence import UNAVAILABLE
from convergence.store import accounts
from convergence.store import roster as store
from convergence.store.roster import Item

from . import roster
from .stanzas import StanzaError, error_reply, tag
from .subscriptions import KINDS, State, inbound, outbound as outbound_transition

SHOWS = ("away", "chat", "dnd", "xa")
TYPES = (None, "unavailable", "probe", "error") + KINDS


class _Memory:
    """What presence remembers per service: the last available stanza of each session (for
    probes, §4.3.2) and, per account, the non-XMPP presence last shown from each JID."""

    def __init__(self):
        self.last: dict[Address, tuple[object, ET.Element]] = {}
        self.shown: dict[Address, dict[Address, Presence]] = {}


_MEMORY: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _memory(service) -> _Memory:
    memory = _MEMORY.get(service)
    if memory is None:
        memory = _MEMORY[service] = _Memory()
    return memory


# -- entry points (called by the c2s code and the core hooks) --
def outbound(service, session, element: ET.Element) -> None:
    """A <presence/> from a bound session; ``from`` is already stamped (RFC 6120 §8.1.2.1)."""
    kind = element.get("type")
    try:
        if kind not in TYPES:
            raise StanzaError("bad-request", f"unknown presence type {kind!r}")
        to = _address(element.get("to")) if element.get("to") else None
        if kind in KINDS:
            _subscription(service, session, kind, to, element)
        elif kind == "probe":
            if to is not None and to.bare in _watched(service, session.account):
                _show_contact(service, to.bare, [session])
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
    if session.available:
        session.available = False
        gone = _stanza("unavailable", session.address)
        _send(_watchers(service, session.account) + _own(service, session.account), gone)
        _forget(service, session)
    for target in session.directed:
        _deliver(service, target, _stanza("unavailable", session.address, target))
    session.directed.clear()


def account_changed(service, account: Address, presence: Presence | None = None) -> None:
    """An endpoint of ``account`` came, went or changed, or a service user's presence changed.

    Shows the sessions that see the account what changed among its non-XMPP endpoints (SIP
    bindings, HTTP streams; each from its full JID) or its service presence (from the bare JID).
    Idempotent: nothing is sent when nothing changed (XMPP sessions broadcast their own presence).
    """
    shown = _memory(service).shown
    before, current = shown.get(account, {}), _foreign(service.core, account)
    if current:
        shown[account] = current
    else:
        shown.pop(account, None)
    changes = [_stanza_of(jid, p) for jid, p in current.items() if before.get(jid) != p]
    changes += [_stanza("unavailable", jid) for jid in before if jid not in current]
    if changes:
        watchers = _watchers(service, account)
        for stanza in changes:
            _send(watchers, stanza)


def contact_removed(service, account: Address, contact: Address, item: Item) -> None:
    """§2.5.2: ``contact`` leaves ``account``'s roster; subscriptions both ways are cancelled."""
    db = service.core.db
    state = _state(service, account, contact, item)
    store.remove(db, account.local, contact.jid)
    store.remove_request(db, account.local, contact.jid)
    sender = account.bare
    if contact.domain == service.domain:
        if state.sees_contact or state.pending_out:
            _receive(service, contact, sender, "unsubscribe", _stanza("unsubscribe", sender, contact))
        if state.shows_contact or state.pending_in:
            _receive(service, contact, sender, "unsubscribed",
                     _stanza("unsubscribed", sender, contact))
    if state.shows_contact:
        _withdraw(service, account, contact)


# -- broadcast and directed presence (§4) --
def _broadcast(service, session, element: ET.Element) -> None:
    available = element.get("type") is None
    initial = available and not session.available
    if available:
        session.presence = _parse(element)
        _memory(service).last[session.address] = (session, element)
    else:
        session.presence = UNAVAILABLE
        _forget(service, session)
    was_available, session.available = session.available, available
    service.core.presence.update(session)
    if not (available or was_available):
        return  # unavailable from a resource that never was available: nobody to tell
    account = session.account
    # What initial presence needs from the store, read in one transaction.
    state = store.initial_presence(service.core.db, account.local, account.jid,
                                   watchers=not contacts.shared_on(service.core)) if initial else None
    _send(_watchers(service, account, state) + _own(service, account), element)
    if not available:
        for target in session.directed:
            _deliver(service, target, _readdressed(element, session.address, target))
        session.directed.clear()
    if initial:
        last = _memory(service).last
        for other in _own(service, account):  # the account's other resources (§4.3.2)
            if other is not session:
                session.send(_readdressed(last[other.address][1], other.address, session.address))
        for contact in _watched(service, account, state):
            _show_contact(service, contact, [session])
        for _, text in state.requests:
            session.send(ET.fromstring(text))  # §3.1.3: still waiting for an answer
        service.core.router.deliver_stored(account)


def _directed(service, session, to: Address, element: ET.Element) -> None:
    """§4.6: presence to one JID; remembered so that ``unavailable`` reaches it later."""
    if to.domain != service.domain:
        raise StanzaError("remote-server-not-found", f"no route to {to.domain}")
    _deliver(service, to, element)
    if element.get("type") == "unavailable":
        session.directed.discard(to)
    elif session.available and to.bare not in _watcher_accounts(service, session.account):
        session.directed.add(to)


def _show_contact(service, contact: Address, sessions: list) -> None:
    """The current presence of ``contact`` to ``sessions`` (the probe answer, §4.3.2)."""
    for other in _own(service, contact):
        _send(sessions, _memory(service).last[other.address][1], other.address)
    for jid, presence in _foreign(service.core, contact).items():
        _send(sessions, _stanza_of(jid, presence))


def _withdraw(service, account: Address, contact: Address) -> None:
    """``contact`` no longer sees ``account``: unavailable from each of its resources."""
    targets = _own(service, contact)
    for session in _own(service, account):
        _send(targets, _stanza("unavailable", session.address))
    for jid in _foreign(service.core, account):
        _send(targets, _stanza("unavailable", jid))


# -- subscriptions (§3) --
def _subscription(service, session, kind: str, to: Address | None, element: ET.Element) -> None:
    account = session.account
    if to is None:
        raise StanzaError("bad-request", "a subscription stanza needs a 'to' address")
    contact = to.bare
    if contact == account:
        raise StanzaError("bad-request", "an account cannot subscribe to itself")
    if contact.domain != service.domain:
        raise StanzaError("remote-server-not-found", f"no route to {contact.domain}")
    routed = _readdressed(element, account, contact)  # §3.1.2: stamped with the bare JID
    if contacts.is_shared(service.core, account, contact):
        if kind == "subscribe":  # already "both": answered at once (§3.1.3)
            _deliver(service, account, _stanza("subscribed", contact, account))
            _show_contact(service, contact, _own(service, account))
        return
    outcome = outbound_transition(kind, _state(service, account, contact))
    _apply(service, account, contact, outcome)
    if outcome.forward:
        _receive(service, contact, account, kind, routed)
    _follow(service, account, contact, outcome)


def _receive(service, user: Address, contact: Address, kind: str, element: ET.Element) -> None:
    """``user`` (local) receives a subscription stanza from ``contact`` (Appendix A.3)."""
    core = service.core
    if user in contacts.service_users(core):  # service users approve everyone (and keep no state)
        if kind in ("subscribe", "unsubscribe"):
            answer = "subscribed" if kind == "subscribe" else "unsubscribed"
            _receive(service, contact, user, answer, _stanza(answer, user, contact))
        return
    if not accounts.exists(core.db, user.local):
        return  # §8.5.1: no such user, the stanza is silently ignored (no account harvesting)
    outcome = inbound(kind, _state(service, user, contact))
    _apply(service, user, contact, outcome, element)
    if outcome.forward:
        _deliver(service, user, element)
    if outcome.reply:
        _receive(service, contact, user, outcome.reply, _stanza(outcome.reply, user, contact))
    _follow(service, user, contact, outcome)


def _state(service, account: Address, contact: Address, item: Item | None = None) -> State:
    db = service.core.db
    item = item or store.get(db, account.local, contact.jid) or Item(contact.jid)
    return State(item.subscription, item.ask, store.has_request(db, account.local, contact.jid),
                 item.approved)


def _apply(service, account: Address, contact: Address, outcome, request: ET.Element | None = None):
    """Store a transition of ``account``'s side and push it."""
    db = service.core.db
    old, new = outcome.old, outcome.new
    if outcome.push:
        store.update(db, account.local, contact.jid, subscription=new.subscription,
                     ask=new.pending_out, approved=new.approved)
        roster.push(service, account, contact.jid)
    if new.pending_in and not old.pending_in:
        store.add_request(db, account.local, contact.jid, ET.tostring(request, encoding="unicode"))
    elif old.pending_in and not new.pending_in:
        store.remove_request(db, account.local, contact.jid)


def _follow(service, account: Address, contact: Address, outcome) -> None:
    """After the stanza went: show ``account``'s presence to a contact that now sees it, or
    withdraw it from one that no longer does."""
    old, new = outcome.old, outcome.new
    if new.shows_contact and not old.shows_contact:  # §3.1.5: the contact now sees the user
        targets = _own(service, contact)
        for session in _own(service, account):
            _send(targets, _memory(service).last[session.address][1], session.address)
        for jid, presence in _foreign(service.core, account).items():
            _send(targets, _stanza_of(jid, presence))
    elif old.shows_contact and not new.shows_contact:  # §3.2.2, §3.3.3
        _withdraw(service, account, contact)


# -- who sees whom --
def _watcher_accounts(service, account: Address, state: store.InitialPresence | None = None) -> set[Address]:
    """The local accounts that see ``account``'s presence (``state``: read already)."""
    core = service.core
    if contacts.shared_on(service.core):
        return {s.account for s in service.all_sessions()} - {account.bare}
    names = state.watchers if state else store.watchers(core.db, account.jid)
    return {core.address(name) for name in names}


def _watchers(service, account: Address, state: store.InitialPresence | None = None) -> list:
    """The available sessions that see ``account``'s presence."""
    return [s for a in _watcher_accounts(service, account, state) for s in _own(service, a)]


def _watched(service, account: Address, state: store.InitialPresence | None = None) -> list[Address]:
    """The local contacts whose presence ``account`` sees (subscription ``to``/``both``)."""
    return contacts.watched(service.core, account, (state.items, state.version) if state else None)


def _own(service, account: Address) -> list:
    """The available XMPP sessions of ``account``."""
    return [s for s in service.sessions(account) if s.available]


def _foreign(core, account: Address) -> dict[Address, Presence]:
    """What to show of ``account`` besides its XMPP sessions: each available non-XMPP endpoint by
    its full JID, or a service user's presence by its bare JID."""
    if account.bare in contacts.service_users(core):
        presence = core.presence.presence(account)
        return {account.bare: presence} if presence.available else {}
    return {e.address: e.presence for e in core.presence.endpoints(account)
            if e.protocol != "xmpp" and e.presence.available}


# -- stanzas --
def _address(text: str) -> Address:
    try:
        return Address.parse(text)
    except AddressError as exc:
        raise StanzaError("jid-malformed", str(exc)) from None


def _parse(element: ET.Element) -> Presence:
    """§4.7: show, status and priority of an available presence."""
    show = element.findtext(tag("show"))
    if show is not None and show.strip() not in SHOWS:
        raise StanzaError("bad-request", f"<show/> must be one of {', '.join(SHOWS)}")
    try:
        priority = int(element.findtext(tag("priority")) or 0)
    except ValueError:
        priority = 128
    if not -128 <= priority <= 127:
        raise StanzaError("bad-request", "<priority/> must be an integer from -128 to 127")
    return Presence(True, show.strip() if show else None, element.findtext(tag("status")), priority)


def _stanza(kind: str | None, sender: Address, to: Address | None = None) -> ET.Element:
    attrs = {"from": str(sender)}
    if kind:
        attrs["type"] = kind
    if to is not None:
        attrs["to"] = str(to)
    return ET.Element(tag("presence"), attrs)


def _stanza_of(sender: Address, presence: Presence) -> ET.Element:
    """A presence stanza saying ``presence`` (§4.7)."""
    element = _stanza(None if presence.available else "unavailable", sender)
    if presence.show:
        ET.SubElement(element, tag("show")).text = presence.show
    if presence.status:
        ET.SubElement(element, tag("status")).text = presence.status
    if presence.priority:
        ET.SubElement(element, tag("priority")).text = str(presence.priority)
    return element


def _readdressed(element: ET.Element, sender: Address, to: Address) -> ET.Element:
    copy = ET.Element(element.tag, dict(element.attrib))
    copy.text = element.text
    copy.extend(element)
    copy.set("from", str(sender))
    copy.set("to", str(to))
    return copy


def _send(sessions: list, element: ET.Element, sender: Address | None = None) -> None:
    """``element`` to each session, addressed to it (and from ``sender`` when given)."""
    for session in sessions:
        session.send(_readdressed(element, sender or Address.parse(element.get("from")),
                                  session.address))


def _deliver(service, to: Address, element: ET.Element) -> None:
    """A presence stanza to a local JID (RFC 6121 §8.5): the named resource, or every available
    resource of the account; nothing for a JID with no such session (§8.5.1, §8.5.3.2.2)."""
    if to.resource:
        session = service.session(to)
        if session is not None:
            session.send(_readdressed(element, Address.parse(element.get("from")), to))
        return
    for session in _own(service, to):
        session.send(_readdressed(element, Address.parse(element.get("from")), to))


def _forget(service, session) -> None:
    last = _memory(service).last
    if last.get(session.address, (None,))[0] is session:
        del last[session.address]
