"""XEP-0198 resumption across cluster nodes (§5; docs/cluster.md, docs/xmpp.md): a client whose
connection died may resume its session on any worker or node, not only on the one that issued
its resumption id.

The node the client resumes on (``resume``) does not have the session. It **asks** the node that
holds it (``core.cluster.ask``, a cast ``xmpp.sm-take`` answered over the hand-off path): first
the node the id names (its tag before the '.'), then any other node with an XMPP session of the
account in the directory (a session resumed once already moved away from the node that issued its
id). The holder (``take``) checks the id is live and of that user, drops what the client's ``h``
acknowledges (an ``h`` beyond what was sent is refused: ``undefined-condition``, as on one node),
makes the session inert (``stream_management.detach``: what comes for it meanwhile is kept, and
sent on to the new node once it holds the session — messages as hand-offs, other stanzas as
``FORWARD`` casts) and answers with its state: full JID, the server's ``h``, the stanzas not
acknowledged (as text, with the messages they carry), presence and priority with the last presence stanza,
whether it fetched the roster or the block list, carbons, directed presence, entity capabilities,
the chat rooms it is in (whose node's loss the new node then tells it of, XEP-0045 §11.2).
The asking node installs it (``_install``: bound, in the presence hub and the directory, the id
now its own) and answers ``<resumed/>``, resends what is unacknowledged, then the offline store.

**Exactly once.** The answer is handed to the asking node as a message is, with its claim
(core/cluster.py, ``ask``/``answer``): either the asking node takes it — the session is its own
from then on; the holder forgets it without an ``unavailable`` (``Cluster.moved``: the address
moves to the other node in every directory) — or the holder learns that it was not taken (the
asking node gave up waiting, is gone, or Redis failed) and ends the session itself, as one that
timed out (``stream_management.reattach``): contacts see it go, its unacknowledged messages go to
the offline store and the account's sessions get them (``BACKLOG``). The client, which got no
answer in time, was told ``item-not-found`` and binds afresh. A holder that is dead or silent:
``item-not-found``, and the holder, if it comes back in time, ends the session at once
(``ENDED``).
"""
from __future__ import annotations

import dataclasses
import logging
import xml.etree.ElementTree as ET

from convergence import Address, AddressError, Presence, RoutingError
from convergence.cluster import check_ask, decode_message, encode_message, presence_fields

from . import caps, stream_management
from .stream_management import ENDED, MODULUS, AckError, StreamManagement

log = logging.getLogger(__name__)

#: the cast (``ask``) that asks the node holding a session to give it up; the cast of a stanza
#: sent to it while it moved (presence, IQs, room stanzas; messages are handed off instead)
TAKE, FORWARD = "xmpp.sm-take", "xmpp.sm-forward"


class SessionMoves:
    """One core's XMPP sessions moving between cluster nodes (``C2SService.moves``)."""

    def __init__(self, service):
        self.service = service

    # ---- the node the client resumes on ------------------------------------------------------
    def resume(self, session, previd: str, nonza: ET.Element) -> bool:
        """``<resume previd h/>`` for a session this node does not have: True when another node
        gave it up and the stream is resumed here, or refused the ``h`` (the stream ended);
        False for ``item-not-found``."""
        cluster = self.service.core.cluster
        if cluster is None:
            return False
        try:
            h = stream_management.h_of(nonza)
        except ValueError:
            return False
        silent = []
        for node in self._holders(previd, session.username):
            answer = cluster.ask(node, TAKE, {"id": previd, "user": session.username, "h": h})
            if answer is None:
                silent.append(node)
            elif "jid" in answer:
                gone = session.closed  # its stream ended while it waited (the server stops, say)
                if gone:
                    session.closed = False
                    self.service.connected(session)
                try:
                    self._install(session, previd, answer, node)
                except (KeyError, TypeError, ValueError, AddressError, ET.ParseError):
                    log.exception("node %s gave up the session of %s with a state that is not one",
                                  node, previd)
                    return False
                if gone:  # the session is this node's: it ends here, as one not resumed in time
                    session.sm.hibernated = True
                    stream_management.expire(session)
                else:
                    stream_management.resumed(session)
                return True
            elif "h" in answer:  # the holder refused the client's h (§4 handled-count-too-high)
                stream_management.failed(session, "undefined-condition", answer["h"])
                session.close("undefined-condition", f"handled-count-too-high: {answer.get('text')}")
                return True
        if silent:  # the holder, if it hears of it, ends the session at once
            cluster.cast(set(silent), ENDED, {"id": previd, "user": session.username, "node": cluster.node_id})
        return False

    def _holders(self, previd: str, username: str) -> list[str]:
        """The nodes that may hold the session of ``previd``: the one its tag names, then the
        other nodes with an XMPP session of the account (in the directory: a hibernated session
        stays there)."""
        core = self.service.core
        cluster = core.cluster
        tag, dot, _ = previd.partition(".")
        if not dot:
            return []
        nodes = []
        named = cluster.node_of_tag(tag)
        if named is not None and named != cluster.node_id:
            nodes.append(named)
        try:
            account = core.address(username)
        except AddressError:
            return nodes
        for endpoint in core.presence.endpoints(account):
            if getattr(endpoint, "remote", False) and endpoint.origin_protocol == "xmpp" \
                    and endpoint.node not in nodes:
                nodes.append(endpoint.node)
        return nodes

    def _install(self, session, previd: str, state: dict, node: str) -> None:
        """The session ``state`` (from ``_state``) becomes this stream's: bound, in the presence
        hub (which announces it in the directory), its id this node's."""
        service = self.service
        address = Address.parse(state["jid"])
        if address.bare != service.core.address(session.username) or not address.resource:
            raise ValueError(f"node {node} gave {address} for a session of {session.username}")
        sm = StreamManagement(service.settings["sm_max_unacked"], previd)
        sm.handled, sm.sent = int(state["handled"]) % MODULUS, int(state["sent"]) % MODULUS
        sm.timeout = float(state["timeout"])
        sm.unacked = [(int(n) % MODULUS, text.encode(), None if m is None else decode_message(m))
                      for n, text, m in state["unacked"]]
        last = ET.fromstring(state["last"]) if state["last"] else None
        directed = {Address.parse(jid) for jid in state["directed"]}
        show, status, priority = state["presence"][1:]
        presence = Presence(bool(state["presence"][0]), show, status, int(priority))
        known, rooms = state["caps"], state["rooms"]
        known = None if known is None else (str(known[0]), str(known[1]), frozenset(known[2]))
        if not isinstance(rooms, list) or not all(isinstance(r, list) and len(r) == 3 for r in rooms):
            raise ValueError("rooms are [node, room, occupant] lists")
        rooms = [(str(n), str(room), Address.parse(occupant)) for n, room, occupant in rooms]
        # all read: the session is this stream's from here on
        session.account, session.address = address.bare, address
        session.presence, session.available = presence, bool(state["available"])
        session.interested, session.carbons = bool(state["interested"]), bool(state["carbons"])
        session.directed = directed
        session.sm = sm
        other = service.session(address)
        if other is not None:  # a stale session with that resource here: replaced (§5)
            other.close("conflict", "replaced by a resumed stream (XEP-0198 §5)")
        service.bind(session)
        if last is not None:
            service.last_presence[address] = (session, last)
        if known is not None:
            service.caps.sessions[address] = known
        if state["blocklist"]:
            service.blocking.interested(session)
        if service.muc is not None:
            service.muc.owners.arrived(address, rooms)
        shown = service.shown.get(address.bare)  # shown as another node's endpoint until now: a
        if shown is not None and shown.pop(address, None) is not None and not shown:  # session
            del service.shown[address.bare]  # here shows its own presence (presence.account_changed)
        service.core.presence.login(session)
        service.resumptions.move(previd, session)
        log.info("%s resumed here from node %s (XEP-0198 §5): %d stanzas unacknowledged",
                 address, node, len(sm.unacked))

    # ---- the node that holds the session ----------------------------------------------------
    def take(self, data: dict) -> None:
        """``TAKE`` from another node (``on_cluster_cast``): give the session up if it is here,
        live and of that user; answered from a greenlet of its own (an answer waits for its
        confirmation, and this runs in the cluster's receiving loop)."""
        previd, username, h, ask = data["id"], data["user"], data["h"], data["ask"]
        check_ask(ask)
        if not (isinstance(previd, str) and isinstance(username, str) and isinstance(h, int)):
            raise ValueError("a resumption id, a user and an h")
        service = self.service
        if service.later is None:
            return
        session = service.resumptions.find(previd, username)
        sm = session.sm if session is not None and not session.closed else None
        if sm is None or not sm.resumable:
            return self._answer(ask, {"found": False})
        try:
            sm.acknowledge(h)
        except AckError as exc:
            return self._answer(ask, {"h": sm.handled, "text": str(exc)})
        account, address = session.account, session.address
        if stream_management.detach(session) is None:  # ended on the way (an overflow)
            return self._answer(ask, {"found": False})
        state = self._state(session, sm)
        log.info("%s is being resumed on node %s (XEP-0198 §5): handing it over", address, ask["node"])
        service.later(0, lambda: self._hand(session, sm, state, ask, account))

    def _forward(self, address: Address, node: str, held: list) -> None:
        """What came for the session while it moved, in order, to ``node``, which has it now:
        stanzas cast (``FORWARD``), messages handed off as any message to another node is
        (confirmed; addressed to the session: the account's other resources had theirs), or,
        not taken, stored (``Router.returned``)."""
        cluster, router = self.service.core.cluster, self.service.core.router
        endpoint = self.service.core.presence.endpoint(address)
        for item in held:
            if isinstance(item, ET.Element):
                cluster.cast({node}, FORWARD, {"to": address.jid, "xml": ET.tostring(item, encoding="unicode")})
                continue
            try:
                cluster.hand_off(endpoint, item if item.recipient == address else
                                 dataclasses.replace(item, recipient=address))
            except RoutingError as exc:
                log.info("message %s for %s, which moved to node %s: %s; storing it", item.id,
                         address, node, exc)
                router.returned(item)

    def forwarded(self, data: dict) -> None:
        """``FORWARD``: what was sent to a session while it moved here, now that it is here."""
        session = self.service.session(Address.from_jid(data["to"]))
        stanza = ET.fromstring(data["xml"])
        if session is not None:  # gone meanwhile: lost as with a session that closes
            session.send(stanza)

    def _answer(self, ask: dict, answer: dict) -> None:
        cluster = self.service.core.cluster
        self.service.later(0, lambda: cluster.answer(ask, answer))

    def _state(self, session, sm: StreamManagement) -> dict:
        """What the resuming node needs of ``session`` (detached: ``sm`` is its state), as JSON."""
        service = self.service
        last = service.last_presence.get(session.address)
        known = service.caps.sessions.get(session.address)
        return {"jid": session.address.jid, "handled": sm.handled, "sent": sm.sent, "timeout": sm.timeout,
                "unacked": [[n, data.decode(), None if m is None else encode_message(m)]
                            for n, data, m in sm.unacked],
                "presence": presence_fields(session.presence), "available": session.available,
                "last": ET.tostring(last[1], encoding="unicode") if last and last[0] is session else None,
                "interested": session.interested, "carbons": session.carbons,
                "directed": [jid.jid for jid in session.directed],
                "blocklist": service.blocking.is_interested(session),
                # a query still unanswered is not: the session's next presence asks again
                "caps": None if known is None or known[2] is None else [known[0], known[1], sorted(known[2])],
                "rooms": [] if service.muc is None else service.muc.owners.leaving(session.address)}

    def _hand(self, session, sm: StreamManagement, state: dict, ask: dict, account: Address) -> None:
        """Answer with the state; then the session is the other node's (it moves there in the
        directory, without ``unavailable``), or, not taken, it ends here for good."""
        service, node = self.service, ask["node"]
        cluster = service.core.cluster
        if cluster.answer(ask, state):
            stanzas, session.moving = session.moving, None
            service.unbind(session)
            last = service.last_presence.get(session.address)
            if last is not None and last[0] is session:
                del service.last_presence[session.address]
            caps.gone(service, session)
            service.blocking.closed(session)
            service.disconnected(session)
            cluster.moved(session, node)
            if session.presence.available:  # another node's endpoint now: shown as such
                service.shown.setdefault(session.account, {})[session.address] = session.presence
            log.info("%s moved to node %s", session.address, node)
            self._forward(session.address, node, stanzas)
            return
        log.warning("node %s did not take the session %s: it ends here", node, session.address)
        stream_management.reattach(session, sm)
        stream_management.tell_backlog(service, account, node)
