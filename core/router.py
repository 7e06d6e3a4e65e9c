"""The router: resolve a message's recipient through ``resolve_recipient`` and deliver it.

This module is also the builtin plugin ``router``: its ``trylast`` ``resolve_recipient`` answers
for local accounts, so any other plugin can claim an address first. A local account's message
goes (RFC 6121 §8.5) to the endpoint named by a full address, else to every available endpoint
with non-negative priority (§8.5.2.1.1 allows "all non-negative resources": that is how one
account reaches XMPP, SIP and HTTP at once), else to the offline store (XEP-0160) if it is worth
storing (``storable``); ``error`` messages, and ``headline`` messages for a resource that is gone,
are delivered only to a live named resource and otherwise silently ignored.

Nothing acknowledged is lost (issue 11): a stored message is deleted only once a live endpoint
handed it to its transport (``Endpoint.flush``), and ``deliver_stored`` waits for that before it
hands on the next, so a backlog of any size reaches a session with a bounded outbound queue. An
endpoint that took a message and then lost its connection before writing it gives it back with
``Router.returned``, which stores it.

Size (issue "bad input": refused at entry, never truncated): a protocol declares the largest body
plus subject it carries with ``Router.limit``; a message bigger than the smallest limit on its path
— the endpoints it would reach, or every limited protocol when it is stored for later — is refused
with ``policy-violation`` before any endpoint gets it.
"""
from __future__ import annotations

import logging
from collections import Counter
from time import perf_counter

import gevent
import gevent.event

from .addresses import Address
from .hookspecs import hookimpl
from .message import Message, RoutingError
from .metrics import ROUTING_BUCKETS, Histogram

#: one message in TIMED + 1 has its routing time measured (``Router.latency``): reading the
#: clock twice for every message cost more than the counting (issue 17: at most 3 % of msgs/s)
TIMED = 15  # a mask: every 16th message
from .store import accounts, offline

log = logging.getLogger(__name__)

#: the arguments of the hooks ``route`` calls itself (``PluginManager.direct``), in order
RESOLVE_ARGUMENTS, SCREEN_ARGUMENTS, MESSAGE_ARGUMENTS = ("core", "address"), ("core", "message", "source"), \
    ("core", "message")
DELIVERED = "delivered"
STORED = "stored"
DISCARDED = "discarded"  # silently ignored (RFC 6121 §8.5): errors, headlines, nothing to store
REFUSED = "refused"  # a RoutingError
#: the destination of a message that went nowhere (refused, discarded), and of one stored
NOWHERE, STORE = "none", "store"


def live_endpoints(core, account: Address, local: bool = False) -> list:
    """The endpoints a bare-address message goes to: available, non-negative priority; with
    ``local``, only this process's own (not another cluster node's, core/cluster.py)."""
    endpoints, nodes = [], set()
    for e in core.presence.endpoints(account):
        if not e.presence.available or e.presence.priority < 0:
            continue
        if getattr(e, "remote", False):  # one hand-off per node: it delivers to all of its own
            if local or e.node in nodes:
                continue
            nodes.add(e.node)
        endpoints.append(e)
    return endpoints


def deliver_to(endpoints, message: Message) -> list:
    """Hand ``message`` to each endpoint; return those that took it."""
    took = []
    for endpoint in endpoints:
        try:
            endpoint.deliver(message)
            took.append(endpoint)
        except RoutingError as exc:
            log.info("endpoint %s refused %s: %s", endpoint.address, message.id, exc)
    return took


def flushed(endpoint, timeout: float) -> bool:
    """Whether what ``endpoint`` took has been handed to its transport (``Endpoint.flush``;
    an endpoint without ``flush`` hands a message on within ``deliver``)."""
    flush = getattr(endpoint, "flush", None)
    return True if flush is None else flush(timeout)


def storable(message: Message) -> bool:
    """Whether an undeliverable message goes to the offline store (XEP-0160, RFC 6121 §8.5.2.2.1).

    Only ``normal`` and ``chat`` messages, and only with a body or subject: chat states and
    receipts alone are not worth keeping. A protocol may attach a ``store_hint`` attribute
    (XEP-0334 ``<store/>`` True, ``<no-store/>`` False) that overrides the body rule."""
    if message.type not in ("normal", "chat"):
        return False
    hint = getattr(message, "store_hint", None)
    return bool(message.body or message.subject) if hint is None else hint


class LocalAccountRoute:
    """Deliver to the live endpoints of a local account, or store the message for later."""

    def __init__(self, core, account: Address, local: bool = False):
        self.core = core
        self.account = account
        self.local = local  # this process's endpoints only: a message another cluster node handed on
        self.protocol = NOWHERE  # where the message went (metrics): see ``deliver``

    def deliver(self, message: Message) -> str:
        named = self.core.presence.endpoint(message.recipient) if message.recipient.resource else None
        if named is not None and self.local and getattr(named, "remote", False):
            named = None  # not ours (any more): as if for the bare address (RFC 6121 §8.5.3.2.1)
        if message.type == "groupchat" and not named:
            raise RoutingError("service-unavailable", "groupchat messages need a room")  # §8.5.2.1.1
        if not named and (message.type == "error" or
                          message.type == "headline" and message.recipient.resource):
            return DISCARDED  # §8.5.2.1.1, §8.5.3.2.1: silently ignored unless for a live resource
        targets = [named] if named else live_endpoints(self.core, self.account, self.local)
        router = self.core.router
        # another node's endpoint carries what its own protocol carries (``origin_protocol``)
        router.check_size(message, {getattr(e, "origin_protocol", e.protocol) for e in targets}
                          if targets else router.limits)
        if took := deliver_to(targets, message):
            # the first endpoint's protocol; a message fanned out to several protocols counts
            # once, under the protocol of the endpoint that came first
            self.protocol = took[0].protocol
            return DELIVERED
        if not storable(message):
            return DISCARDED
        cluster = self.core.cluster
        if cluster is not None and not self.local and not cluster.reachable:
            # Redis is away: whether the account has an endpoint on another node is unknown, so
            # the message is refused for now rather than stored (docs/cluster.md, "Redis unreachable")
            raise RoutingError("service-unavailable", f"the cluster directory (Redis) is unreachable: "
                               f"{self.account} is not on this node", retry_after=cluster.retry_after)
        limit = self.core.config["server"]["max_offline_messages"]
        router.wait_for_given_back(self.account)  # after what a closing endpoint gives back
        try:
            kept = offline.store(self.core.db, self.account.local, message, limit)
        except accounts.NoSuchAccount:  # deleted since it was resolved
            raise RoutingError("item-not-found", f"{self.account} does not exist") from None
        if not kept:
            raise RoutingError("resource-constraint", f"{self.account} has {limit} messages waiting")
        self.protocol = STORE
        return STORED


@hookimpl(trylast=True)
def resolve_recipient(core, address):
    if address.domain != core.domain or not address.local:
        return None
    # An account with live endpoints exists (they logged in to it): no query on the hot path.
    if core.presence.endpoints(address) or accounts.exists(core.db, address.local):
        return LocalAccountRoute(core, address.bare)
    return None


class Router:
    #: stored messages read at a time by ``deliver_stored``
    PAGE = 100
    #: seconds ``deliver_stored`` waits for an endpoint to hand a stored message to its transport
    FLUSH_TIMEOUT = 60.0

    def __init__(self, core):
        self.core = core
        self._delivering: set[Address] = set()  # accounts whose backlog deliver_stored is sending
        self._again: set[Address] = set()  # of those, asked again meanwhile: go round once more
        self._held: dict[Address, list] = {}  # account → [closing endpoints giving back, Event]
        #: messages routed since start, by (source, destination, outcome, condition): the
        #: ``source`` given to ``route``, the route's ``protocol`` (``"none"`` when refused or
        #: discarded, ``"store"`` when stored), the outcome (delivered, stored, discarded,
        #: refused) and a refusal's RFC 6120 condition (else ""). One dictionary update per
        #: message; ``take_counts`` (the log) and the metrics (core/metrics.py) read it.
        self.counts: dict[tuple, int] = {}
        #: seconds ``route`` took, for one message in 16 (``TIMED``)
        self.latency = Histogram(ROUTING_BUCKETS)
        self._routed = 0  # messages so far: which ones are timed
        self._taken: Counter = Counter()  # the outcomes ``take_counts`` reported so far
        #: protocol → largest body plus subject (UTF-8 bytes) it carries; see :meth:`limit`.
        self.limits: dict[str, int] = {}
        self._floor: int | None = None  # the smallest of ``limits``

    def limit(self, protocol: str, max_bytes: int) -> None:
        """Declare that ``protocol`` endpoints carry at most ``max_bytes`` of body plus subject."""
        self.limits[protocol] = max_bytes
        self._floor = min(self.limits.values())

    def check_size(self, message: Message, protocols) -> None:
        """RoutingError ``policy-violation`` if ``message`` exceeds a limit of ``protocols``."""
        rough = 4 * (len(message.body) + len(message.subject or ""))  # UTF-8 is ≤ 4 bytes a char
        if self._floor is None or rough <= self._floor:
            return  # within every limit: the usual case, decided without looking at protocols
        limits = [(self.limits[p], p) for p in protocols if p in self.limits]
        if not limits:
            return
        smallest, protocol = min(limits)
        if rough > smallest and (size := message.size()) > smallest:
            raise RoutingError("policy-violation", f"the message has {size} bytes of text; "
                                                   f"{protocol} carries at most {smallest}")

    def route(self, message: Message, source: str = "other") -> str:
        """Deliver ``message``; return ``"delivered"``, ``"stored"`` or ``"discarded"``, or raise
        RoutingError. ``source`` names the protocol it came in by (for the metrics)."""
        self._routed += 1
        started = 0.0 if self._routed & TIMED else perf_counter()
        recipient, core = message.recipient, self.core
        try:
            route = self._resolve(recipient)
            if route is None:
                if recipient.domain != core.domain:
                    raise RoutingError("remote-server-not-found", f"no route to domain {recipient.domain}")
                raise RoutingError("item-not-found", f"{recipient.bare} does not exist")
            given = (core, message, source)
            for screen, positions in core.pm.direct("screen_message", SCREEN_ARGUMENTS):
                screen(*[given[i] for i in positions])
            outcome = route.deliver(message)
        except RoutingError as exc:
            key = (source, NOWHERE, REFUSED, exc.condition)
            self.counts[key] = self.counts.get(key, 0) + 1
            if started:
                self.latency.observe(perf_counter() - started)
            raise
        key = (source, NOWHERE if outcome == DISCARDED else getattr(route, "protocol", "service"),
               outcome, "")
        counts = self.counts
        counts[key] = counts.get(key, 0) + 1
        if started:
            self.latency.observe(perf_counter() - started)
        given = (core, message)
        for observe, positions in core.pm.direct("on_message", MESSAGE_ARGUMENTS):
            observe(*[given[i] for i in positions])
        return outcome

    def _resolve(self, address: Address):
        """``resolve_recipient``'s first answer (firstresult), the implementations called directly."""
        given = (self.core, address)
        for resolve, positions in self.core.pm.direct("resolve_recipient", RESOLVE_ARGUMENTS):
            if (route := resolve(*[given[i] for i in positions])) is not None:
                return route
        return None

    def deliver_here(self, message: Message) -> str:
        """Deliver a message another cluster node handed to this one (core/cluster.py): to the
        endpoint its full recipient address names, if it is here, else to this node's live
        endpoints of the account, else to the offline store; never back to another node.
        Returns the outcome, or raises RoutingError."""
        return LocalAccountRoute(self.core, message.recipient.bare, local=True).deliver(message)

    def take_counts(self) -> Counter:
        """The outcomes counted since the last call (the server logs them every minute)."""
        totals = Counter()
        for (_source, _destination, outcome, _condition), n in self.counts.items():
            totals[outcome] += n
        counts = totals - self._taken  # drops the outcomes that did not move
        self._taken = totals
        return counts

    def deliver_stored(self, account: Address) -> int:
        """Deliver what was stored for ``account`` (oldest first) now that it is online (XEP-0160).

        Flow-controlled, so a backlog of any size reaches a session whose outbound queue is
        bounded: the backlog is read ``PAGE`` messages at a time; each message goes to the live
        endpoints and the router waits (``Endpoint.flush``) until one of them has handed it to its
        transport before the next goes out. A page's messages that were handed on are then
        deleted; the first message no endpoint took or handed on, and everything after it, stays
        stored for the next login. One delivery runs per account at a time: a call while one
        runs returns 0, and the running one goes round once more when it is done (it reaches
        endpoints and rows that came meanwhile). Returns how many were delivered.
        """
        account = account.bare
        if account in self._delivering:
            self._again.add(account)
            return 0
        self._delivering.add(account)
        total = 0
        try:
            while True:
                self._again.discard(account)
                total += self._deliver_pages(account)
                if account not in self._again:
                    return total
        finally:
            self._delivering.discard(account)
            self._again.discard(account)

    def _deliver_pages(self, account: Address) -> int:
        total = 0
        while page := offline.pending(self.core.db, account.local, self.PAGE):
            done, dropped = [], 0
            for row_id, message in page:
                if self._refused_now(message):
                    done.append(row_id)  # dropped, not delivered
                    dropped += 1
                    continue
                # this process's endpoints: a row is deleted only once one of them wrote it
                took = deliver_to(live_endpoints(self.core, account, local=True), message)
                # every endpoint that took it is waited for (none is let overrun its queue)
                if not [e for e in took if flushed(e, self.FLUSH_TIMEOUT)]:
                    break  # keep the order: stop at the first message not handed on
                done.append(row_id)
            offline.remove(self.core.db, done)
            total += len(done) - dropped
            if len(done) < self.PAGE:
                break
        return total

    def _refused_now(self, message: Message) -> bool:
        """Whether ``screen_message`` refuses a stored message now (``source`` ``"offline"``): a
        block list (XEP-0191 §3.3: no stanza from a blocked JID is delivered) made after it was
        stored. Such a message is dropped, not kept: the recipient chose not to hear from the
        sender, and kept it would hold the backlog behind it and fill the account's offline
        quota (an archive, XEP-0313, has it already)."""
        given = (self.core, message, "offline")
        try:
            for screen, positions in self.core.pm.direct("screen_message", SCREEN_ARGUMENTS):
                screen(*[given[i] for i in positions])
        except RoutingError as exc:
            log.info("stored message %s from %s to %s dropped: %s", message.id, message.sender,
                     message.recipient, exc.text or exc.condition)
            return True
        return False

    def hold(self, account: Address) -> None:
        """A closing endpoint of ``account`` will give back messages (``returned``): until it
        calls ``release``, a message refused for the account waits before it is stored, so that
        it lands after them (the store keeps an account's messages in order). Call it the moment
        the endpoint starts closing, before anything can yield to another greenlet."""
        self._held.setdefault(account.bare, [0, gevent.event.Event()])[0] += 1

    def release(self, account: Address) -> None:
        """The endpoint that called ``hold`` has given back everything it had."""
        entry = self._held.get(account.bare)
        if entry is not None:
            entry[0] -= 1
            if entry[0] <= 0:
                del self._held[account.bare]
                entry[1].set()

    def wait_for_given_back(self, account: Address) -> None:
        """Wait (at most ``FLUSH_TIMEOUT``) until no closing endpoint of ``account`` holds it."""
        entry = self._held.get(account.bare)
        if entry is not None and not entry[1].wait(self.FLUSH_TIMEOUT):
            log.warning("stored a message for %s before a closing endpoint gave back its own", account)

    def returned(self, *messages: Message) -> None:
        """An endpoint gives back ``messages``, which it took but could not hand on (its
        connection went away first): they are stored for their recipient's account (XEP-0160), to
        be delivered at the next login, rather than lost — or at once, when the account has live
        endpoints now (a client that reconnected before its old connection finished closing).
        Call it after the endpoint left the presence hub, with the messages oldest first: each
        account's are stored in one transaction. Messages not worth storing (``storable``) are dropped, as for any offline
        account, and a message that came from the store (it has a ``stamp``) is still there:
        ``deliver_stored`` deletes it only once an endpoint wrote it. A full store or a deleted
        account is logged."""
        by_account: dict[Address, list[Message]] = {}
        for message in messages:
            if message.stamp is None and storable(message):  # a stored message keeps its row
                by_account.setdefault(message.recipient.bare, []).append(message)
        limit = self.core.config["server"]["max_offline_messages"]
        for account, kept in by_account.items():
            try:
                stored = offline.store_many(self.core.db, account.local, kept, limit)
            except accounts.NoSuchAccount:
                stored = 0
            for message in kept[stored:]:
                log.warning("message %s to %s was not delivered and cannot be stored", message.id, account)
            if stored and live_endpoints(self.core, account, local=True):  # not from the caller's
                gevent.spawn(self.deliver_stored, account)  # greenlet: it may be a closing connection
