"""Presence and subscriptions with contacts of other domains (RFC 6121 §3, §4 over RFC 6120
federation; issue 13). No I/O here: stanzas go out through ``service.federation.send``.

A remote contact lives in the local account's roster like a local one (``roster`` items with the
remote JID). What differs is only where the stanzas go:

- a remote watcher (an item with subscription ``from``/``both``) is a :class:`RemoteWatcher`: it
  takes presence stanzas like a local session (``send``, ``address``) and writes them to its
  domain, so the broadcast of ``visibility.watchers`` reaches it: XMPP sessions' presence,
  unavailable at logout, and a phone's registration shown as a resource of the account;
- at initial presence the server probes the remote contacts the account sees (``to``/``both``,
  §4.3.1), and answers their probes for the account (§4.3.2: ``probe_answer`` in ``s2s_routing``);
- subscription stanzas to a remote contact change the local side as for a local contact and are
  sent over federation (§3.1.2); those from a remote contact go through the same state machine
  (``subscription_handling.received``).

When federation is off (``service.federation`` is None) a remote contact gets
``remote-server-not-found`` as before. A contact at an external component's domain (XEP-0114) is
remote too: ``service.link_for`` sends its stanzas to the component instead.
"""
from __future__ import annotations

import logging
import xml.etree.ElementTree as ET

from convergence import Address, AddressError, RoutingError
from convergence.store import roster as store

from .stanzas import StanzaError, tag

log = logging.getLogger(__name__)

SHOWN_TO = ("from", "both")  # the contact sees the account's presence
SEEN = ("to", "both")  # the account sees the contact's presence


def remote(service, address: Address) -> bool:
    return address.domain != service.domain


def send(service, element: ET.Element) -> bool:
    """``element`` (``jabber:client`` names, ``to`` of another domain) over federation; False when
    it cannot be queued. Without federation: StanzaError ``remote-server-not-found``."""
    to = Address.parse(element.get("to"))
    federation = service.link_for(to.domain)  # or the component serving it (XEP-0114)
    if federation is None:
        raise StanzaError("remote-server-not-found", f"no route to {to.domain}")
    try:
        federation.send(to.domain, element)
        return True
    except RoutingError as exc:
        log.info("s2s: presence to %s not sent: %s", to, exc)
        return False


class RemoteWatcher:
    """A contact of another domain that sees an account's presence, as the broadcast sees a
    session: ``address`` and ``send``."""

    __slots__ = ("service", "address")

    def __init__(self, service, address: Address):
        self.service = service
        self.address = address

    def send(self, element: ET.Element) -> bool:
        return self.service.link_for(self.address.domain) is not None and send(self.service, element)


def _items(service, account: Address, kinds) -> list[Address]:
    if (service.federation is None and service.components is None) or account.local is None:
        return []
    try:
        items, _ = store.items(service.core.db, account.local)
    except store.NoSuchAccount:
        return []
    found = []
    for item in items:
        if item.subscription in kinds:
            try:
                contact = Address.from_jid(item.jid)
            except AddressError:
                continue
            if remote(service, contact) and service.link_for(contact.domain) is not None:
                found.append(contact)  # reachable: over federation, or a component (XEP-0114)
    return found


def watchers(service, account: Address) -> list[RemoteWatcher]:
    """The remote contacts that see ``account``'s presence (``from``/``both``)."""
    return [RemoteWatcher(service, contact) for contact in _items(service, account, SHOWN_TO)]


def probe(service, account: Address) -> None:
    """§4.3.1: at the account's initial presence, ask each remote contact it sees."""
    for contact in _items(service, account, SEEN):
        send(service, ET.Element(tag("presence"), {"type": "probe", "from": account.bare.jid,
                                                   "to": contact.jid}))


def _subscription(service, account: Address, contact: Address) -> str | None:
    try:
        item = store.get(service.core.db, account.local, contact.bare.jid)
    except store.NoSuchAccount:
        return None
    return item.subscription if item is not None else None


def shows_to(service, account: Address, contact: Address) -> bool:
    """Whether ``contact`` (remote) may see ``account``'s presence (§4.3.2)."""
    return _subscription(service, account, contact) in SHOWN_TO


def sees(service, account: Address, contact: Address) -> bool:
    """Whether ``account`` accepts ``contact``'s presence broadcast (§4.2.3: to/both)."""
    return _subscription(service, account, contact) in SEEN
