"""Sans-IO SIP transactions (RFC 3261 §17, with RFC 6026's Accepted state for INVITE 2xx).

Rule 1: every state change is a row of ``TRANSITIONS``; the code only looks rows up and performs
their effects. Rule 2: no I/O and no clock: the caller passes ``now`` (seconds) in, sends what comes
out, and calls ``on_timer(now)`` at ``deadline`` — the transport owns sockets and sleeping. Rule 3:
no settings of its own: the timer values T1, T2, T4 come in with each transaction (:class:`Timing`),
so servers with different ``[sip] t1`` share this module.

Messages are opaque objects: requests carry ``method``, responses ``status``. Effects are returned
as :class:`Send` (put this message on the wire), :class:`Deliver` (hand this to the transaction
user), :class:`SendAck` (build and send the ACK for this non-2xx final response, §17.1.1.3),
:class:`TimedOut` (§17.1.1.2/§17.1.2.2: treat as 408; for a server, the ACK never came) and
:class:`Terminated`.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType


@dataclass(frozen=True)
class Timing:
    """The timer values of RFC 3261 §17.1.1.1 and Table 4, in seconds (defaults: the RFC's):
    T1 the round-trip estimate, T2 the longest retransmission interval for non-INVITE requests
    and INVITE responses, T4 the longest time a message stays in the network."""

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0


@dataclass(frozen=True)
class Send:
    message: object


@dataclass(frozen=True)
class Deliver:
    message: object


@dataclass(frozen=True)
class SendAck:
    response: object


@dataclass(frozen=True)
class TimedOut:
    pass


@dataclass(frozen=True)
class Terminated:
    pass


# Events, derived from what arrives: a response's class, a request retransmission, an ACK, a timer.
# (kind, state, event) -> (new state, effects, timers to start)
# effects: "send" the message given, "resend" the last message sent, "deliver" to the TU,
# "ack" (SendAck), "timeout" (TimedOut). Timers: name -> rule in ``_interval``.
TRANSITIONS = MappingProxyType({
    # §17.1.1 client INVITE
    ("ict", "calling", "1xx"): ("proceeding", ("deliver",), ()),
    ("ict", "calling", "2xx"): ("accepted", ("deliver",), ("M",)),
    ("ict", "calling", "3xx-6xx"): ("completed", ("deliver", "ack"), ("D",)),
    ("ict", "calling", "timer A"): ("calling", ("resend",), ("A",)),
    ("ict", "calling", "timer B"): ("terminated", ("timeout",), ()),
    ("ict", "proceeding", "1xx"): ("proceeding", ("deliver",), ()),
    ("ict", "proceeding", "2xx"): ("accepted", ("deliver",), ("M",)),
    ("ict", "proceeding", "3xx-6xx"): ("completed", ("deliver", "ack"), ("D",)),
    ("ict", "accepted", "2xx"): ("accepted", ("deliver",), ()),  # RFC 6026 §8.4: 2xx retransmissions
    ("ict", "accepted", "timer M"): ("terminated", (), ()),
    ("ict", "completed", "3xx-6xx"): ("completed", ("ack",), ()),
    ("ict", "completed", "timer D"): ("terminated", (), ()),
    # §17.1.2 client non-INVITE
    ("nict", "trying", "1xx"): ("proceeding", ("deliver",), ()),
    ("nict", "trying", "final"): ("completed", ("deliver",), ("K",)),
    ("nict", "trying", "timer E"): ("trying", ("resend",), ("E",)),
    ("nict", "trying", "timer F"): ("terminated", ("timeout",), ()),
    ("nict", "proceeding", "1xx"): ("proceeding", ("deliver",), ()),
    ("nict", "proceeding", "final"): ("completed", ("deliver",), ("K",)),
    ("nict", "proceeding", "timer E"): ("proceeding", ("resend",), ("E",)),
    ("nict", "proceeding", "timer F"): ("terminated", ("timeout",), ()),
    ("nict", "completed", "timer K"): ("terminated", (), ()),
    # §17.2.1 server INVITE
    ("ist", "proceeding", "request"): ("proceeding", ("resend",), ()),
    ("ist", "proceeding", "send 1xx"): ("proceeding", ("send",), ()),
    ("ist", "proceeding", "send 2xx"): ("accepted", ("send",), ("L",)),
    ("ist", "proceeding", "send 3xx-6xx"): ("completed", ("send",), ("G", "H")),
    ("ist", "accepted", "send 2xx"): ("accepted", ("send",), ()),  # RFC 6026 §8.7
    ("ist", "accepted", "timer L"): ("terminated", (), ()),
    ("ist", "completed", "request"): ("completed", ("resend",), ()),
    ("ist", "completed", "timer G"): ("completed", ("resend",), ("G",)),
    ("ist", "completed", "timer H"): ("terminated", ("timeout",), ()),
    ("ist", "completed", "ack"): ("confirmed", (), ("I",)),
    ("ist", "confirmed", "timer I"): ("terminated", (), ()),
    # §17.2.2 server non-INVITE
    ("nist", "trying", "send 1xx"): ("proceeding", ("send",), ()),
    ("nist", "trying", "send final"): ("completed", ("send",), ("J",)),
    ("nist", "proceeding", "request"): ("proceeding", ("resend",), ()),
    ("nist", "proceeding", "send 1xx"): ("proceeding", ("send",), ()),
    ("nist", "proceeding", "send final"): ("completed", ("send",), ("J",)),
    ("nist", "completed", "request"): ("completed", ("resend",), ()),
    ("nist", "completed", "timer J"): ("terminated", (), ()),
})

#: (kind, start state) of each transaction kind (§17.1.1.2, §17.1.2.2, §17.2.1, §17.2.2).
START = MappingProxyType({"ict": "calling", "nict": "trying", "ist": "proceeding", "nist": "trying"})
#: Timers started with the transaction: retransmission (unreliable transports only) and timeout.
START_TIMERS = MappingProxyType({"ict": ("A", "B"), "nict": ("E", "F"), "ist": (), "nist": ()})
#: Timers that only run over unreliable transports (§17.1.1.2, §17.1.2.2, §17.2.1).
RETRANSMIT = frozenset({"A", "E", "G"})
#: Timers that keep running in each state; entering a state cancels the others.
STATE_TIMERS = MappingProxyType({
    ("ict", "calling"): frozenset("AB"), ("ict", "proceeding"): frozenset(),
    ("ict", "accepted"): frozenset("M"), ("ict", "completed"): frozenset("D"),
    ("nict", "trying"): frozenset("EF"), ("nict", "proceeding"): frozenset("EF"),
    ("nict", "completed"): frozenset("K"),
    ("ist", "proceeding"): frozenset(), ("ist", "accepted"): frozenset("L"),
    ("ist", "completed"): frozenset("GH"), ("ist", "confirmed"): frozenset("I"),
    ("nist", "trying"): frozenset(), ("nist", "proceeding"): frozenset(),
    ("nist", "completed"): frozenset("J"),
})
#: States that wait for the peer: a response (client), the ACK of a final non-2xx (§17.2.1).
#: A timer firing there retransmits or gives up for want of that message.
WAITING = frozenset({("ict", "calling"), ("ict", "proceeding"), ("nict", "trying"),
                     ("nict", "proceeding"), ("ist", "completed")})


class Transaction:
    """One transaction of ``kind`` ``ict``/``nict`` (client) or ``ist``/``nist`` (server), its
    timers set from ``timing``."""

    def __init__(self, kind: str, request, reliable: bool, now: float, timing: Timing):
        self.kind, self.request, self.reliable, self.timing = kind, request, reliable, timing
        self.state = START[kind]
        self.last = request if kind in ("ict", "nict") else None  # what "resend" sends
        self.timers: dict[str, float] = {}
        self._intervals: dict[str, float] = {}
        self._start(START_TIMERS[kind], now)

    @classmethod
    def client(cls, request, reliable: bool, now: float, timing: Timing
               ) -> tuple[Transaction, list]:
        """A client transaction and the effects of starting it (sending the request)."""
        kind = "ict" if request.method == "INVITE" else "nict"
        return cls(kind, request, reliable, now, timing), [Send(request)]

    @classmethod
    def server(cls, request, reliable: bool, now: float, timing: Timing
               ) -> tuple[Transaction, list]:
        """A server transaction and the effects of starting it (delivering the request)."""
        kind = "ist" if request.method == "INVITE" else "nist"
        return cls(kind, request, reliable, now, timing), [Deliver(request)]

    @property
    def waiting(self) -> bool:
        """Waiting for the peer (:data:`WAITING`): what it sent must be read before a timer."""
        return (self.kind, self.state) in WAITING

    @property
    def deadline(self) -> float | None:
        """When ``on_timer`` must next be called, or None."""
        return min(self.timers.values(), default=None)

    # -- inputs --
    def on_response(self, response, now: float) -> list:
        """A response arrived for this client transaction."""
        return self._fire(self._status_event(response.status), response, now)

    def on_request(self, request, now: float) -> list:
        """A request matched this server transaction: a retransmission, or the ACK (§17.2.1)."""
        return self._fire("ack" if request.method == "ACK" else "request", request, now)

    def send_response(self, response, now: float) -> list:
        """The transaction user answers (server transactions)."""
        return self._fire("send " + self._status_event(response.status), response, now)

    def _status_event(self, status: int) -> str:
        """INVITE transactions tell 2xx from other finals (§17.1.1.2, §17.2.1); others do not."""
        if status < 200:
            return "1xx"
        if self.kind not in ("ict", "ist"):
            return "final"
        return "2xx" if status < 300 else "3xx-6xx"

    def on_timer(self, now: float) -> list:
        """Fire every timer due at ``now``."""
        effects = []
        for name in sorted(n for n, at in self.timers.items() if at <= now):
            if self.timers.get(name, now + 1) <= now:  # an earlier timer may have cancelled it
                del self.timers[name]
                effects += self._fire(f"timer {name}", None, now)
        return effects

    # -- the machine --
    def _fire(self, event: str, message, now: float) -> list:
        row = TRANSITIONS.get((self.kind, self.state, event))
        if row is None:
            return []  # §17: anything else is absorbed (e.g. a retransmission in "trying")
        self.state, actions, timers = row
        effects = []
        for action in actions:
            if action == "send":
                self.last = message
                effects.append(Send(message))
            elif action == "resend" and self.last is not None:
                effects.append(Send(self.last))
            elif action == "deliver":
                effects.append(Deliver(message))
            elif action == "ack":
                effects.append(SendAck(message))
            elif action == "timeout":
                effects.append(TimedOut())
        keep = STATE_TIMERS.get((self.kind, self.state), frozenset())
        self.timers = {name: at for name, at in self.timers.items() if name in keep}
        self._start(timers, now)
        if self.state == "terminated":
            effects.append(Terminated())
        return effects

    def _start(self, names, now: float) -> None:
        for name in names:
            if name in RETRANSMIT and self.reliable:
                continue
            interval = self._interval(name)
            if interval == 0 and name not in RETRANSMIT:
                self._fire(f"timer {name}", None, now)  # zero wait on reliable transports
                continue
            self.timers[name] = now + interval

    def _interval(self, name: str) -> float:
        timing = self.timing
        if name in RETRANSMIT:  # T1, 2*T1, 4*T1 … (A doubles unbounded; E and G cap at T2)
            previous = self._intervals.get(name)
            value = timing.t1 if previous is None else previous * 2
            if name != "A":  # Timer A doubles without bound; E and G stop at T2
                value = min(value, timing.t2)
            if name == "E" and self.state == "proceeding":
                value = timing.t2  # §17.1.2.2: in Proceeding, E fires every T2
            self._intervals[name] = value
            return value
        if name in ("B", "F", "H", "J", "L", "M"):
            return 0 if name == "J" and self.reliable else 64 * timing.t1
        if name == "D":
            return 0 if self.reliable else 32.0
        return 0 if self.reliable else timing.t4  # I, K
