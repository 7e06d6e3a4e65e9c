"""Stream Management (XEP-0198 v1.6, ``urn:xmpp:sm:3``) for c2s sessions — sans-IO: no gevent,
socket or ssl.

:class:`StreamManagement` is one session's state (§4): ``handled``, the stanzas received from the
client (the ``h`` we acknowledge), and the stanzas sent to it that it has not acknowledged yet,
oldest first, each remembered with its sequence number, its serialized bytes and the core message it
carries (if any). Counters run modulo 2**32 (§4: "h … MUST wrap back to zero"). :class:`Resumptions`
is a service's table of resumable sessions by stream id (§5), each id bound to the account that
enabled it.

The nonzas (§3–§5), handled by :func:`element` for ``c2s.Session``:

- ``<enable/>`` after resource binding (§3): ``<enabled/>``; with ``resume='true'`` also an ``id``
  and ``max``: ``[xmpp] resume_timeout`` seconds, or the client's own ``max`` if shorter. Before binding, or a second time:
  ``<failed><unexpected-request/></failed>``.
- ``<r/>`` → ``<a h=handled/>``; ``<a h=…/>`` drops what it acknowledges. An ``h`` acknowledging more
  than was sent is an ``undefined-condition`` stream error (§4, ``handled-count-too-high``).
  The server asks by itself (:meth:`StreamManagement.track`): with the first unacknowledged stanza
  when no request is out, after every ``REQUEST_EVERY`` stanzas while one is, after each ``<a/>``
  that leaves stanzas unacknowledged, and at the keep-alive (``c2s.Session.idle``).
- ``<resume previd h/>`` after SASL and before binding, on a new stream (§5): the resumable
  session of that id — of the same account, not expired — is taken over: ``<resumed previd h/>``,
  then every stanza the client's ``h`` does not acknowledge is sent again. Anything else is
  ``<failed h?><item-not-found/></failed>``; the client may bind afresh.

In a cluster (docs/cluster.md) an id starts with the issuing node's tag and a '.'; a client that
resumes on another node is resumed there: that node asks the one holding the session for it
(``sm_cluster.py``, through ``service.moves``), which gives it up (:func:`detach`) and sends its
state over. When that node cannot be reached the client gets ``item-not-found``, and the node is
told (:func:`ended_elsewhere`) if it comes back in time: it ends the old session at once, so that
its unacknowledged messages reach the fresh session without waiting for ``resume_timeout``.

When the connection of a session with resumption enabled dies (not a clean close, not a stream
error of ours) the session **hibernates** (:func:`hibernate`): it stays bound and in the presence
hub (contacts still see it available, §5 "the server … SHOULD NOT broadcast unavailable presence"),
what is sent to it is queued with the unacknowledged stanzas, and a timer of
``resume_timeout`` seconds runs (``service.later``). When a session ends for good — timed out, a
clean close, a stream error, ``sm_max_unacked`` unacknowledged stanzas (``resource-constraint``) —
the core messages among its unacknowledged stanzas go back to the router (``Router.returned``:
another resource or the offline store), so nothing acknowledged by the server is lost; a resumed
stream gets them again instead, so nothing is duplicated either.
"""
from __future__ import annotations

import dataclasses
import logging
import secrets
import xml.etree.ElementTree as ET

from .stanzas import STANZA_ERROR_NS, tag
from .stream import as_bytes, serialize, stream_error

log = logging.getLogger(__name__)

SM_NS = "urn:xmpp:sm:3"
#: cluster casts (``on_cluster_cast``): a session of this node was resumed on another; the offline
#: store has an account's given-back messages
ENDED, BACKLOG = "xmpp.sm-ended", "xmpp.sm-backlog"
MODULUS = 1 << 32  # §4: h is an unsigned 32-bit integer that wraps
#: while a <r/> is unanswered, another goes out after this many more stanzas (a lost request
#: does not stop the acknowledgements)
REQUEST_EVERY = 5
FEATURE = tag("sm", SM_NS)
_R = serialize(ET.Element(tag("r", SM_NS)))


class AckError(ValueError):
    """An ``h`` that acknowledges more stanzas than were sent (§4 ``handled-count-too-high``)."""


class StreamManagement:
    """One session's XEP-0198 counters and unacknowledged stanzas (§4)."""

    __slots__ = ("id", "resumable", "max_unacked", "handled", "sent", "unacked", "requested",
                 "since_request", "hibernated", "timer", "timeout")

    def __init__(self, max_unacked: int, id: str | None = None):
        self.id = id  # the resumption id (§5), or None: not resumable
        self.resumable = id is not None
        self.max_unacked = max_unacked
        self.handled = 0  # stanzas received from the peer, mod 2**32
        self.sent = 0  # stanzas sent to the peer, mod 2**32 (the last one's sequence number)
        #: (sequence number, bytes, core message or None), oldest first (a list, not a deque:
        #: an idle session's empty queue costs 56 bytes, not 600)
        self.unacked: list[tuple] = []
        self.requested = False  # a <r/> is out, unanswered
        self.since_request = 0  # stanzas sent since that <r/>
        self.hibernated = False  # the connection died; waiting for a resumption
        self.timer = None  # the hibernation timer (``service.later``'s handle)
        self.timeout = 0.0  # seconds it may hibernate (the ``max`` of <enabled/>)

    def received(self) -> None:
        """A stanza from the peer was handled (§4: counted whatever its outcome)."""
        self.handled = (self.handled + 1) % MODULUS

    @property
    def full(self) -> bool:
        return len(self.unacked) >= self.max_unacked

    def track(self, data: bytes, message=None) -> bool:
        """Remember a stanza sent; True if an ``<r/>`` should go out after it."""
        self.sent = (self.sent + 1) % MODULUS
        self.unacked.append((self.sent, data, message))
        if not self.requested:
            self.requested, self.since_request = True, 0
            return True
        self.since_request += 1
        if self.since_request >= REQUEST_EVERY:
            self.since_request = 0
            return True
        return False

    def acknowledge(self, h: int) -> list:
        """The peer handled ``h`` stanzas in all (mod 2**32): drop those from the unacknowledged
        queue and return them, oldest first. Raises AckError if ``h`` counts more than were sent."""
        if not 0 <= h < MODULUS:
            raise AckError(f"h={h} is not an unsigned 32-bit integer")
        acked = (self.sent - len(self.unacked)) % MODULUS  # the h of the last acknowledgement
        count = (h - acked) % MODULUS
        if count > len(self.unacked):
            raise AckError(f"h={h} acknowledges {count} stanzas; {len(self.unacked)} were "
                           f"unacknowledged (the last sent was number {self.sent})")
        done = self.unacked[:count]
        del self.unacked[:count]
        self.requested = False
        return done

    def messages(self) -> list:
        """Take the core messages of the unacknowledged stanzas, oldest first (the session ended:
        they go back to the router). A message that came from the offline store loses its stamp:
        its row was deleted once this session held it, and it is stored anew."""
        found = [entry[2] for entry in self.unacked if entry[2] is not None]
        self.unacked.clear()
        return [m if m.stamp is None else dataclasses.replace(m, stamp=None) for m in found]


class Resumptions:
    """A service's resumable sessions by resumption id (§5); an id is only good for the account
    that enabled it, and only while the session lives."""

    def __init__(self):
        self._sessions: dict[str, object] = {}

    def add(self, session, node: str | None = None) -> str:
        """A new id for ``session``: 144 random bits (not guessable), after ``node.`` (the
        cluster node's tag) in a cluster, so that another node can tell whose it is."""
        token = secrets.token_urlsafe(18)  # (its alphabet has no '.')
        if node is not None:
            token = f"{node}.{token}"
        self._sessions[token] = session
        return token

    def find(self, token: str, username: str):
        session = self._sessions.get(token)
        return session if session is not None and session.username == username else None

    def move(self, token: str, session) -> None:
        """The id now names ``session`` (which resumed it: it may be resumed again, §5)."""
        self._sessions[token] = session

    def discard(self, token: str | None, session) -> None:
        if token is not None and self._sessions.get(token) is session:
            del self._sessions[token]

    def __len__(self) -> int:
        return len(self._sessions)

    def hibernated(self) -> int:
        """Sessions waiting for their client to resume them (metrics)."""
        return sum(1 for s in self._sessions.values() if s.sm is not None and s.sm.hibernated)


# ---- the session's side (c2s.Session calls these) --------------------------------------------

def features(element: ET.Element) -> None:
    """Post-authentication stream features: ``<sm xmlns='urn:xmpp:sm:3'/>`` (§3)."""
    ET.SubElement(element, FEATURE)


def element(session, nonza: ET.Element) -> None:
    """A ``urn:xmpp:sm:3`` element from the client."""
    local = nonza.tag.rpartition("}")[2]
    sm = session.sm
    if local == "r" and sm is not None:
        _nonza(session, "a", h=str(sm.handled))
    elif local == "a" and sm is not None:
        try:
            _acknowledged(session, h_of(nonza))
        except (AckError, ValueError) as exc:
            session.close("undefined-condition", f"handled-count-too-high: {exc}")
    elif local == "enable":
        _enable(session, nonza)
    elif local == "resume":
        _resume(session, nonza)
    elif local in ("r", "a"):
        session.close("unsupported-stanza-type", "stream management is not enabled (XEP-0198 §3)")
    else:
        session.close("unsupported-stanza-type", f"unknown stream management element <{local}/>")


def send(session, stanza: ET.Element | bytes, message=None) -> bool:
    """Send a stanza on a session with stream management: remembered until acknowledged, queued
    only while the session is hibernated. At ``sm_max_unacked`` the session ends (the live
    stream with ``resource-constraint``), its messages go back, and False says this one was not
    taken."""
    sm = session.sm
    if sm.full:
        if sm.hibernated:
            expire(session)
        else:
            session.close("resource-constraint", f"{sm.max_unacked} stanzas not acknowledged")
        return False
    data = as_bytes(stanza)
    link = session.link
    request = sm.track(data, message)
    if link.closed:
        return True  # hibernated (or dying: the transport's connection_lost comes next)
    link.send(data)
    if request:
        link.send(_R)
    return True


def request(session) -> None:
    """Ask for an acknowledgement if stanzas are unacknowledged (the keep-alive timer)."""
    sm = session.sm
    if sm is not None and sm.unacked and not session.link.closed:
        sm.requested, sm.since_request = True, 0
        session.link.send(_R)


def handed_on(session) -> bool:
    """Whether what the session took is safe from its connection: with stream management it is
    held until acknowledged (and resent or given back), whether or not the socket took it."""
    return session.sm is not None and not session.closed


def refuses(session, message) -> bool:
    """A hibernated session takes no message from the offline store: it stays stored, in order,
    and goes out when the stream is resumed (or at the next login)."""
    return session.sm is not None and session.sm.hibernated and message.stamp is not None


def resumable(session) -> bool:
    """Whether the session would hibernate if its connection died now."""
    sm = session.sm
    return sm is not None and sm.resumable and not sm.hibernated and session.address is not None


def hibernate(session) -> bool:
    """The session's connection died: keep the session for ``resume_timeout`` seconds if it
    enabled resumption and is not already hibernated or ending; True if it now waits."""
    if not resumable(session):
        return False
    sm = session.sm
    sm.hibernated = True
    sm.requested = False
    service = session.service
    if service.later is not None:
        sm.timer = service.later(sm.timeout, lambda: expire(session))
    return True


def expire(session) -> None:
    """A hibernated session was not resumed in time (or overflowed): it ends for good, and its
    unacknowledged messages go back to the router."""
    sm = session.sm
    if sm is None or not sm.hibernated or session.closed:
        return
    sm.timer = None  # this may run in the timer itself: nothing to cancel
    sm.resumable = False
    session.connection_lost()  # leaves the hub, then gives back (its link is closed)


def forget(service, session) -> None:
    """The ``closed`` event: a session ended for good; its resumption id is void."""
    sm = session.sm
    if sm is not None:
        sm.resumable = False
        service.resumptions.discard(sm.id, session)
        cancel(sm)


def register_iq(router) -> None:
    router.on("closed", forget)


# ---- in a cluster: a resumption id another node issued ---------------------------------------

def ended_elsewhere(service, data: dict) -> None:
    """``ENDED`` from another node (``on_cluster_cast``): the session of that id, if it is here
    and of that user (who authenticated on the other node), ends now — hibernated or with a
    connection that has not noticed it is dead (not resumable: no conflict error goes to it,
    its messages go back at once) — then, once they are stored (``Router.wait_for_given_back``:
    the connection's own greenlet may be the one giving them back), the nodes with sessions of the
    account, the asking one among them, deliver the offline store to theirs (``BACKLOG``)."""
    previd, username, asking = data["id"], data["user"], data["node"]
    if not all(isinstance(v, str) for v in (previd, username, asking)):
        raise ValueError("a resumption id, a user and a node are strings")
    session = service.resumptions.find(previd, username)
    if session is None or session.closed or session.sm is None:
        return
    account, sm = session.account, session.sm
    log.info("%s resumed on another node (%s, XEP-0198 §5): its session here ends now",
             session.address, asking)
    if sm.hibernated:
        expire(session)
    else:
        sm.resumable = False
        cancel(sm)
        session.link.close("resumed on another node (XEP-0198 §5)")
        session.connection_lost()
    tell_backlog(service, account, asking)


def tell_backlog(service, account, asking: str) -> None:
    """A session of ``account`` ended for good after a client tried to resume it on node
    ``asking``: once its messages are stored (``Router.wait_for_given_back``: the connection's
    own greenlet may be the one giving them back), the nodes with sessions of the account, and
    ``asking``, deliver the offline store to theirs (``BACKLOG``)."""
    core = service.core
    if core.cluster is not None and service.later is not None:
        def told():  # once the messages are given back (stored), whichever greenlet gives them
            core.router.wait_for_given_back(account)
            core.cluster.cast(core.cluster.nodes_of(account) | {asking}, BACKLOG, {"account": account.jid})
        service.later(0, told)


def backlog(service, data: dict) -> None:
    """``BACKLOG``: an ended session's messages were given back on another node: the available
    sessions of the account here get what is stored now (in a greenlet of its own: the router
    waits for each to be written)."""
    account = data["account"]
    if not isinstance(account, str):
        raise ValueError("an account is a string")
    core = service.core
    address = core.address(account.partition("@")[0])
    if address is not None and any(s.available for s in service.sessions(address)) \
            and service.later is not None:
        service.later(0, lambda: core.router.deliver_stored(address))


# ---- internals ---------------------------------------------------------------------------------

def _nonza(session, local: str, *children: ET.Element, **attrs: str) -> None:
    element = ET.Element(tag(local, SM_NS), attrs)
    element.extend(children)
    session.link.send(serialize(element))


def failed(session, condition: str, h: int | None = None) -> None:
    """§3, §5: ``<failed/>`` with a stanza error condition (and the ``h`` we handled, if known)."""
    attrs = {} if h is None else {"h": str(h)}
    _nonza(session, "failed", ET.Element(tag(condition, STANZA_ERROR_NS)), **attrs)


def h_of(nonza: ET.Element) -> int:
    text = nonza.get("h", "")
    if not text.isdigit() or len(text) > 10:  # (2**32 has 10 digits)
        raise ValueError(f"h={text!r} is not a number")
    return int(text)


def _acknowledged(session, h: int) -> None:
    sm = session.sm
    sm.acknowledge(h)
    if sm.unacked:  # stanzas sent after the request was answered: ask again
        request(session)


def _enable(session, nonza: ET.Element) -> None:
    """§3: enable after binding, once per session."""
    if session.address is None or session.sm is not None:
        return failed(session, "unexpected-request")
    settings = session.service.settings
    resume = nonza.get("resume") in ("true", "1")
    sm = StreamManagement(settings["sm_max_unacked"])
    attrs = {}
    if resume:
        cluster = session.service.core.cluster
        node = cluster.tag if cluster is not None else None
        sm.id = session.service.resumptions.add(session, node)
        sm.resumable = True
        # §3: the client's ``max`` is its preference; ours, resume_timeout, is the limit
        wanted = nonza.get("max", "")
        sm.timeout = settings["resume_timeout"]
        if wanted.isdigit() and len(wanted) < 10 and 0 < int(wanted) < sm.timeout:
            sm.timeout = float(wanted)
        attrs = {"id": sm.id, "resume": "true", "max": str(max(1, int(sm.timeout)))}
    session.sm = sm
    _nonza(session, "enabled", **attrs)


def _resume(session, nonza: ET.Element) -> None:
    """§5: take over the hibernated (or still connected) session of ``previd``, here or, in a
    cluster, on the node that holds it (``service.moves``)."""
    service = session.service
    old = None
    if session.username is not None and session.address is None and session.sm is None:
        previd = nonza.get("previd", "")
        old = service.resumptions.find(previd, session.username)
        if old is None and service.moves is not None and service.moves.resume(session, previd, nonza):
            return  # resumed from another node, or refused by it
    if old is None or old.closed or old.sm is None or not old.sm.resumable:
        return failed(session, "item-not-found")
    try:
        old.sm.acknowledge(h_of(nonza))
    except (AckError, ValueError) as exc:
        failed(session, "undefined-condition", old.sm.handled)
        return session.close("undefined-condition", f"handled-count-too-high: {exc}")
    cancel(old.sm)
    _take_over(session, old)
    resumed(session)


def resumed(session) -> None:
    """§5: the session is this stream's now: ``<resumed/>``, everything not acknowledged again,
    in order, then what was stored meanwhile."""
    sm, service = session.sm, session.service
    sm.hibernated = sm.requested = False
    _nonza(session, "resumed", previd=sm.id, h=str(sm.handled))
    link = session.link
    for _, data, _ in sm.unacked:  # §5: everything not acknowledged, again, in order
        link.send(data)
    if sm.unacked:
        request(session)
    if session.csi is not None:  # XEP-0352 §5.2: CSI state is not restored on resumption
        session.csi.activate(session)
    if session.available:  # what was stored meanwhile (refused while hibernated, XEP-0160)
        service.core.router.deliver_stored(session.account)


def detach(session):
    """The session leaves this process (resumed on another cluster node, ``sm_cluster.py``):
    its timer stops, its id is void here, what CSI held is sent (and so tracked, XEP-0352 §5.2),
    a connection that has not noticed it is dead ends with ``conflict`` (§5), and the session
    becomes inert — closed, what is sent to it waiting in ``moving`` (messages from the offline
    store stay there), and without its stream management state, which is returned (None if the
    session ended on the way: an overflow)."""
    sm = session.sm
    cancel(sm)
    session.service.resumptions.discard(sm.id, session)
    if session.csi is not None:
        session.csi.activate(session)
    if session.closed:
        return None
    link = session.link
    if not link.closed:
        link.send(stream_error("conflict", "replaced by a stream resumed on another node (XEP-0198 §5)"))
        link.close_after_flush("resumed on another node")
    session.closed = True  # its connection's end does nothing more
    session.sm = None
    session.moving = []  # what is sent to it until it is the other node's (``sm_cluster``)
    return sm


def reattach(session, sm: StreamManagement) -> None:
    """The other node did not take the session :func:`detach` made inert: it ends here for good,
    as a hibernated session that timed out does (``unavailable`` to contacts, its messages back,
    those that came while it was moving after the others)."""
    sm.unacked += [(0, b"", m) for m in session.moving if not isinstance(m, ET.Element)]
    session.closed, session.moving = False, None
    session.sm = sm
    sm.hibernated, sm.resumable = True, False
    expire(session)


def _take_over(session, old) -> None:
    """Move the bound session's state from ``old`` (the dead or replaced stream) to ``session``
    (the new one), which takes its place in the service's tables and the presence hub; ``old``
    is left closed, owning nothing: its connection (still open when the client resumed before
    the server noticed the old one was dead) ends with ``conflict`` (§5)."""
    kind = type(session)  # its slots are the session's state, but for its connection's (a
    # subclass, the WebSocket session, may add none: the slots of every class in its MRO count)
    for slot in {name for cls in kind.__mro__ for name in getattr(cls, "__slots__", ())}:
        if slot not in kind.CONNECTION_STATE and hasattr(old, slot):
            setattr(session, slot, getattr(old, slot))
    service = session.service
    old.closed = True  # its connection's end does nothing more
    old.sm = old.csi = None
    service.disconnected(old)
    if not old.link.closed:
        old.link.send(stream_error("conflict", "replaced by a resumed stream (XEP-0198 §5)"))
        old.link.close_after_flush("replaced by a resumed stream")
    service.bind(session)
    last = service.last_presence.get(session.address)
    if last is not None and last[0] is old:
        service.last_presence[session.address] = (session, last[1])
    service.core.presence.login(session)  # replaces ``old`` as the endpoint of that resource
    service.resumptions.move(session.sm.id, session)
    service.iq.emit("resumed", service, old, session)


def cancel(sm: StreamManagement) -> None:
    """Stop the hibernation timer, if one runs."""
    if sm.timer is not None:
        stop, sm.timer = sm.timer, None
        stop()
