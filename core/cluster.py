"""The cluster: several ``convergence serve`` processes (workers, nodes) as one server (issue 14).

Each process is a **node** with an id (``[cluster] node_id``; default the host name, the listener
addresses and, under the supervisor, the worker's number). Every live endpoint is **owned** by the
node that holds its connection; the others see it through the **directory** and reach it by a
**hand-off**. Shared state is PostgreSQL (accounts, rosters, the offline store); live state goes
through Redis — no protocol of our own (docs/cluster.md):

- ``<prefix>node:<id>``: the node's heartbeat, JSON (pid, host, start time, the process's random
  ``instance``), expiring after ``node_timeout`` unless the node refreshes it (every quarter of
  it). It is also the **claim of the node id**: set only if free or the process's own (``HOLD``),
  so a second process configured with a live node's id refuses to start (``IdTaken``); one
  whose holder is a dead process of this machine (a restarted worker, a node restarted after a
  crash) takes it over at once.
- ``<prefix>dir:<id>``: a hash, full address → the endpoint's protocol and presence, for every
  endpoint the node owns; its expiry is refreshed with the heartbeat, so a node that died
  leaves nothing behind.
- the channel ``<prefix>events``: ``up``/``down`` of one endpoint, ``moved`` (an endpoint went
  to another node: an XMPP session resumed there), ``sync`` of a whole node (it
  started, or rewrote its hash after Redis came back), ``bye`` (it stops). Every node keeps the
  others' endpoints in its presence hub as :class:`RemoteEndpoint` objects, so presence fans out to
  watchers on every node through the usual hooks and the router finds every endpoint.
- the channel ``<prefix>inbox:<id>``: hand-offs to the node (``msg``, or ``msgs`` for several
  published together), the acknowledgements it gets (``ack``/``acks``), and *casts* (``cast``):
  a plugin's events for the node's endpoints that are not messages (``on_cluster_cast``: XMPP
  roster pushes and presence stanzas, SIP responses that reached the wrong worker), unconfirmed,
  in order with the hand-offs; a *hand-over* is a cast confirmed like a hand-off; a *request*
  (``ask``) is a cast whose answer (``answer``) comes back as a hand-off, its claim deciding
  whether it was taken.
- ``<prefix>own:<name>``: the node that owns a service address (``owner``: an XMPP chat room;
  ``take``: an XMPP component, held where it connected last; the upload purge), so that one
  process holds it;
  expiring with the owner's heartbeat, and taken over by the next node that uses the name once
  the owner's heartbeat key is gone.

**A hand-off is confirmed exactly once** (the point where delivery is decided): the owner claims
the message with ``SET <prefix>claim:<handoff> NX`` before giving it to its endpoint and then
acknowledges; a sender that got no acknowledgement within ``handoff_timeout`` tries to claim it
itself and, when that succeeds, lets the router store it offline (XEP-0160). Whoever wins the
claim is answerable for the message: the owner delivers it (or stores it, if its endpoint went
away meanwhile), or the sender stores it. A node that died holding a claim is the same window as
a single process killed between taking a message and writing it.

**A node is lost** when its heartbeat key expired: the others find out on their own heartbeat,
drop its endpoints (watchers get ``unavailable``) and from then on store what would have gone
to them. Redis unreachable: a node keeps serving its own endpoints; a message for an account with
no endpoint on this node is refused for now (``service-unavailable`` with ``retry_after``: whether
it has one on another node is unknown), and the node re-announces its endpoints
when Redis is back.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import socket
import time
from dataclasses import dataclass

import gevent
import gevent.event
import gevent.queue

from .addresses import Address
from .config import Option, Section, positive_number
from .message import Message, RoutingError
from .presence import Presence

log = logging.getLogger(__name__)

DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
#: seconds a claim key lives: longer than any hand-off waits
CLAIM_TTL = 300
#: outcomes the owner acknowledges with
TAKEN = ("delivered", "stored")
#: what a node that asked (``ask``) and gave up waiting writes in its answer's claim: the
#: answerer, whose hand-off of the answer was not confirmed, then knows it was not taken
GAVE_UP = "gave-up"
HANDOFF_BATCH = 200  # hand-offs claimed in one Redis round trip at most
RETRY = (0.5, 4.0)  # first and longest wait before reconnecting the subscription
#: ``owner``'s claim, atomic in Redis: the name's node if its heartbeat key (ARGV[3] + node) is
#: alive, else (with ARGV[4] = 1) this node (ARGV[1]), for ARGV[2] ms, or (0) nil
CLAIM = """local v = redis.call('GET', KEYS[1])
if v and (v == ARGV[1] or redis.call('EXISTS', ARGV[3] .. v) == 1) then
  if v == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
  return v
end
if ARGV[4] == '0' then return false end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return ARGV[1]"""
#: ``release``: delete the claim if it is still this node's (ARGV[1])
RELEASE = """if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0"""
#: the node id's claim, which is the heartbeat key (KEYS[1]): set it to ARGV[2] for ARGV[3] ms
#: if it is free, this process's (its ``instance`` is ARGV[1]) or exactly ARGV[4] (a holder found
#: dead); else return the holder's heartbeat
HOLD = """local v = redis.call('GET', KEYS[1])
if v and v ~= ARGV[4] and cjson.decode(v)['instance'] ~= ARGV[1] then return v end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return false"""
#: ``stop``: unless another process holds the id (KEYS[1]; this one's ``instance`` is ARGV[1]),
#: delete the heartbeat and the directory (KEYS[2]) and say ``bye`` (ARGV[3] on channel ARGV[2])
LEAVE = """local v = redis.call('GET', KEYS[1])
if v and cjson.decode(v)['instance'] ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 1"""


def section() -> Section:
    """The ``[cluster]`` table (the core's, like ``[server]``)."""
    return Section("cluster", {
        "redis": Option(DEFAULT_REDIS, "Redis URL: the live-endpoint directory and cross-node delivery"),
        "node_id": Option("", "this node's id (default: host name and listener addresses, plus the "
                              "worker's number under the supervisor)"),
        "node_timeout": Option(10.0, "seconds without a heartbeat after which a node counts as lost",
                               positive_number),
        "handoff_timeout": Option(2.0, "seconds a message handed to another node waits for its "
                                       "confirmation before it is stored offline instead (and a "
                                       "request to another node for its answer)",
                                  positive_number),
        "prefix": Option("convergence:", "prefix of every Redis key and channel (several clusters "
                                         "on one Redis)"),
    }, "several processes or machines as one server (docs/cluster.md)")


def wanted(config) -> bool:
    """Whether this server runs as a cluster member: a ``[cluster]`` table, or several workers."""
    return "cluster" in config.raw or config["server"]["workers"] != 1


def default_node_id(config, worker: int | None = None) -> str:
    """The host name, the listener addresses of every table (``listen``, ``*_listen`` keys) and
    the worker's number."""
    addresses = sorted({f"{v[0]}:{v[1]}" for table in config.values.values() for k, v in table.items()
                        if k.endswith("listen") and isinstance(v, tuple)})
    node = socket.gethostname() + ("/" + ",".join(addresses) if addresses else "")
    return node + (f"/w{worker}" if worker is not None else "")


# ---- the wire format (sans-IO) -------------------------------------------------------------------

def _address(text: str) -> Address:
    local, _, rest = text.partition("@")
    domain, slash, resource = rest.partition("/")
    return Address(local or None, domain, resource if slash else None)


def encode_message(message: Message) -> dict:
    fields = {"sender": str(message.sender), "recipient": str(message.recipient),
              "body": message.body, "subject": message.subject, "thread": message.thread,
              "type": message.type, "id": message.id, "error": message.error}
    hint = getattr(message, "store_hint", None)
    if hint is not None:
        fields["store_hint"] = hint
    return fields


class HandedMessage(Message):
    """A message that came from another node, with the XEP-0334 hint its protocol attached."""

    __slots__ = ("store_hint",)


def decode_message(fields) -> Message:
    """The message :func:`encode_message` made; ValueError for anything else."""
    if not isinstance(fields, dict):
        raise ValueError("a hand-off's message is not an object")
    for key, optional in (("sender", False), ("recipient", False), ("body", False), ("type", False),
                          ("id", False), ("subject", True), ("thread", True), ("error", True)):
        value = fields.get(key)
        if not (isinstance(value, str) or optional and value is None):
            raise ValueError(f"a hand-off's message has no valid {key}")
    hint = fields.get("store_hint")
    if hint is not None and not isinstance(hint, bool):
        raise ValueError("a hand-off's store_hint is not a boolean")
    message = HandedMessage(_address(fields["sender"]), _address(fields["recipient"]), fields["body"],
                            fields.get("subject"), fields.get("thread"), fields["type"], fields["id"],
                            None, fields.get("error"))  # Message checks the type (ValueError)
    object.__setattr__(message, "store_hint", hint)
    return message


def place() -> str:
    """Where a process id means one process: the host name and (on Linux) the PID namespace. A
    heartbeat names its place, so that a process started in the same place can tell whether the
    process that holds its node id is still alive."""
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = ""
    return f"{socket.gethostname()} {namespace}".strip()


def alive(pid: int) -> bool:
    """Whether a process ``pid`` runs here (a zombie counts: its parent has not waited yet)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's
        return True
    return True


def holder(beat: dict) -> str:
    """The process a heartbeat names, for a log line: pid, host and start time."""
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(beat.get("started") or 0))
    return f"pid {beat.get('pid', '?')} on {beat.get('host', '?')}, started {started}"


class IdTaken(Exception):
    """A live process holds this node's id (``[cluster] node_id``): this one must not start."""


def check_ask(ask) -> tuple[str, str]:
    """(the asking node, the request id) of the ``ask`` a request's cast carries
    (``Cluster.ask``); ValueError for anything else."""
    node, rid = (ask.get("node"), ask.get("id")) if isinstance(ask, dict) else (None, None)
    if not (isinstance(node, str) and isinstance(rid, str) and rid.startswith(node + ":")):
        raise ValueError("an ask names a node and a request id")
    return node, rid


def node_tag(node_id: str) -> str:
    """8 hexadecimal digits naming a node in what a protocol sends (SIP Via branches)."""
    return hashlib.sha1(node_id.encode()).hexdigest()[:8]


def presence_fields(presence: Presence) -> list:
    return [presence.available, presence.show, presence.status, presence.priority]


# ---- endpoints of other nodes ----------------------------------------------------------------------

@dataclass(eq=False)
class RemoteEndpoint:
    """An endpoint another node owns, as this node's presence hub and router see it.

    ``protocol`` is ``"cluster"`` (watchers of every protocol see it as another endpoint of the
    account; the owner's protocol is ``origin_protocol``); ``deliver`` hands the message to the
    owner and returns once it is confirmed, else raises RoutingError."""

    address: Address
    origin_protocol: str
    presence: Presence
    node: str
    cluster: Cluster
    protocol: str = "cluster"
    remote: bool = True

    @property
    def peer(self) -> str:
        return f"node {self.node}"

    def deliver(self, message: Message) -> None:
        self.cluster.hand_off(self, message)


# ---- the cluster member ------------------------------------------------------------------------------

class Cluster:
    """This process as a member: built and started by ``serve`` (``core.cluster``)."""

    def __init__(self, core, node_id: str, on_evicted=None):
        """``on_evicted`` (no arguments) is called when another process took this node's id
        while this one could not renew it: this process must stop (``evicted`` says why)."""
        import redis  # the cluster's own dependency: imported when there is a cluster

        settings = core.config["cluster"]
        self.core = core
        self.node_id = node_id
        self.timeout = settings["node_timeout"]
        self.handoff_timeout = settings["handoff_timeout"]
        p = settings["prefix"]
        self.events, self.inbox = f"{p}events", f"{p}inbox:{node_id}"
        self.node_key, self.dir_key = f"{p}node:{node_id}", f"{p}dir:{node_id}"
        self.tag = node_tag(node_id)
        self._prefix = p
        self.redis = redis.Redis.from_url(settings["redis"], socket_timeout=max(self.timeout / 2, 1.0),
                                          socket_connect_timeout=2.0, decode_responses=True)
        self._errors = (redis.RedisError, OSError)
        self._claim = self.redis.register_script(CLAIM)
        self._unclaim = self.redis.register_script(RELEASE)
        self._hold = self.redis.register_script(HOLD)
        self._leave = self.redis.register_script(LEAVE)
        self.instance = secrets.token_hex(8)  # this process, in its heartbeat: the id's holder
        self.place = place()
        self.evicted: str | None = None  # why this process lost its node id, once it did
        self._on_evicted = on_evicted
        self._resyncing = None  # the greenlet of ``on_cluster_resync``, while it runs
        self._resync_again = False
        self.owned: set[str] = set()  # the names this node owns (``owner``)
        self.remote: dict[str, dict[str, RemoteEndpoint]] = {}  # node → full address → endpoint
        self.nodes: set[str] = set()  # the other live nodes, with endpoints or not
        self._started: dict[str, float] = {}  # node → when it started, from its ``sync``
        self._waiting: dict[str, gevent.event.AsyncResult] = {}  # hand-off id → its ack
        self._asked: dict[str, gevent.event.AsyncResult] = {}  # request id → its answer (``ask``)
        self._handoffs: gevent.queue.Queue = gevent.queue.Queue()
        #: hand-offs to publish: [channel, payload, AsyncResult of the receivers count]
        self._outbox: gevent.queue.Queue = gevent.queue.Queue()
        self._changes: gevent.queue.Queue = gevent.queue.Queue()  #: directory events to write
        self._greenlets: list = []
        self._healthy = False  # whether the last write reached Redis
        self._subscribed = gevent.event.Event()
        self.started = time.time()

    # -- life cycle --
    def start(self) -> None:
        """Join: claim the node id, announce a fresh node, learn the others, start the heartbeat.
        Raises OSError when Redis cannot be reached (start-up stops: a member that cannot join
        would split the server), IdTaken when a live process holds the node id."""
        try:
            self.redis.ping()
            self._hold_id()
        except self._errors as exc:
            raise OSError(f"cannot reach Redis at {self._url()}: {exc}") from None
        self._greenlets = [gevent.spawn(self._listen), gevent.spawn(self._take_handoffs),
                           gevent.spawn(self._publish_handoffs), gevent.spawn(self._write_changes)]
        if not self._subscribed.wait(10):
            raise OSError(f"cannot subscribe on Redis at {self._url()}")
        self._announce()
        self._greenlets.append(gevent.spawn(self._heartbeat))
        self.core.presence.mirror = self
        log.info("cluster node %s joined on %s (node_timeout %g s)", self.node_id, self._url(), self.timeout)

    def _hold_id(self) -> None:
        """Claim the node id: the heartbeat key, set only if it is free (``HOLD``), renewed by the
        heartbeat. Held by a process that is gone — one of this place (host, PID namespace)
        whose pid runs no more: a worker the supervisor restarts, a node restarted after a crash
        — it is taken over at once. Held by another process, this one waits for the claim to
        expire (within ``node_timeout`` of the holder's last heartbeat) and raises IdTaken as
        soon as the holder's heartbeat renews it: two live processes never share an id."""
        ms, seen, stale = int(self.timeout * 1000), None, ""
        deadline = time.monotonic() + self.timeout * 1.25
        while True:
            held = self._hold(keys=[self.node_key], args=[self.instance, self._beat(), ms, stale])
            if held is None:
                if seen is not None or stale:
                    log.info("cluster: node id %s taken over from %s", self.node_id,
                             holder(json.loads(stale or seen)))
                return
            beat = json.loads(held)
            if beat.get("place") == self.place and (beat.get("pid") == os.getpid() or not alive(beat.get("pid"))):
                stale = held  # its process is gone: replace exactly that heartbeat
                continue
            if seen is not None and held != seen or time.monotonic() > deadline:
                raise IdTaken(f"node id {self.node_id!r} is held by a live process ({holder(beat)}); "
                              f"two processes must not share a node id ([cluster] node_id)")
            if seen is None:
                log.warning("cluster: node id %s is held by %s; waiting up to %g s for its claim to "
                            "expire (a process that died leaves it for node_timeout)",
                            self.node_id, holder(beat), self.timeout)
            seen = held
            gevent.sleep(self.timeout / 8)

    def _usurped(self, held: str) -> None:
        """Another process holds this node's id: it took it while this one could not renew it
        (cut off from Redis, or stalled, for longer than node_timeout). Two processes must not
        share the directory: this one stops (``on_evicted``)."""
        self.evicted = f"node id {self.node_id!r} was taken by another process ({holder(json.loads(held))}) " \
                       f"while this one could not renew it; stopping"
        log.error("cluster: %s", self.evicted)
        self._healthy = False
        if self._on_evicted is not None:
            self._on_evicted()

    def stop(self) -> None:
        """Leave: the others drop this node's endpoints at once rather than after node_timeout
        (unless another process holds the id now: its directory is not this one's to delete)."""
        self.core.presence.mirror = None
        for greenlet in [*self._greenlets, self._resyncing]:
            if greenlet is not None:
                greenlet.kill(block=False)
        try:
            self._leave(keys=[self.node_key, self.dir_key],
                        args=[self.instance, self.events, json.dumps({"t": "bye", "node": self.node_id})])
        except self._errors as exc:
            log.warning("cluster: could not say goodbye on Redis: %s", exc)
        self.redis.close()

    @property
    def reachable(self) -> bool:
        """Whether the last write reached Redis (the readiness check asks)."""
        return self._healthy

    @property
    def retry_after(self) -> float:
        """Seconds after which a sender refused during a Redis outage may try again: the heartbeat
        looks for Redis that often."""
        return max(1.0, self.timeout / 4)

    def _url(self) -> str:
        kwargs = self.redis.connection_pool.connection_kwargs
        return f"redis://{kwargs.get('host', '?')}:{kwargs.get('port', '?')}/{kwargs.get('db', 0)}"

    # -- this node's endpoints, written by the presence hub (``mirror``) --
    def changed(self, endpoint, present: bool) -> None:
        """A local endpoint came, changed or went: queue the directory update and the event that
        tells the others (``_write_changes``). Nothing waits for Redis here: a SIP REGISTER or an
        XMPP login that waited for its round trip held up the datagrams and stanzas behind it
        (2 workers did 833 REGISTERs/s, one process on SQLite 3,185). An endpoint that comes
        here with an address another node had (an XMPP session resumed here, XEP-0198) is this
        node's from now on: that node's entry is forgotten."""
        if present and self.remote:
            address = str(endpoint.address)
            for node in [n for n, table in self.remote.items() if address in table]:
                del self.remote[node][address]
                if not self.remote[node]:
                    del self.remote[node]
        if not self._healthy:
            return  # Redis is away: no login waits for it; the heartbeat announces all when it is back
        event = {"t": "up" if present else "down", "node": self.node_id, "address": str(endpoint.address)}
        if present:
            event.update(protocol=endpoint.protocol, presence=presence_fields(endpoint.presence))
        self._changes.put(event)

    def moved(self, endpoint, node: str) -> None:
        """This node's ``endpoint`` now lives on ``node`` (an XMPP session resumed there,
        XEP-0198 §5): here it becomes that node's remote endpoint, and the others are told it is
        on ``node`` (a ``moved`` event; the entry leaves this node's directory) — moved, not
        gone: nobody sees it go ``unavailable`` and come back."""
        address = str(endpoint.address)
        remote = RemoteEndpoint(endpoint.address, endpoint.protocol, endpoint.presence, node, self)
        self.remote.setdefault(node, {})[address] = remote
        self.core.presence.replace(endpoint, remote)
        if self._healthy:
            self._changes.put({"t": "moved", "node": self.node_id, "to": node, "address": address})

    def _write_changes(self) -> None:
        """The queued directory changes, all that wait, in order, in one pipeline: the hash
        entries and the events. If Redis fails they are dropped: when it is back, ``_announce``
        rewrites the whole directory from the presence hub and asks the others to reload it."""
        queue = self._changes
        while True:
            batch = [queue.get()]
            while not queue.empty():
                batch.append(queue.get_nowait())
            try:
                pipe = self.redis.pipeline(transaction=False)
                for event in batch:
                    if event["t"] == "up":
                        pipe.hset(self.dir_key, event["address"], json.dumps([event["protocol"], event["presence"]]))
                    else:  # gone, or moved to another node (``moved``)
                        pipe.hdel(self.dir_key, event["address"])
                    pipe.publish(self.events, json.dumps(event))
                pipe.pexpire(self.dir_key, int(self.timeout * 1000))
                pipe.execute()
            except self._errors as exc:
                self._lost(exc)

    def _announce(self, again: bool = False) -> bool:
        """Write this node's heartbeat and whole directory hash, and ask the others to reload it
        (``again``: after Redis was unreachable from this node: the others re-read what they
        cache from casts, some of this node's may be lost, ``on_cluster_resync``). False when
        another process holds the node id (``_usurped``)."""
        held = self._hold(keys=[self.node_key], args=[self.instance, self._beat(), int(self.timeout * 1000), ""])
        if held is not None:
            self._usurped(held)
            return False
        entries = {str(e.address): json.dumps([e.protocol, presence_fields(e.presence)])
                   for e in self.core.presence.own()}
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(self.dir_key)
        if entries:
            pipe.hset(self.dir_key, mapping=entries)
            pipe.pexpire(self.dir_key, int(self.timeout * 1000))
        sync = {"t": "sync", "node": self.node_id, "started": self.started}
        pipe.publish(self.events, json.dumps({**sync, "again": True} if again else sync))
        claims = self._claim_owned(pipe)
        self._kept(claims, pipe.execute())
        self._healthy = True
        return True

    def _claim_owned(self, pipe) -> list[str]:
        """Claim again, at the end of ``pipe``, every name this node owns (``owner``): refreshes
        the claims' expiry, and finds those another node took over while this one could not
        refresh them (Redis away from it, or this process stalled longer than node_timeout)."""
        owned = sorted(self.owned)
        for name in owned:
            self._claim(keys=[self._own_key(name)], args=self._claim_args(), client=pipe)
        return owned

    def _kept(self, owned: list[str], results: list) -> None:
        for name, node in zip(owned, results[len(results) - len(owned):]):
            if node != self.node_id:
                log.warning("cluster: node %s took %s over while this node could not hold it", node, name)
                self.owned.discard(name)

    def _beat(self) -> str:
        return json.dumps({"node": self.node_id, "pid": os.getpid(), "host": socket.gethostname(),
                           "place": self.place, "instance": self.instance, "started": self.started,
                           "beat": time.time()})

    def _lost(self, exc) -> None:
        if self._healthy:
            log.error("cluster: Redis unreachable (%s): serving this node's endpoints only; "
                      "messages for accounts not on this node are refused until it is back", exc)
        self._healthy = False

    # -- heartbeat and node loss --
    def _heartbeat(self) -> None:
        ms = int(self.timeout * 1000)
        while self.evicted is None:
            gevent.sleep(self.timeout / 4)
            try:
                if not self._healthy:
                    if not self._announce(again=True):  # Redis is back (or was flushed): rewrite all
                        return
                    log.info("cluster: Redis reachable again; endpoints announced")
                else:
                    pipe = self.redis.pipeline(transaction=False)
                    self._hold(keys=[self.node_key], args=[self.instance, self._beat(), ms, ""], client=pipe)
                    pipe.pexpire(self.dir_key, ms)
                    claims = self._claim_owned(pipe)
                    results = pipe.execute()
                    if results[0] is not None:
                        self._usurped(results[0])
                        return
                    self._kept(claims, results)
                self._check_nodes()
            except self._errors as exc:
                self._lost(exc)

    def _check_nodes(self) -> None:
        nodes = sorted(self.nodes | set(self.remote))
        if not nodes:
            return
        pipe = self.redis.pipeline(transaction=False)
        for node in nodes:
            pipe.exists(f"{self._prefix}node:{node}")
        for node, alive in zip(nodes, pipe.execute()):
            if not alive:
                log.warning("cluster: node %s lost (no heartbeat for %g s): its %d endpoints are gone",
                            node, self.timeout, len(self.remote.get(node, ())))
                self._drop_node(node)

    # -- the others' endpoints --
    def _drop_node(self, node: str) -> None:
        known = node in self.nodes or node in self.remote
        self.nodes.discard(node)
        self._started.pop(node, None)
        for endpoint in list(self.remote.pop(node, {}).values()):
            self.core.presence.unregister(endpoint)
        if known:
            try:
                self.core.hook.on_cluster_node_lost(core=self.core, node=node)
            except Exception:  # a plugin's failure must not stop the heartbeat nor the subscription
                log.exception("cluster: a plugin failed on the loss of node %s", node)

    def _set_remote(self, node: str, address: str, protocol: str, presence: list) -> None:
        table = self.remote.setdefault(node, {})
        presence = Presence(*presence)
        endpoint = table.get(address)
        if endpoint is None:
            full = _address(address)
            existing = self.core.presence.endpoint(full)
            if existing is not None and not getattr(existing, "remote", False):
                log.warning("cluster: %s on node %s has the address of an endpoint here; ignored",
                            address, node)
                return
            if existing is not None:  # it moved (a phone registering through another node, an
                # XMPP session resumed there): the last node to announce it has it; the same
                # endpoint, so that watchers see no unavailable in between
                before = self.remote.get(existing.node, {})
                before.pop(address, None)
                if not before:
                    self.remote.pop(existing.node, None)
                log.info("cluster: %s moved from node %s to node %s", address, existing.node, node)
                existing.node, existing.origin_protocol, existing.presence = node, protocol, presence
                endpoint = table[address] = existing
            else:
                endpoint = table[address] = RemoteEndpoint(full, protocol, presence, node, self)
        else:
            endpoint.presence = presence
        self.core.presence.register(endpoint, int(self.timeout) or 1)

    def _relocate(self, node: str, to: str, address: str) -> None:
        """``node`` says its endpoint ``address`` moved to node ``to`` (``moved``): the same
        remote endpoint is ``to``'s from now on — if this node still knows it as ``node``'s
        (``to``'s own ``up`` may have come first, or ``to`` may have dropped it since)."""
        endpoint = self.remote.get(node, {}).pop(address, None)
        if endpoint is None:
            return
        if not self.remote[node]:
            del self.remote[node]
        log.info("cluster: %s moved from node %s to node %s", address, node, to)
        if to != self.node_id:
            endpoint.node = to
            self.remote.setdefault(to, {})[address] = endpoint
        elif self.core.presence.endpoint(endpoint.address) is endpoint:  # gone here already
            self.core.presence.unregister(endpoint)

    def _remove_remote(self, node: str, address: str) -> None:
        endpoint = self.remote.get(node, {}).pop(address, None)
        if endpoint is not None:
            self.core.presence.unregister(endpoint)
            if not self.remote[node]:
                del self.remote[node]

    def _load(self, node: str) -> None:
        """Replace what is known of ``node`` with its directory hash."""
        entries = self.redis.hgetall(f"{self._prefix}dir:{node}")
        known = self.remote.get(node, {})
        for address in [a for a in known if a not in entries]:
            self._remove_remote(node, address)
        for address, value in entries.items():
            protocol, presence = json.loads(value)
            self._set_remote(node, address, protocol, presence)

    def _load_all(self) -> None:
        nodes = {key[len(self._prefix) + 5:] for key in self.redis.scan_iter(f"{self._prefix}node:*")}
        nodes.discard(self.node_id)
        for node in (set(self.remote) | self.nodes) - nodes:
            self._drop_node(node)
        ordered = sorted(nodes)
        beats = self.redis.mget([f"{self._prefix}node:{node}" for node in ordered]) if ordered else []
        for node, beat in zip(ordered, beats):
            if beat is not None:
                self._note_start(node, json.loads(beat).get("started"))
        self.nodes = nodes
        for node in nodes:
            self._load(node)

    def _note_start(self, node: str, started) -> None:
        """``node`` says when it started: another time than it said before means that it was
        restarted under the same id (a worker) within ``node_timeout``, and what it had went with
        its old process, as for a lost node."""
        if self._started.get(node, started) != started:
            self._drop_node(node)
        self._started[node] = started

    def _resync(self) -> None:
        """Casts may have been missed — by this node while its subscription was down, or from a
        node that could not reach Redis: the plugins re-read what they cache from casts
        (``on_cluster_resync``), in a greenlet of their own (the subscription does not wait for
        the database). Asked again while that runs, it runs once more when done."""
        if self._resyncing is not None and not self._resyncing.dead:
            self._resync_again = True
            return
        self._resyncing = gevent.spawn(self._run_resync)

    def _run_resync(self) -> None:
        again = True
        while again:
            self._resync_again = False
            try:
                self.core.hook.on_cluster_resync(core=self.core)
            except Exception:  # the next recovery tries again
                log.exception("cluster: a plugin failed to re-read what it caches")
            again = self._resync_again

    # -- the subscription: events and this node's inbox --
    def _listen(self) -> None:
        wait, lost = RETRY[0], False
        while True:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(self.events, self.inbox)
                self._load_all()  # after subscribing: nothing published from now on is missed
                self._subscribed.set()
                if lost:
                    log.info("cluster: subscribed again; %d other nodes known", len(self.remote))
                    self._resync()  # casts to this node meanwhile found nobody listening
                wait, lost = RETRY[0], False
                while True:
                    item = pubsub.get_message(timeout=1.0)
                    if item is not None:
                        self._receive(item["channel"], item["data"])
            except self._errors as exc:
                self._lost(exc)
                if not lost:
                    log.warning("cluster: subscription lost (%s); trying again", exc)
                lost = True
            finally:
                try:
                    pubsub.close()
                except self._errors:
                    pass
            gevent.sleep(wait)
            wait = min(wait * 2, RETRY[1])

    def _receive(self, channel: str, data: str) -> None:
        try:
            event = json.loads(data)
            kind = event["t"]
            if channel == self.inbox:
                if kind in ("msg", "cast"):  # one queue: casts stay in order with hand-offs
                    self._handoffs.put(event)
                elif kind == "msgs":  # several hand-offs published at once (_publish_handoffs)
                    for one in event["msgs"]:
                        if not isinstance(one, dict) or one.get("t") not in ("msg", "cast"):
                            raise ValueError("a batch of hand-offs holds something else")
                        self._handoffs.put(one)
                elif kind in ("ack", "acks"):  # one, or those of a batch (_take)
                    for ack in event["acks"] if kind == "acks" else (event,):
                        if (waiting := self._waiting.get(ack["hid"])) is not None:
                            waiting.set(ack)
                return
            node = event["node"]
            if node == self.node_id:
                return
            if kind == "sync":
                self._note_start(node, event.get("started"))
                if event.get("again"):  # it was cut off: what it cast meanwhile is lost
                    self._resync()
            if kind != "bye":
                self.nodes.add(node)
            if kind == "up":
                self._set_remote(node, event["address"], event["protocol"], event["presence"])
            elif kind == "down":
                self._remove_remote(node, event["address"])
            elif kind == "moved":
                self._relocate(node, event["to"], event["address"])
            elif kind == "sync":
                self._load(node)
            elif kind == "bye":
                self._drop_node(node)
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("cluster: ignored a bad event on %s: %s", channel, exc)

    # -- hand-offs --
    def hand_off(self, endpoint: RemoteEndpoint, message: Message) -> None:
        """Give ``message`` to the node owning ``endpoint``; return once that node confirmed it
        delivered or stored it. RoutingError when it did not take it: the router then stores it
        (or reports the owner's refusal)."""
        self._confirmed(endpoint.node, f"a message for {endpoint.address}", "storing it",
                        {"message": encode_message(message)})

    def hand_over(self, node: str, kind: str, data: dict) -> str:
        """Give ``data`` to the plugins of ``node`` (``on_cluster_cast`` with ``kind``, as a cast)
        and wait for its confirmation as for a hand-off: the outcome the plugin there returned
        (``delivered`` or ``stored``). RoutingError when it refused (its error), when Redis is
        unreachable, or when it did not confirm within ``handoff_timeout`` (then this node holds
        the claim: the other never takes it). For what is handled by the node that owns a name
        (``owner``): an XMPP room's messages."""
        return self._confirmed(node, kind, "refusing it", {"kind": kind, "data": data})["outcome"]

    def ask(self, node: str, kind: str, data: dict) -> dict | None:
        """Ask the plugins of ``node`` (``on_cluster_cast`` with ``kind``, as a cast whose
        ``data`` has an ``ask`` added) and wait for the answer one of them gives with
        :meth:`answer`; None when Redis is unreachable, when nobody listens on that node's inbox,
        or when no answer came within ``handoff_timeout``. Giving up is decided by the answer's
        claim (``GAVE_UP``, the claim a hand-off's owner takes): an answer is either taken here
        or known by its sender not to be, never both and never neither."""
        if not self._healthy:  # no wait for a connection timeout
            return None
        rid = f"{self.node_id}:{secrets.token_hex(8)}"
        waiting = self._asked[rid] = gevent.event.AsyncResult()
        event = {"t": "cast", "kind": kind, "data": {**data, "ask": {"node": self.node_id, "id": rid}}}
        published = gevent.event.AsyncResult()
        self._outbox.put((f"{self._prefix}inbox:{node}", event, published))
        try:
            try:
                if published.get(timeout=self.handoff_timeout):  # by _publish_handoffs
                    return waiting.get(timeout=self.handoff_timeout)
            except gevent.Timeout:
                pass
            except self._errors:  # the publisher noted the failure
                return None
            try:  # no answer (yet): give up, unless this node claimed the answer meanwhile
                gave_up = self.redis.set(f"{self._prefix}claim:{rid}", GAVE_UP, nx=True, ex=CLAIM_TTL)
            except self._errors as exc:
                self._lost(exc)
                return None  # the answer cannot be claimed here either while Redis fails
            if gave_up:
                log.warning("cluster: node %s did not answer %s within %g s", node, kind, self.handoff_timeout)
                return None
            try:  # claimed by ``_take`` here: it gives it to us at once
                return waiting.get(timeout=self.handoff_timeout)
            except gevent.Timeout:
                return None
        finally:
            self._asked.pop(rid, None)

    def answer(self, ask: dict, data: dict) -> bool:
        """Answer the ``ask`` a cast came with (see :meth:`ask`) with ``data``, handed to the
        asking node like a message: True once it confirmed it took it; False when it did not
        (it gave up waiting, it is gone, Redis failed): the answer is then still the sender's
        (a plugin that handed over state keeps it). ValueError for an ``ask`` that is not one."""
        node, rid = check_ask(ask)
        try:
            self._confirmed(node, "an answer", "keeping it", {"answer": data}, rid)
        except RoutingError:
            return False
        return True

    def _confirmed(self, node: str, what: str, fallback: str, fields: dict, hid: str | None = None) -> dict:
        """Publish a hand-off of ``fields`` to ``node`` (with ``hid``, its id: the request id of
        an answer); its acknowledgement, or RoutingError."""
        if not self._healthy:  # no wait for a connection timeout: stored at once
            raise RoutingError("service-unavailable", f"Redis is unreachable: cannot reach node {node}")
        hid = hid or f"{self.node_id}:{secrets.token_hex(8)}"
        waiting = self._waiting[hid] = gevent.event.AsyncResult()
        payload = {"t": "msg", "hid": hid, "from": self.inbox, **fields}
        published = gevent.event.AsyncResult()
        self._outbox.put((f"{self._prefix}inbox:{node}", payload, published))
        try:
            try:
                receivers = published.get(timeout=self.handoff_timeout)  # by _publish_handoffs
            except self._errors as exc:
                raise RoutingError("service-unavailable", f"cannot reach node {node}: {exc}") from None
            ack = waiting.get(timeout=self.handoff_timeout) if receivers else None
        except gevent.Timeout:
            ack = None
        finally:
            self._waiting.pop(hid, None)
        if ack is None:
            ack = self._claim_back(hid, node, what, fallback)
        if ack.get("outcome") in TAKEN:
            return ack
        raise RoutingError(ack.get("condition") or "recipient-unavailable",
                           ack.get("text") or f"node {node} did not deliver it")

    def _claim_back(self, hid: str, node: str, what: str, fallback: str) -> dict:
        """No confirmation in time: claim the message; if the owner claimed it first it is the
        owner's to deliver or store."""
        key = f"{self._prefix}claim:{hid}"
        try:
            mine = self.redis.set(key, self.node_id, nx=True, ex=CLAIM_TTL)
            if not mine and self.redis.get(key) == GAVE_UP:  # an answer nobody waits for
                mine = True
        except self._errors as exc:
            self._lost(exc)
            mine = True  # cannot know: rather stored twice than lost
        if mine:
            log.warning("cluster: node %s did not confirm %s within %g s; %s",
                        node, what, self.handoff_timeout, fallback)
            return {"outcome": "unconfirmed", "condition": "recipient-unavailable",
                    "text": f"node {node} did not confirm"}
        return {"outcome": "delivered"}  # the owner holds the claim: it delivers or stores it

    def _publish_handoffs(self) -> None:
        """Publish the hand-offs of every greenlet waiting to send one in one pipeline, those
        for one node as one message (``msgs``): one round trip, one write and one message per
        node for all of them rather than one each."""
        queue = self._outbox
        while True:
            batch = [queue.get()]
            while len(batch) < HANDOFF_BATCH and not queue.empty():
                batch.append(queue.get_nowait())
            by_node: dict[str, list] = {}  # inbox → [(event, published or None)] in order
            for channel, event, published in batch:
                by_node.setdefault(channel, []).append((event, published))
            try:
                pipe = self.redis.pipeline(transaction=False)
                for channel, entries in by_node.items():
                    pipe.publish(channel, json.dumps(entries[0][0] if len(entries) == 1 else
                                                     {"t": "msgs", "msgs": [e for e, _ in entries]}))
                counts = pipe.execute()
            except self._errors as exc:
                self._lost(exc)
                for _, _, published in batch:
                    if published is not None:
                        published.set_exception(exc)
                continue
            for entries, receivers in zip(by_node.values(), counts):
                for _, published in entries:
                    if published is not None:  # None: a cast, which nobody waits for
                        published.set(receivers)

    def _take_handoffs(self) -> None:
        """In the order they came (the messages of one sender stay in order), in batches: the
        claims of all the hand-offs waiting are one Redis round trip, their acks another."""
        queue = self._handoffs
        while True:
            batch = [queue.get()]
            while len(batch) < HANDOFF_BATCH and not queue.empty():
                batch.append(queue.get_nowait())
            try:
                self._take(batch)
            except self._errors as exc:
                self._lost(exc)
            except Exception:  # a bad message must not end the loop
                log.exception("cluster: failed to take a hand-off")

    def _take(self, batch: list[dict]) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for event in batch:
            if event["t"] == "msg":
                pipe.set(f"{self._prefix}claim:{event['hid']}", self.node_id, nx=True, ex=CLAIM_TTL)
        claims = iter(pipe.execute())
        acks: dict[str, list] = {}  # sender's inbox → its acks
        for event in batch:
            if event["t"] == "cast":
                self._cast_here(event)
                continue
            if not next(claims):
                continue  # the sender gave up waiting and stored it
            hid = event["hid"]
            try:
                if "kind" in event:
                    outcome = self._hand_over_here(event)
                elif "answer" in event:
                    outcome = self._answered(hid, event["answer"])
                else:
                    outcome = self.core.router.deliver_here(decode_message(event["message"]))
                ack = {"t": "ack", "hid": hid, "outcome": outcome}
            except RoutingError as exc:
                ack = {"t": "ack", "hid": hid, "outcome": "refused", "condition": exc.condition,
                       "text": exc.text}
            acks.setdefault(event["from"], []).append(ack)
        if acks:  # one message per sender
            pipe = self.redis.pipeline(transaction=False)
            for inbox, answers in acks.items():
                pipe.publish(inbox, json.dumps(answers[0] if len(answers) == 1 else
                                               {"t": "acks", "acks": answers}))
            pipe.execute()

    # -- casts: what another node's endpoints must see, other than messages --
    def nodes_of(self, address: Address) -> set[str]:
        """The other nodes that own an endpoint of ``address``: the one named by a full address,
        or every endpoint of the account of a bare one."""
        if address.resource:
            endpoint = self.core.presence.endpoint(address)
            return {endpoint.node} if getattr(endpoint, "remote", False) else set()
        return {e.node for e in self.core.presence.endpoints(address) if getattr(e, "remote", False)}

    def node_of_tag(self, tag: str | None) -> str | None:
        """The node whose :func:`node_tag` is ``tag``, among this one and those that own
        endpoints (a protocol marks what it sends with its node's tag: SIP branches)."""
        if tag is None:
            return None
        if tag == self.tag:
            return self.node_id
        return next((node for node in self.nodes | set(self.remote) if node_tag(node) == tag), None)

    def cast(self, nodes, kind: str, data: dict) -> None:
        """Hand ``data`` to the plugins of each of ``nodes`` (their ``on_cluster_cast`` hook, with
        ``kind``). Best-effort, unconfirmed: for what is not a message (roster pushes, presence);
        nothing is sent while Redis is unreachable."""
        if not nodes or not self._healthy:
            return
        event = {"t": "cast", "kind": kind, "data": data}
        for node in nodes:  # through the hand-offs' publisher: in order with them
            self._outbox.put((f"{self._prefix}inbox:{node}", event, None))

    def _cast_here(self, event: dict) -> None:
        kind, data = event.get("kind"), event.get("data")
        if not isinstance(kind, str) or not isinstance(data, dict):
            log.warning("cluster: ignored a bad cast %r", kind)
            return
        try:
            self.core.hook.on_cluster_cast(core=self.core, kind=kind, data=data)
        except Exception:  # a plugin's failure must not end the loop nor lose the batch's acks
            log.exception("cluster: a plugin failed on a cast %s", kind)

    def _answered(self, rid: str, answer) -> str:
        """An answer to this node's ``ask``, claimed here: to the greenlet waiting for it. Nobody
        waits only when Redis failed while it gave up (it could not write ``GAVE_UP``)."""
        waiting = self._asked.get(rid)
        if waiting is None or waiting.ready() or not isinstance(answer, dict):
            raise RoutingError("recipient-unavailable", f"nobody on node {self.node_id} waits for it")
        waiting.set(answer)
        return "delivered"

    def _hand_over_here(self, event: dict) -> str:
        """A hand-over (``hand_over``): the first outcome a plugin returns, or RoutingError."""
        kind, data = event.get("kind"), event.get("data")
        if not isinstance(kind, str) or not isinstance(data, dict):
            raise RoutingError("bad-request", "a hand-over is a kind and an object")
        try:
            outcomes = self.core.hook.on_cluster_cast(core=self.core, kind=kind, data=data)
        except RoutingError:
            raise
        except Exception:  # a plugin's failure is this hand-over's, not the batch's
            log.exception("cluster: a plugin failed on a hand-over %s", kind)
            raise RoutingError("internal-server-error", f"node {self.node_id} failed on it") from None
        outcome = next((o for o in outcomes if o is not None), None)
        if outcome not in TAKEN:
            raise RoutingError("service-unavailable", f"nothing on node {self.node_id} takes {kind}")
        return outcome

    # -- names one node owns: a service address --
    def _own_key(self, name: str) -> str:
        return f"{self._prefix}own:{name}"

    def _claim_args(self, claim: bool = True) -> list:
        return [self.node_id, int(self.timeout * 1000), f"{self._prefix}node:", int(claim)]

    def owner(self, name: str, claim: bool = True) -> str | None:
        """The node that owns ``name`` (a service address, e.g. an XMPP room: what one process
        must hold for the whole cluster), this one when no live node does: it then claims it in
        Redis (``<prefix>own:<name>``, expiring with this node's heartbeat) — or, without
        ``claim``, None. A claim of a node whose heartbeat key is gone (lost) is taken over.
        RoutingError ``service-unavailable`` (with ``retry_after``) while Redis is unreachable,
        for a name this node does not own."""
        if name in self.owned:
            return self.node_id
        if self._healthy:
            try:
                node = self._claim(keys=[self._own_key(name)], args=self._claim_args(claim))
            except self._errors as exc:
                self._lost(exc)
            else:
                if node == self.node_id:
                    self.owned.add(name)
                return node
        raise RoutingError("service-unavailable", f"the cluster directory (Redis) is unreachable: "
                           f"which node holds {name} is unknown", retry_after=self.retry_after)

    def take(self, name: str) -> str | None:
        """Own ``name`` from now on, whoever had it (what serves it connected here last: an XMPP
        component); the node that had it before, if another, to be told. None when Redis is
        unreachable: it is this node's all the same, and claimed at the next heartbeat."""
        self.owned.add(name)
        if not self._healthy:
            return None
        try:
            before = self.redis.set(self._own_key(name), self.node_id, px=int(self.timeout * 1000), get=True)
        except self._errors as exc:
            self._lost(exc)
            return None
        return before if before != self.node_id else None

    def release(self, name: str) -> None:
        """This node no longer holds ``name``: the next node to use it owns it."""
        if name not in self.owned:
            return
        self.owned.discard(name)
        if self._healthy:
            try:
                self._unclaim(keys=[self._own_key(name)], args=[self.node_id])
            except self._errors as exc:
                self._lost(exc)

    # -- operations --
    def status(self) -> list[dict]:
        """Every live node's heartbeat, with its endpoints by protocol and heartbeat age."""
        return read_status(self.redis, self._prefix)


def read_status(client, prefix: str) -> list[dict]:
    """The live nodes under ``prefix`` (``convergence cluster status``)."""
    now = time.time()
    nodes = []
    for key in sorted(client.scan_iter(f"{prefix}node:*")):
        raw = client.get(key)
        if raw is None:
            continue
        beat = json.loads(raw)
        beat["age"] = now - beat.get("beat", now)
        entries = client.hvals(f"{prefix}dir:{beat['node']}")
        beat["directory"] = len(entries)
        beat["endpoints"] = {}
        for entry in entries:
            protocol = json.loads(entry)[0]
            beat["endpoints"][protocol] = beat["endpoints"].get(protocol, 0) + 1
        nodes.append(beat)
    return nodes


def status_lines(nodes: list[dict]) -> list[str]:
    """``convergence cluster status``: one line per node, then the totals."""
    lines = []
    for beat in nodes:
        counts = ", ".join(f"{n} {protocol}" for protocol, n in sorted(beat.get("endpoints", {}).items()))
        lines.append(f"{beat['node']}  pid {beat.get('pid', '?')} on {beat.get('host', '?')}  "
                     f"heartbeat {beat['age']:.1f} s ago  up {beat.get('beat', 0) - beat.get('started', 0):.0f} s  "
                     f"endpoints: {counts or 'none'}")
    total = sum(beat["directory"] for beat in nodes)
    lines.append(f"{len(nodes)} nodes, {total} endpoints")
    return lines


def connect(config):
    """A Redis client for the ``[cluster]`` of ``config`` (the CLI's)."""
    import redis

    return redis.Redis.from_url(config["cluster"]["redis"], socket_timeout=5, socket_connect_timeout=5,
                                decode_responses=True)
