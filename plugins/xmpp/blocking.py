"""Blocking Command (XEP-0191 v1.3, ``urn:xmpp:blocking``): an account's list of JIDs it will not
hear from nor talk to, enforced for every protocol.

- **The protocol** (§3.1–§3.4): ``<blocklist/>`` get (the session becomes *interested*: it gets the
  pushes), ``<block/>`` set with at least one item (else ``bad-request``), ``<unblock/>`` set with
  items, or empty to unblock everything. Each change is pushed as an IQ set to every interested
  session of the account (§3.3, §3.4). An item whose ``jid`` is missing or not a JID is
  ``jid-malformed``; more items than ``[xmpp] blocklist_max_items`` in one request, or a list that
  would grow beyond it, is ``not-acceptable``. Unblocking a JID that is not blocked is no error
  (the XEP defines none).
- **Matching** (§3.6, the XEP-0016 order): an item ``user@domain/resource`` matches only that
  JID; ``user@domain`` any of its resources; ``domain/resource`` only that JID; ``domain`` the
  domain and every JID of it (``matches``). One's own account is never blocked (§5: "MUST NOT
  block communications from one of a user's resources to another").
- **Enforcement** (§3.3): messages, from any protocol, go through the core's ``screen_message``
  hook (``BlockLists.screen``): from a blocked sender, an XMPP sender gets
  ``service-unavailable`` (the blocking user looks offline) and a SIP or HTTP sender
  ``forbidden`` (SIP 403, HTTP 403); to a JID the sender blocks, ``not-acceptable`` with
  ``<blocked xmlns='urn:xmpp:blocking:errors'/>`` (SIP 406, HTTP 400). IQ get/set from a blocked
  JID: ``service-unavailable``, other IQ types dropped; an IQ or addressed presence to a blocked
  JID: ``not-acceptable`` + ``<blocked/>``. Presence between the two is never delivered, with no
  error (``hides``, used by ``visibility``). On block the JIDs that saw the user's presence get
  ``unavailable`` from each of its resources; on unblock its current presence (§3.3, §3.4). The
  user's sessions likewise see blocked local contacts go unavailable, and come back on unblock.
  Other protocols' watchers follow through the core's ``screen_presence`` (answered here) and
  ``on_screen_changed`` (fired at each change): a SIP SUBSCRIBE across a block gets 403, an
  HTTP event stream shows the contact unavailable. Messages stored offline before a block are
  dropped at delivery (the router screens the backlog again).
- **Clusters** (docs/cluster.md): a change made through one node is cast to every other
  (``xmpp.blocking``, after the write): each replaces its copy of the list at once, pushes the
  change to the account's interested sessions it has, and withdraws or shows presence between
  its own sessions as above and fires ``on_screen_changed``; the node that made the change also
  tells other domains. Casts missed while Redis was away (from this node, or from the node that
  made a change) are made good by reading every cached list again once it is back (``reread``,
  the ``on_cluster_resync`` hook), with the same effects for what changed.

State, per core, on the c2s service (``service.blocking``): each account's list as a frozenset of
addresses, read from SQL (``blocking_store``) the first time it is needed and replaced on every
change, so screening a message costs two dictionary lookups when neither side blocks anything
(keyed by localpart: every list is of a local account);
and the interested sessions of each account. No I/O here besides the store.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET

from convergence import Address, AddressError, RoutingError

from . import blocking_store as store, cluster_relay
from .stanzas import StanzaError, iq_result, tag
from .visibility import own, show, unavailable_to, watched, watcher_accounts, watchers

NS = "urn:xmpp:blocking"
ERRORS_NS = "urn:xmpp:blocking:errors"
BLOCKLIST, BLOCK, UNBLOCK, ITEM = (tag(n, NS) for n in ("blocklist", "block", "unblock", "item"))
EMPTY: frozenset = frozenset()
REREAD_BATCH = 500  # cached lists read again in one query (``BlockLists.reread``)


# ---- sans-IO: items and matching ----
def parse_items(element: ET.Element, max_items: int) -> list[Address]:
    """The JIDs of the ``<item/>`` children of a ``<block/>`` or ``<unblock/>`` (§3.3), in order,
    without repeats. ``jid-malformed`` for a missing or invalid ``jid``; ``not-acceptable`` for
    more than ``max_items`` items (counted before any is parsed: linear in the stanza)."""
    items = element.findall(ITEM)
    if len(items) > max_items:
        raise StanzaError("not-acceptable", f"at most {max_items} JIDs may be blocked")
    jids: dict[Address, None] = {}
    for item in items:
        text = item.get("jid")
        if not text:
            raise StanzaError("jid-malformed", "an item needs a jid")
        try:
            jid = Address.from_jid(text)
        except AddressError as exc:
            raise StanzaError("jid-malformed", str(exc)) from None
        if len(jid.jid.encode()) > store.MAX_JID_BYTES:
            raise StanzaError("not-acceptable", f"a blocked JID is at most {store.MAX_JID_BYTES} bytes")
        jids[jid] = None
    return list(jids)


def matches(items: frozenset, jid: Address) -> bool:
    """Whether ``items`` blocks ``jid`` (§3.6): the JID itself, its bare JID, or its domain."""
    if not items:
        return False
    return jid in items or jid.bare in items or (jid.local is not None and Address(None, jid.domain) in items)


def blocked_error() -> StanzaError:
    """§3.3: what the user gets for a stanza to a JID it blocks."""
    return StanzaError("not-acceptable", "you have blocked this JID",
                       app=ET.Element(tag("blocked", ERRORS_NS)))


class Blocked(RoutingError):
    """A message to a JID its sender blocks: ``not-acceptable`` (§3.3); XMPP adds ``app``."""

    def __init__(self, recipient: Address):
        super().__init__("not-acceptable", f"you have blocked {recipient.bare}")

    @property
    def app(self) -> ET.Element:
        return ET.Element(tag("blocked", ERRORS_NS))


def items_element(name: str, jids) -> ET.Element:
    element = ET.Element(name)
    for jid in jids:
        ET.SubElement(element, ITEM, jid=jid.jid)
    return element


# ---- per-core state ----
class BlockLists:
    """The block lists of one c2s service's accounts (cached) and who asked for them."""

    def __init__(self, service, max_items: int):
        self.service = service
        self.max_items = max_items
        self.domain = service.domain
        self._lists: dict[Address, frozenset] = {}  # account → blocked JIDs, as in SQL
        self._order: dict[Address, list[Address]] = {}  # account → the same, oldest first
        self._interested: dict[Address, set] = {}  # account → sessions that got the blocklist

    def of(self, account: Address) -> frozenset:
        """What ``account`` (a local address) blocks; read from SQL once, then cached."""
        items = self._lists.get(account.local)
        return self._load(account.local) if items is None else items

    def _load(self, local: str) -> frozenset:
        return self._parsed(local, store.load(self.service.core.db, local))

    def _parsed(self, local: str, texts: list[str]) -> frozenset:
        jids = []
        for text in texts:
            try:
                jids.append(Address.from_jid(text))
            except AddressError:  # stored under other normalization rules: not ours to match
                continue
        return self._set(local, jids)

    def _set(self, local: str, jids: list[Address]) -> frozenset:
        self._order[local] = jids
        items = self._lists[local] = frozenset(jids) if jids else EMPTY
        return items

    def forget(self, account: Address) -> None:
        """The account is gone (or changed elsewhere): read it again when next needed."""
        self._lists.pop(account.local, None)
        self._order.pop(account.local, None)

    def _local(self, jid: Address) -> bool:
        return jid.local is not None and jid.domain == self.domain

    def blocks(self, account: Address, jid: Address) -> bool:
        """Whether the local ``account`` blocks ``jid`` (never one of its own JIDs)."""
        return matches(self.of(account), jid) and jid.bare != account.bare

    # ---- enforcement ----
    def screen(self, message, source: str) -> None:
        """The core's ``screen_message``: refuse a message between an account and a JID it
        blocks (RoutingError), whichever protocol it came by. On the hot path: the lists are
        cached by localpart (a string's hash is cached), and an empty list ends the check."""
        sender, recipient = message.sender, message.recipient
        lists, domain = self._lists, self.domain
        if recipient.local is not None and recipient.domain == domain:
            items = lists.get(recipient.local)
            if items is None:
                items = self._load(recipient.local)
            if items and matches(items, sender) and sender.bare != recipient.bare:
                # §3.3: XMPP senders see the user offline; SIP and HTTP senders a plain refusal
                raise RoutingError("service-unavailable" if source == "xmpp" else "forbidden",
                                   f"{recipient.bare} does not accept messages from you")
        if sender.local is not None and sender.domain == domain:
            items = lists.get(sender.local)
            if items is None:
                items = self._load(sender.local)
            if items and matches(items, recipient) and sender.bare != recipient.bare:
                raise Blocked(recipient)

    def refusal(self, sender: Address, to: Address) -> StanzaError | None:
        """The error for an IQ from ``sender`` to the account JID ``to`` across a block, or None."""
        if self._local(to) and self.blocks(to, sender):
            return StanzaError("service-unavailable")
        if self._local(sender) and self.blocks(sender, to):
            return blocked_error()
        return None

    def hides(self, sender: Address, target: Address) -> bool:
        """Whether presence from ``sender`` must not reach ``target`` (either blocks the other)."""
        return (self._local(target) and self.blocks(target, sender)) or \
            (self._local(sender) and self.blocks(sender, target))

    # ---- the protocol ----
    def interested(self, session) -> None:
        self._interested.setdefault(session.account, set()).add(session)

    def is_interested(self, session) -> bool:
        """Whether ``session`` asked for the list, and so gets its pushes (§3.2)."""
        return session in self._interested.get(session.account, ())

    def closed(self, session) -> None:
        account = getattr(session, "account", None)
        sessions = self._interested.get(account)
        if sessions is not None:
            sessions.discard(session)
            if not sessions:
                del self._interested[account]

    def resumed(self, old, new) -> None:
        """A new stream took the session ``old`` over (XEP-0198 §5): ``new`` gets the pushes."""
        sessions = self._interested.get(new.account)
        if sessions is not None and old in sessions:
            sessions.discard(old)
            sessions.add(new)

    def listed(self, account: Address) -> list[Address]:
        self.of(account)
        return list(self._order[account.local])

    def block(self, account: Address, jids: list[Address]) -> None:
        """§3.3: store, tell the blocked JIDs that saw the user it is gone, push; and the same
        on the other cluster nodes, for their sessions (``received``)."""
        jids = [j for j in jids if j.bare != account]  # never one's own resources (§5)
        if not jids:
            raise StanzaError("not-acceptable", "an account cannot block itself")
        before = self.listed(account)  # read before the store has the new ones
        if not store.add(self.service.core.db, account.local, [j.jid for j in jids], self.max_items):
            raise StanzaError("not-acceptable", f"at most {self.max_items} JIDs may be blocked")
        known = set(before)
        new = [j for j in jids if j not in known]
        self._set(account.local, before + new)  # in force at once: screening never waits
        _withdraw(self.service, account, frozenset(new), federation=True)
        self._push(account, items_element(BLOCK, jids))
        self._tell(account, "block", jids, new)
        self._changed(account)

    def unblock(self, account: Address, jids: list[Address] | None) -> None:
        """§3.4: remove (all when ``jids`` is None), push, show the user's presence again; and
        the same on the other cluster nodes (``received``)."""
        before, named = self.listed(account), set(jids or ())  # read before the store changes
        store.remove(self.service.core.db, account.local, None if jids is None else [j.jid for j in jids])
        gone = before if jids is None else [j for j in before if j in named]
        self._set(account.local, [] if jids is None else [j for j in before if j not in named])
        self._push(account, items_element(UNBLOCK, [] if jids is None else jids))
        _show(self.service, account, frozenset(gone), federation=True)
        self._tell(account, "unblock", [] if jids is None else jids, gone)
        self._changed(account)

    # ---- in a cluster ----
    def _tell(self, account: Address, change: str, items: list[Address],
              changed: list[Address]) -> None:
        """The other nodes update their copy of the list, push ``items`` to their interested
        sessions and show or withdraw presence for ``changed`` (the JIDs newly blocked, or no
        longer blocked) between their own sessions: one cast to every node (``cluster_relay``)."""
        cluster_relay.everywhere(self.service, cluster_relay.BLOCKING, {
            "account": account.local, "change": change,
            "items": [j.jid for j in items], "changed": [j.jid for j in changed]})

    def _changed(self, account: Address) -> None:
        """What ``screen_presence`` answers for ``account`` changed: the protocols that keep
        watchers of their own (SIP subscriptions) look again (``on_screen_changed``)."""
        core = self.service.core
        core.hook.on_screen_changed(core=core, account=account)

    def received(self, data: dict) -> None:
        """Another node changed an account's list (``_tell``): the same here, for the sessions
        this node has. The database has the new list already (the cast follows the write)."""
        local, change = data["account"], data["change"]
        if not isinstance(local, str) or change not in ("block", "unblock"):
            raise ValueError("not a block list change")
        account = self.service.core.address(local)
        items = [Address.from_jid(j) for j in data["items"]]
        changed = frozenset(Address.from_jid(j) for j in data["changed"])
        self._load(local)  # the list as it is now, in force at once
        if change == "block":
            self._push(account, items_element(BLOCK, items))
            _withdraw(self.service, account, changed, federation=False)
        else:
            self._push(account, items_element(UNBLOCK, items))
            _show(self.service, account, changed, federation=False)
        self._changed(account)

    def reread(self) -> None:
        """Casts may have been missed (``on_cluster_resync``: Redis was away from this node or
        from the one that made a change): read every cached list again and, for each that
        changed, do what ``received`` does for a cast: push the JIDs newly blocked and those no
        longer blocked to the interested sessions here, withdraw or show presence between this
        node's sessions (§3.3, §3.4), fire ``on_screen_changed``. One query per ``REREAD_BATCH`` lists."""
        cached = list(self._lists)
        for start in range(0, len(cached), REREAD_BATCH):
            batch = {local: self._order.get(local) for local in cached[start:start + REREAD_BATCH]}
            lists = store.load_many(self.service.core.db, list(batch))
            for local, before in batch.items():
                if self._order.get(local) is before:  # else set meanwhile, from a fresher read
                    self._reread(local, set(before or ()), lists.get(local, []))

    def _reread(self, local: str, before: set, texts: list[str]) -> None:
        """One list read again: what changed is pushed and shown as a cast's change is."""
        after = self._parsed(local, texts)
        blocked, unblocked = after - before, before - after
        if not blocked and not unblocked:
            return
        account = self.service.core.address(local)
        if blocked:
            self._push(account, items_element(BLOCK, sorted(blocked, key=str)))
            _withdraw(self.service, account, frozenset(blocked), federation=False)
        if unblocked:
            self._push(account, items_element(UNBLOCK, sorted(unblocked, key=str)))
            _show(self.service, account, frozenset(unblocked), federation=False)
        self._changed(account)

    def _push(self, account: Address, payload: ET.Element) -> None:
        for session in self._interested.get(account, ()):
            iq = ET.Element(tag("iq"), {"type": "set", "id": f"block-{id(payload):x}-{id(session):x}",
                                        "to": session.address.jid})
            iq.append(payload)
            session.send(iq)


def _seen(service, account: Address, jids: frozenset, federation: bool) -> list:
    """The sessions here that see ``account``'s presence and are among ``jids`` (with
    ``federation``, also its contacts of other domains: only the node that made the change
    tells them)."""
    if federation:
        targets = watchers(service, account)
    else:
        targets = [s for a in watcher_accounts(service, account) for s in own(service, a)]
    return [w for w in targets if matches(jids, w.address)]


def _withdraw(service, account: Address, jids: frozenset, federation: bool) -> None:
    """§3.3: ``unavailable`` from each of the account's resources to the newly blocked JIDs that
    see its presence; and the user's sessions see the blocked local contacts go unavailable.
    This node's sessions only: each node does the same for its own (``received``)."""
    if not jids:
        return
    unavailable_to(service, account, _seen(service, account, jids, federation), screen=False)
    mine = own(service, account)
    for contact in watched(service, account):
        if matches(jids, contact):
            unavailable_to(service, contact, mine, screen=False)


def _show(service, account: Address, jids: frozenset, federation: bool) -> None:
    """§3.4: the unblocked JIDs that see the user get its presence, and the user's sessions
    see the unblocked contacts again (this node's sessions, as ``_withdraw``)."""
    if not jids:
        return
    show(service, account, _seen(service, account, jids, federation))
    mine = own(service, account)
    for contact in watched(service, account):
        if matches(jids, contact):
            show(service, contact, mine)


# ---- IQ handlers ----
def register_iq(router) -> None:
    router.register(BLOCKLIST, blocklist_iq, features=(NS,))
    router.register(BLOCK, block_iq)
    router.register(UNBLOCK, unblock_iq)
    router.on("closed", lambda service, session: service.blocking.closed(session))
    router.on("resumed", lambda service, old, new: service.blocking.resumed(old, new))


def blocklist_iq(service, session, iq: ET.Element) -> ET.Element:
    """§3.2: the list; the session now gets the pushes."""
    if iq.get("type") != "get":
        raise StanzaError("bad-request", "the blocklist is read with an IQ get")
    lists = service.blocking
    lists.interested(session)
    return iq_result(iq, items_element(BLOCKLIST, lists.listed(session.account)))


def block_iq(service, session, iq: ET.Element) -> ET.Element:
    if iq.get("type") != "set":
        raise StanzaError("bad-request", "block with an IQ set")
    jids = parse_items(iq[0], service.blocking.max_items)
    if not jids:
        raise StanzaError("bad-request", "name at least one JID to block")  # §3.3
    service.blocking.block(session.account, jids)
    return iq_result(iq)


def unblock_iq(service, session, iq: ET.Element) -> ET.Element:
    if iq.get("type") != "set":
        raise StanzaError("bad-request", "unblock with an IQ set")
    jids = parse_items(iq[0], service.blocking.max_items)
    service.blocking.unblock(session.account, jids or None)  # §3.4: empty is everything
    return iq_result(iq)
