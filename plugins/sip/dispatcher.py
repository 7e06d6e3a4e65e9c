"""The SIP element: the transaction layer, request dispatch, and the answers it gives itself.

- Reading (RFC 3261 §18.2.1, RFC 3581 §4): ``received``/``rport`` are added to the top Via; answers
  always go back to the source address and port (symmetric response routing, what Kamailio's
  ``force_rport`` does), over the connection the request came on.
- Transactions (§17): server transactions matched per §17.2.3 (branch + sent-by + method, the
  RFC 2543 fallback otherwise) absorb retransmissions; client transactions (§17.1) are matched by
  branch and CSeq method (§17.1.3). :class:`Transactions` keeps both tables; its timers run at
  ``call_at`` (the transport's :class:`Timers`), with the T1/T2/T4 of its ``timing``. The
  registrar, messaging and the proxy (the transaction users) answer through the
  :class:`ServerTransaction` they are handed and send through ``Transactions.send_request``.
- Dispatch (§8.2, §16.3, §16.4): a Route naming this server is removed (loose routing); requests
  for other domains without one get ``403`` (no open relay) except a MESSAGE, which messaging
  takes from an authenticated local user only and routes through the core; REGISTER → registrar, MESSAGE →
  messaging, OPTIONS to the server → ``200`` with Allow/Accept/Supported, calls → proxy;
  Max-Forwards 0 → ``483``; unsupported Require (local) or Proxy-Require (proxied) → ``420``;
  SUBSCRIBE and PUBLISH → the presence agent (RFC 3856, RFC 3903); NOTIFY/REFER → ``405`` with
  Allow; unknown methods → ``501``.
- Errors found by the parser are answered as it says (``400`` naming the problem, ``505``,
  ``416``, ``513`` over ``max_message_size``) or dropped (responses, ACKs). An answer that cannot
  be made is not sent, and logged as one line naming the source, at most one a minute per source
  (:class:`Complaints`): bad input is the sender's problem, and must not flood the log.

No sockets here: flows (``send``, ``reliable``, ``transport``, ``peer``), ``call_at`` and
``read_waiting`` come from :mod:`.transport`, and so do the machine's names (:class:`Names` is
given them). The plugin object (:mod:`.server`) builds these parts and hands each what it uses.
"""
from __future__ import annotations

import itertools
import logging
import os
import re
from collections import Counter, deque
from dataclasses import dataclass
from typing import Iterable

from .message import (Headers, KeepAlive, ParseError, Request, Response, SipUri, Via,
                      make_response, parse_datagram)
from .messaging import ACCEPT
from .transaction import Deliver, Send, SendAck, Terminated, TimedOut, Timing, Transaction

log = logging.getLogger(__name__)

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, MESSAGE, REGISTER, INFO, UPDATE, PRACK, SUBSCRIBE, PUBLISH"
SUPPORTED = ""  # no option tags (§20.37 allows an empty list)
KNOWN_ELSEWHERE = frozenset({"NOTIFY", "REFER"})  # 405, not 501
PROXIED = frozenset({"INVITE", "BYE", "INFO", "UPDATE", "PRACK", "OPTIONS"})
#: methods counted by name (plugins/sip/metrics.py); any other is "other"
METHODS = frozenset({"INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "MESSAGE", "REGISTER", "INFO",
                     "UPDATE", "PRACK", "SUBSCRIBE", "NOTIFY", "PUBLISH", "REFER"})
COOKIE = "z9hG4bK"  # §8.1.1.7
OUR_BRANCH = "z9hG4bK-cv"  # the magic cookie, then our mark: "-cv<loop hash>.<id>" (§16.6 step 8)
NODE_TAG = 8  # characters of a cluster node's tag at the start of a branch's id (``Transactions.tag_with``)
WILDCARDS = ("0.0.0.0", "::", "")  # listen addresses that mean every address of the machine
_RPORT_RE = re.compile(r";\s*+rport\s*+(?=;|$)", re.I)  # an rport asking for its value
COMPLAINT_INTERVAL = 60.0  # seconds: at most one log line per source about input not answered


class Wire:
    """A response as sent: what a server transaction keeps to send again (its ``status`` is
    what the state tables read). Kept instead of the parsed message: a UDP transaction lives
    64*T1 after its answer, and thousands of them are alive at once under load."""

    __slots__ = ("status", "data")

    def __init__(self, response: Response):
        self.status, self.data = response.status, bytes(response)


class ServerTransaction:
    """A request being answered; ``respond``/``send`` go through its §17.2 state machine. Once
    it is answered for good the request is let go (retransmissions only need the answer)."""

    __slots__ = ("layer", "txn", "request", "flow", "key", "scheduled", "context")

    def __init__(self, layer: Transactions, request, flow, key):
        self.layer, self.request, self.flow, self.key = layer, request, flow, key
        self.txn, self.scheduled, self.context = None, None, None

    def respond(self, status: int, reason: str | None = None, headers=(), to_tag: str | None = None
                ) -> Response:
        if to_tag is None and status > 100:
            to_tag = self.layer.to_tag
        response = make_response(self.request, status, reason, to_tag=to_tag, headers=headers)
        self.send(response)
        return response

    def send(self, response: Response) -> None:
        self.layer.counts["answer", response.status // 100] += 1
        self.handle(self.txn.send_response(Wire(response), self.layer.now()))
        if response.status >= 200 and self.context is None:
            self.request = self.txn.request = None

    def unsupported(self, field: str) -> bool:
        """Answer 420 when ``field`` (Require, Proxy-Require) names extensions (§8.2.2.3)."""
        headers = self.request.headers
        if field not in headers:  # the usual case, on every request
            return False
        tags = [tag for value in headers.get_all(field) for tag in value.split(",") if tag.strip()]
        if tags:
            self.respond(420, headers=[("Unsupported", tag.strip()) for tag in tags])
        return bool(tags)

    @property
    def answered(self) -> bool:
        return self.txn.state not in ("trying", "proceeding")

    def handle(self, effects) -> None:
        layer = self.layer
        for effect in effects:
            if isinstance(effect, Send):
                self.flow.send(effect.message.data)
            elif isinstance(effect, Terminated):
                layer.server.pop(self.key, None)
        txn = self.txn
        if txn.kind == "nist" and txn.state == "completed" and self.context is None:
            return layer.keep_answer(self)  # over UDP: only Timer J is left
        layer.schedule(self)


class ClientTransaction:
    """A request we sent (§17.1); each response and a timeout go to ``on_response``. A
    non-INVITE one lets its request go once answered (Timer K only absorbs retransmissions)."""

    __slots__ = ("layer", "txn", "request", "flow", "key", "scheduled", "on_response")

    def __init__(self, layer: Transactions, request, flow, key, on_response):
        self.layer, self.request, self.flow, self.key = layer, request, flow, key
        self.on_response, self.txn, self.scheduled = on_response, None, None

    def handle(self, effects) -> None:
        layer = self.layer
        for effect in effects:
            if isinstance(effect, Send):
                sent = self.flow.send(bytes(effect.message))
                if not sent and self.txn.state in ("calling", "trying"):  # §8.1.3.1
                    self.on_response(make_response(self.request, 503, "Transport Error"))
            elif isinstance(effect, Deliver):
                self.on_response(effect.message)
            elif isinstance(effect, SendAck):
                self.flow.send(bytes(ack_for(self.request, effect.response)))
            elif isinstance(effect, TimedOut):
                self.on_response(make_response(self.request, 408, "Request Timeout"))  # §8.1.3.1
            elif isinstance(effect, Terminated):
                layer.client.pop(self.key, None)
        if self.txn.kind == "nict" and self.txn.state == "completed":  # answered: nothing to
            self.request = self.txn.request = self.txn.last = None  # resend, Timer K absorbs
            self.on_response = None
        layer.schedule(self)


def ack_for(request: Request, response: Response) -> Request:
    """The ACK of a non-2xx final response (§17.1.1.3)."""
    headers = Headers([("Via", request.headers.get("Via")), ("Max-Forwards", "70")])
    for name in ("From", "Call-ID"):
        headers.add(name, request.headers.get(name))
    headers.add("To", response.headers.get("To"))
    headers.add("CSeq", f"{request.cseq.number} ACK")
    for route in request.headers.get_all("Route"):
        headers.add("Route", route)
    return Request("ACK", request.uri, headers)


class Complaints:
    """One log line (and traceback, with ``exc_info``) per source address per ``interval``
    seconds; the lines held back meanwhile are counted in the next. Sources are forgotten once their interval is over; when ``limit``
    sources are remembered (spoofed UDP sources can be many) the others share one entry."""

    def __init__(self, clock, interval: float = COMPLAINT_INTERVAL, limit: int = 1024):
        self.clock, self.interval, self.limit = clock, interval, limit
        self._sources: dict[str, list] = {}  # source → [end of its interval, lines held back]

    def __call__(self, source: str, text: str, exc_info: bool = False) -> None:
        now, sources = self.clock(), self._sources
        if source not in sources and len(sources) >= self.limit:
            self._sources = sources = {key: entry for key, entry in sources.items()
                                       if now < entry[0]}
            if len(sources) >= self.limit:
                source = "other sources"
        entry = sources.get(source)
        if entry is not None and now < entry[0]:
            entry[1] += 1
            return
        held = entry[1] if entry is not None else 0
        sources[source] = [now + self.interval, 0]
        log.warning("SIP: %s%s", text, f" ({held} more from {source} held back)" if held else "",
                    exc_info=exc_info)


def listens_everywhere(settings: dict) -> bool:
    """Whether ``listen`` or ``tls_listen`` is on every address of the machine."""
    return any(address and address[0] in WILDCARDS
               for address in (settings["listen"], settings["tls_listen"]))


@dataclass(frozen=True)
class Names:
    """What this server is called in SIP: ``hosts`` a Request-URI or Route may name to mean it,
    ``ports`` it listens on, and ``host``:``port`` put in its Via and Record-Route."""

    hosts: frozenset[str]
    ports: frozenset
    host: str
    port: int

    @classmethod
    def of(cls, domain: str, settings: dict, machine: Iterable[str] = ()) -> Names:
        """The domain, the aliases, the listening addresses; when listening on all addresses,
        loopback and ``machine`` (the host name and its addresses, looked up by the caller:
        :func:`~.transport.machine_names`). The advertised host is ``advertised_host``, else the
        listen address, or the domain when that is every address."""
        hosts = {domain, *settings["aliases"]}
        for address in (settings["listen"], settings["tls_listen"]):
            if not address:
                continue
            if address[0] in WILDCARDS:
                hosts |= {"127.0.0.1", "localhost", "[::1]", *machine}
            else:
                hosts.add(f"[{address[0]}]" if ":" in address[0] else address[0])
        listen_host, port = settings["listen"]
        host = settings["advertised_host"] or (domain if listen_host in WILDCARDS else listen_host)
        return cls(frozenset(host.lower() for host in hosts),
                   frozenset({port, (settings["tls_listen"] or (None, None))[1]}), host, port)

    def is_ours(self, uri: SipUri) -> bool:
        return uri.host in self.hosts and (uri.port is None or uri.port in self.ports)


class Transactions:
    """The transaction layer (§17) of one server: live transactions by key, their timers, and
    the requests it sends. ``call_at(at, callback, *args)`` runs a callback at a monotonic time;
    ``read_waiting()`` handles what waits on the UDP socket; ``host``:``port`` go in its Vias."""

    def __init__(self, timing: Timing, clock, call_at, read_waiting, host: str, port: int):
        self.timing, self.now, self.call_at = timing, clock.monotonic, call_at
        self.read_waiting, self.host, self.port = read_waiting, host, port
        self.server: dict[tuple, ServerTransaction | bytes] = {}  # bytes: see keep_answer
        self._answered: deque[tuple[float, tuple]] = deque()  # (Timer J, key), oldest first
        self.client: dict[tuple, ClientTransaction] = {}
        #: SIP traffic since start (plugins/sip/metrics.py): ("request", method), ("response",
        #: class) received, ("answer", class) sent, ("retransmission", "received" / "sent")
        self.counts: Counter = Counter()
        self.to_tag = os.urandom(6).hex()  # one tag for the responses this element makes
        self._prefix = os.urandom(4).hex()
        self._ids = itertools.count(1)

    def new_id(self) -> str:
        return f"{self._prefix}{next(self._ids):x}"

    def tag_with(self, node_tag: str) -> None:
        """Begin every id, and so every branch this element makes, with ``node_tag`` (a cluster
        node's, :data:`NODE_TAG` characters): a response that another worker receives names the
        node whose client transaction it answers (:func:`node_tag_of`)."""
        self._prefix = node_tag + self._prefix

    @staticmethod
    def node_tag_of(branch: str | None) -> str | None:
        """The node tag a branch of ours begins its id with (``tag_with``), or None."""
        if not branch or not branch.startswith(OUR_BRANCH) or "." not in branch:
            return None
        return branch.rpartition(".")[2][:NODE_TAG]

    def new_branch(self, loop_hash: str = "") -> str:
        return f"{OUR_BRANCH}{loop_hash}.{self.new_id()}"

    # -- server transactions --
    def absorbed(self, key: tuple, request: Request, flow) -> bool:
        """Whether ``request`` belongs to a live server transaction (a retransmission, or the
        ACK of a non-2xx final response), which then handled it."""
        st = self.server.get(key)
        if st is None:
            return False
        if request.method != "ACK":
            self.counts["retransmission", "received"] += 1
        if isinstance(st, bytes):  # a completed non-INVITE transaction (keep_answer)
            flow.send(st)
        else:
            st.handle(st.txn.on_request(request, self.now()))
        return True

    def serve(self, request: Request, flow, key: tuple) -> ServerTransaction:
        """A new server transaction for ``request``, for the transaction user to answer."""
        st = ServerTransaction(self, request, flow, key)
        st.txn, _ = Transaction.server(request, flow.reliable, self.now(), self.timing)
        self.server[key] = st
        return st

    def invite_of(self, cancel: ServerTransaction) -> ServerTransaction | None:
        """The live INVITE server transaction a CANCEL names (§9.2: same key but the method)."""
        return self.server.get(cancel.key[:-1] + ("INVITE",))

    # -- client transactions --
    def response(self, response: Response, via: Via) -> bool:
        """Whether ``response`` (its top Via: ``via``) matched a client transaction (§17.1.3),
        which then handled it."""
        ct = self.client.get((via.branch, response.cseq.method))
        if ct is None:
            return False
        ct.handle(ct.txn.on_response(response, self.now()))
        return True

    def send_request(self, request: Request, flow, on_response, loop_hash: str = "",
                     branch: str | None = None) -> ClientTransaction:
        """Send ``request`` in a new client transaction; a new Via goes on top unless ``branch``
        names the one already there (CANCEL, §9.1)."""
        if branch is None:
            branch = self.new_branch(loop_hash)
            request.headers.prepend(
                "Via", f"SIP/2.0/{flow.transport} {self.host}:{self.port};branch={branch};rport")
        ct = ClientTransaction(self, request, flow, (branch, request.method), on_response)
        ct.txn, effects = Transaction.client(request, flow.reliable, self.now(), self.timing)
        self.client[ct.key] = ct
        ct.handle(effects)
        return ct

    def cancel(self, ct: ClientTransaction) -> None:
        """CANCEL a pending INVITE we sent (§9.1): same Request-URI, Call-ID, From, To, CSeq
        number, top Via and Route."""
        request = ct.request
        headers = Headers([("Via", request.headers.get("Via")), ("Max-Forwards", "70")])
        for name in ("From", "To", "Call-ID"):
            headers.add(name, request.headers.get(name))
        headers.add("CSeq", f"{request.cseq.number} CANCEL")
        for route in request.headers.get_all("Route"):
            headers.add("Route", route)
        branch = Via.parse(request.headers.get("Via")).branch
        self.send_request(Request("CANCEL", request.uri, headers), ct.flow, lambda response: None,
                          branch=branch)

    # -- timers --
    def keep_answer(self, st: ServerTransaction) -> None:
        """A non-INVITE server transaction over UDP in Completed (§17.2.2) only resends its final
        response to retransmissions until Timer J (64*T1) ends it: it is kept as that response's
        bytes, in the transactions table, and Timer J as a (deadline, key) entry of a queue that
        is in deadline order (every Timer J lasts the same). Thousands of these are alive under
        load; bytes and tuples of strings are not tracked by the garbage collector, so they cost
        no time in its collections (the objects of a live transaction did: a fifth of the CPU)."""
        if self.server.get(st.key) is not st:
            return  # already ended
        self.server[st.key] = st.txn.last.data
        self._answered.append((st.txn.deadline, st.key))
        if len(self._answered) == 1:
            self.call_at(st.txn.deadline, self._end_answered)

    def _end_answered(self) -> None:
        """Timer J of the transactions kept by ``keep_answer``: Terminated."""
        answered, now = self._answered, self.now()
        while answered and answered[0][0] <= now:
            _, key = answered.popleft()
            if isinstance(self.server.get(key), bytes):
                del self.server[key]
        if answered:
            self.call_at(answered[0][0], self._end_answered)

    def schedule(self, entry) -> None:
        """Make sure the transaction's next deadline has a timer."""
        deadline = entry.txn.deadline
        if deadline is not None and (entry.scheduled is None or deadline < entry.scheduled):
            entry.scheduled = deadline
            self.call_at(deadline, self._fire, entry, deadline)

    def _fire(self, entry, at: float) -> None:
        """A transaction's timer. Over UDP, one that waits for the peer first reads what waits on
        the socket: under load the answer may be queued there behind other datagrams, and a
        retransmission (Timer A, E, G) or a timeout (B, F, H) would be wrong (and, resent,
        more load)."""
        if entry.scheduled != at:
            return  # superseded by an earlier timer
        if not entry.flow.reliable and entry.txn.waiting:
            self.read_waiting()
        entry.scheduled = None
        effects = entry.txn.on_timer(self.now())
        if any(isinstance(effect, Send) for effect in effects):  # Timer A, E or G: a resend
            self.counts["retransmission", "sent"] += 1
        entry.handle(effects)


class Dispatcher:
    """What the transport reads, into the transaction layer and on to the transaction user:
    ``register`` (REGISTER), ``message`` (MESSAGE), the ``proxy`` (calls, routed requests, ACKs
    of 2xx, stray responses), ``others`` (method → handler: SUBSCRIBE and PUBLISH); OPTIONS to
    the server, CANCEL and the errors are answered here."""

    def __init__(self, transactions: Transactions, names: Names, max_message_size: int, clock,
                 register, message, proxy, others=None):
        self.transactions, self.names, self.proxy = transactions, names, proxy
        self.max_message_size = max_message_size
        self.complaints = Complaints(clock.monotonic)
        self.register = register
        self.handlers = {"REGISTER": register, "MESSAGE": message,
                         **{method: proxy.route for method in PROXIED}, **(others or {})}
        #: ``elsewhere(response, via, flow)`` for a response no transaction here matched: True when
        #: it took it (in a cluster, the answer to another worker's request); None: no cluster
        self.elsewhere = None

    # -- reading --
    def datagram(self, data: bytes, flow) -> None:
        """One UDP datagram (§18.3): a message, or keep-alive CRLFs (ignored)."""
        try:
            message = parse_datagram(data)
        except ParseError as err:
            return self.refuse(err, flow)
        if isinstance(message, KeepAlive):
            return None
        if len(data) > self.max_message_size:
            if isinstance(message, Request) and message.method != "ACK":
                flow.send(bytes(make_response(message, 513, "Message Too Large")))  # §21.5.8
            return None
        self.receive(message, flow)

    def refuse(self, err: ParseError, flow) -> None:
        """A message the parser refused: answered as it says, or dropped."""
        log.debug("SIP from %s: %s", flow.peer, err)
        if err.drop or "Via" not in err.headers:  # without a Via no answer can be routed
            return
        try:
            answer = bytes(err.response())
        except Exception as exc:  # what the parser kept cannot be sent back: tell, once
            return self.complaints(flow.peer[0], f"cannot answer {err.status} {err.reason!r} "
                                   f"to {flow.key}: {exc}")
        flow.send(answer)

    def receive(self, message, flow) -> None:
        counts = self.transactions.counts
        if isinstance(message, Response):
            counts["response", message.status // 100] += 1
            via = Via.parse(message.headers.get("Via"))
            if not self.transactions.response(message, via) and \
                    (self.elsewhere is None or not self.elsewhere(message, via, flow)):
                self.proxy.stray_response(message, via)  # §16.7 step 2, forwarded statelessly
        else:
            method = message.method
            counts["request", method if method in METHODS else "other"] += 1  # bounded labels
            self._request(message, flow)

    def _request(self, request: Request, flow) -> None:
        headers = request.headers
        top = headers.get("Via")
        via = Via.parse(top)
        host = flow.peer[0]
        if via.host != host or "rport" in via.params:  # §18.2.1, RFC 3581 §4: the value as
            value = _RPORT_RE.sub(f";rport={flow.peer[1]}", top, 1)  # sent, plus what we saw
            headers.pop("Via")
            headers.prepend("Via", f"{value};received={host}")
        method = request.method
        matched = "INVITE" if method == "ACK" else method
        branch = via.branch
        if branch and branch.startswith(COOKIE):  # §17.2.3
            key = (branch, via.host, via.port, matched)
        else:  # RFC 2543 matching, simplified: dialog and CSeq and the top Via as sent
            cseq = request.cseq
            key = (request.call_id, request.from_.tag, cseq.number, top, matched)
        transactions = self.transactions
        if transactions.absorbed(key, request, flow):
            return None
        if method == "ACK":
            return self.proxy.ack(request)  # a 2xx's ACK: a transaction of its own (§17.1.1.3)
        st = transactions.serve(request, flow, key)
        try:
            self._dispatch(st)
        except Exception:  # a bug: its traceback, but not one per datagram of a flood
            self.complaints(host, f"failed to handle {method} {request.uri} from {flow.key}",
                            exc_info=True)
            if not st.answered:
                st.respond(500)

    # -- dispatch --
    def _dispatch(self, st: ServerTransaction) -> None:
        request = st.request
        method = request.method
        if method == "CANCEL":
            return self._cancel(st)
        uri = SipUri.parse(request.uri)
        routed = False
        while True:  # §16.4: our own Route entries go (Record-Route may have put two)
            route = request.headers.get("Route")
            if route is None or not self.proxy.names_us(route):
                break
            request.headers.pop("Route")
            routed = True
        if route is not None or not self.names.is_ours(uri):
            if routed:
                return self.proxy.relay(st)  # in a dialog we record-routed
            if route is not None or method != "MESSAGE":
                return st.respond(403, "Relaying Forbidden")  # no open relay
            # a MESSAGE to another domain: messaging takes it from an authenticated local user
            # only and gives it to the core's router (federation); it is never relayed as SIP
        if method == "REGISTER":
            return self.register(st)
        if method == "OPTIONS" and uri.user is None:
            return st.respond(200, headers=[("Allow", ALLOW), ("Accept", ACCEPT),
                                            ("Supported", SUPPORTED),
                                            ("Allow-Events", "presence")])  # RFC 6665 §8.2.2
        if request.max_forwards == 0:
            return st.respond(483)  # §16.3 step 3
        handler = self.handlers.get(method)
        if handler is not None:
            return handler(st)
        if method in KNOWN_ELSEWHERE:
            return st.respond(405, headers=[("Allow", ALLOW)])
        return st.respond(501)

    def _cancel(self, st: ServerTransaction) -> None:
        """§9.2 / §16.10: 200 to the CANCEL, then cancel the INVITE it names."""
        invite = self.transactions.invite_of(st)
        if invite is None:
            return st.respond(481)
        st.respond(200)
        if not invite.answered:
            if invite.context is not None:
                self.proxy.cancel(invite)
            else:
                invite.respond(487)
