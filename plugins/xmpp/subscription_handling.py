"""Presence subscriptions (RFC 6121 §3) applied to both sides of a local relationship.

The state machine is ``subscriptions.py`` (sans-IO, Appendix A); here its decisions take effect:
the new state is stored and pushed to the interested resources (``roster_push``), the stanza is
routed to the contact (stamped with the sender's bare JID, §3.1.2), the automatic ``subscribed``
is sent when the contact pre-approved or already shares its presence (§3.4, §3.1.3), a request to
an offline contact is kept for its next initial presence (§3.1.3), and the user's presence is
shown to a contact that starts seeing it (§3.1.5) or withdrawn from one that stops (§3.2.2,
§3.3.3). ``contact_removed`` cancels both directions when an item leaves the roster (§2.5.2).

The shared roster makes every local account and service user a ``both`` contact of every account:
subscription stanzas between them are answered (``subscribe`` → ``subscribed``) but change nothing.
Service users approve every request and keep no state; a stanza to a local JID with no account is
silently ignored (§8.5.1). Contacts on other domains (federation, ``s2s_presence``) go through the
same state machine: the stanzas to them leave over s2s (``visibility.deliver``), theirs come in
through ``received``; without federation they get ``remote-server-not-found``. A contact at an
external component's domain (XEP-0114) is such a contact, reached through the component.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET

from convergence import Address, contacts
from convergence.store import accounts
from convergence.store import roster as store
from convergence.store.roster import Item

from . import cluster_relay, s2s_presence
from .roster_push import push
from .stanzas import StanzaError
from .subscriptions import State, inbound, outbound
from .visibility import deliver, own, readdressed, seen_by, show, stanza, withdraw


def subscription(service, session, kind: str, to: Address | None, element: ET.Element) -> None:
    """A subscription stanza (``subscribe``, ``subscribed``, ``unsubscribe``, ``unsubscribed``)
    from a bound session (§3.1.1, §3.1.5, §3.2.1, §3.3.1)."""
    account = session.account
    if to is None:
        raise StanzaError("bad-request", "a subscription stanza needs a 'to' address")
    contact = to.bare
    if contact == account:
        raise StanzaError("bad-request", "an account cannot subscribe to itself")
    far = s2s_presence.remote(service, contact)
    if far and service.link_for(contact.domain) is None:  # federation, or a component (XEP-0114)
        raise StanzaError("remote-server-not-found", f"no route to {contact.domain}")
    routed = readdressed(element, account, contact)  # §3.1.2: stamped with the bare JID
    if not far and contacts.is_shared(service.core, account, contact):
        if kind == "subscribe":  # already "both": answered at once (§3.1.3)
            deliver(service, account, stanza("subscribed", contact, account))
            show(service, contact, own(service, account))
        return
    outcome = outbound(kind, _state(service, account, contact))
    _apply(service, account, contact, outcome)
    if outcome.forward and not service.blocking.hides(account, contact):  # XEP-0191 §3.3
        _receive(service, contact, account, kind, routed)
    _follow(service, account, contact, outcome)


def requested(service, account: Address, contact: Address) -> None:
    """``account`` asks to see ``contact``'s presence from a protocol that keeps no roster (a SIP
    SUBSCRIBE answered ``pending``, RFC 8048 §4; the ``on_subscription_request`` hook): handled as
    the ``subscribe`` one of ``account``'s XMPP clients would send (§3.1.2), so ``contact`` is
    asked now or at its next initial presence (§3.1.3) and ``account``'s roster shows it pending."""
    if account == contact or contacts.is_shared(service.core, account, contact):
        return
    outcome = outbound("subscribe", _state(service, account, contact))
    _apply(service, account, contact, outcome)
    if outcome.forward:
        _receive(service, contact, account, "subscribe", stanza("subscribe", account, contact))
    _follow(service, account, contact, outcome)


def received(service, user: Address, contact: Address, kind: str, element: ET.Element) -> None:
    """A subscription stanza from ``contact`` of another domain to the local ``user`` (over
    federation, already checked to come from that domain)."""
    _receive(service, user.bare, contact.bare, kind, readdressed(element, contact.bare, user.bare))


def contact_removed(service, account: Address, contact: Address, item: Item) -> None:
    """§2.5.2: ``contact`` leaves ``account``'s roster; subscriptions both ways are cancelled."""
    db = service.core.db
    state = _state(service, account, contact, item)
    store.remove(db, account.local, contact.jid)
    store.remove_request(db, account.local, contact.jid)
    sender = account.bare
    if state.sees_contact or state.pending_out:  # (a contact of another domain: over federation)
        _receive(service, contact, sender, "unsubscribe", stanza("unsubscribe", sender, contact))
    if state.shows_contact or state.pending_in:
        _receive(service, contact, sender, "unsubscribed", stanza("unsubscribed", sender, contact))
    if state.shows_contact:
        withdraw(service, account, contact)


def _receive(service, user: Address, contact: Address, kind: str, element: ET.Element) -> None:
    """``user`` (local) receives a subscription stanza from ``contact`` (Appendix A.3); a
    ``user`` of another domain gets it over federation (its server applies it)."""
    core = service.core
    if s2s_presence.remote(service, user):
        if service.link_for(user.domain) is not None:
            deliver(service, user, element)
        return
    if user in contacts.service_users(core):  # service users approve everyone (and keep no state)
        if kind in ("subscribe", "unsubscribe"):
            answer = "subscribed" if kind == "subscribe" else "unsubscribed"
            _receive(service, contact, user, answer, stanza(answer, user, contact))
        return
    if not accounts.exists(core.db, user.local):
        return  # §8.5.1: no such user, the stanza is silently ignored (no account harvesting)
    outcome = inbound(kind, _state(service, user, contact))
    _apply(service, user, contact, outcome, element)
    if outcome.forward:
        deliver(service, user, element)
    if outcome.reply:
        _receive(service, contact, user, outcome.reply, stanza(outcome.reply, user, contact))
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
        push(service, account, contact.jid)
    if new.pending_in and not old.pending_in:
        store.add_request(db, account.local, contact.jid, ET.tostring(request, encoding="unicode"))
    elif old.pending_in and not new.pending_in:
        store.remove_request(db, account.local, contact.jid)


def _follow(service, account: Address, contact: Address, outcome) -> None:
    """After the stanza went: show ``account``'s presence to a contact that now sees it, or
    withdraw it from one that no longer does."""
    old, new = outcome.old, outcome.new
    if new.shows_contact and not old.shows_contact:  # §3.1.5: the contact now sees the user
        show(service, account, seen_by(service, contact))
        service.iq.emit("subscribed", service, account, own(service, contact), contact)  # PEP's last items
        cluster_relay.subscribed(service, account, contact)  # and on other nodes
    elif old.shows_contact and not new.shows_contact:  # §3.2.2, §3.3.3
        withdraw(service, account, contact)
