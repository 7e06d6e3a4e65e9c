"""Group chat in a cluster (issue 14, docs/cluster.md "Group chat"): each room lives in one process.

A room's address is a name that one node of the cluster owns (``core.cluster.owner``: claimed in
Redis, expiring with that node's heartbeat). The node that first uses a room claims it and holds
it (``MucService.rooms``) until its last occupant leaves (``release``); any other node hands
what it gets for the room to the owner, over the hand-off path of core/cluster.py:

- ``xmpp.muc.in``: a presence (entering, nick change, leaving, §7.2–§7.14) or IQ (§8–§10,
  XEP-0410 self-ping) from a session here;
- ``xmpp.muc.message``: a message for a room or an occupant (§7.4, §7.5, §7.8), from XMPP, SIP or
  HTTP;

both *handed over* (``core.cluster.hand_over``), in order with this node's other hand-offs, and
confirmed like a message's hand-off: a phone's 200 or the HTTP API's answer means the owner took
the message, and what the owner did not take is answered with an error (``recipient-unavailable``;
SIP and HTTP errors) rather than lost in silence;
- ``xmpp.muc.out``: what the owner sends to an occupant whose session is on another node (its
  presence, the room's messages, IQ answers), cast to that node. Gateway occupants (SIP, HTTP)
  get the room's messages through the router, as in one process.

An occupant's session leaving its node leaves the directory (core/cluster.py): the owner sees its
endpoint go and removes it from the room as it does for a session that closed locally.

**The owner is lost** (killed, cut off from Redis): its rooms go with it; persistent ones are
read back from SQL by the next node that gets a stanza for them, which then owns them. The
sessions here that were in one of its rooms (``elsewhere``, learnt from the self-presence the
owner sent them, §7.2.3 status 110) are told they are out of it — an ``unavailable``
self-presence with status 332, as a MUC service that shuts down sends (XEP-0045 §11.2) — and
rejoin (clients do, as after a restart); the occupants' list starts empty at the new owner.
"""
from __future__ import annotations

import logging
import xml.etree.ElementTree as ET

import gevent
import gevent.queue

from convergence import Address, AddressError, Message, RoutingError
from convergence.cluster import decode_message, encode_message

from .messages import XmppMessage
from .muc import MUC_USER, shutdown_presence
from .stanzas import tag

log = logging.getLogger(__name__)

IN, MESSAGE, OUT = "xmpp.muc.in", "xmpp.muc.message", "xmpp.muc.out"
#: times a room's stanza is handed on at most: ownership that moves while it travels (released by
#: one node, claimed by another) sends it on again, never round for ever
MAX_HOPS = 3
PRESENCE = tag("presence")


class Asker:
    """A session on another node that sent a room an IQ, as the IQ handlers see it."""

    __slots__ = ("address", "muc")

    def __init__(self, muc, address: Address):
        self.muc, self.address = muc, address

    def send(self, element: ET.Element) -> None:
        self.muc.to_occupant(self.address, element)


class RoomOwners:
    """Which node holds each room, for one core's MUC service (``MucService.owners``)."""

    def __init__(self, muc):
        self.muc = muc
        self.core = muc.core
        #: node → (session JID here, room name) → the occupant JID (room@service/nick) it has
        #: in that node's room: the sessions to tell when the node is lost
        self.elsewhere: dict[str, dict[tuple[Address, str], Address]] = {}
        self._gateway = gevent.queue.Queue()  # room messages for SIP/HTTP occupants (``to_gateway``)
        self._sender = None

    def _name(self, room: str) -> str:
        return f"xmpp.muc:{room}@{self.muc.domain}"

    # ---- ownership ----
    def owner(self, room: str) -> str | None:
        """None when this process holds ``room`` (always without a cluster), else the node that
        does. RoutingError ``service-unavailable`` while the cluster cannot say (Redis away)."""
        cluster = self.core.cluster
        if cluster is None:
            return None
        node = cluster.owner(self._name(room))
        if node == cluster.node_id:
            return None
        if room in self.muc.rooms:  # held here until this node could not refresh its claim
            self.muc.moved(room)
        return node

    def release(self, room: str) -> None:
        """``room`` left this process's memory: the next node that uses it owns it."""
        if self.core.cluster is not None:
            self.core.cluster.release(self._name(room))

    # ---- to the owner ----
    def forward(self, node: str, element: ET.Element, hops: int) -> None:
        """A presence or IQ stanza (``from`` set) for a room ``node`` holds, once it took it;
        RoutingError when it did not (the sender gets an error rather than silence)."""
        if hops >= MAX_HOPS:
            raise RoutingError("recipient-unavailable", f"{element.get('to')} moved between nodes")
        self.core.cluster.hand_over(node, IN, {"xml": ET.tostring(element, encoding="unicode"),
                                               "hops": hops + 1})

    def forward_message(self, node: str, message: Message, hops: int) -> str:
        """A message for a room ``node`` holds; its outcome once that node took it."""
        if hops >= MAX_HOPS:
            raise RoutingError("recipient-unavailable", f"{message.recipient.bare} moved between nodes")
        extensions = getattr(message, "extensions", None)
        data = {"message": encode_message(message), "hops": hops + 1,
                "xmpp": None if extensions is None else [ET.tostring(x, encoding="unicode") for x in extensions]}
        return self.core.cluster.hand_over(node, MESSAGE, data)

    # ---- from the owner ----
    def send(self, to: Address, element: ET.Element) -> bool:
        """``element`` to the XMPP session ``to`` on another node; False when it is on none."""
        cluster = self.core.cluster
        endpoint = self.core.presence.endpoint(to) if cluster is not None else None
        if endpoint is None or not getattr(endpoint, "remote", False) or endpoint.origin_protocol != "xmpp":
            return False
        cluster.cast({endpoint.node}, OUT, {"to": str(to), "node": cluster.node_id,
                                            "xml": ET.tostring(element, encoding="unicode")})
        return True

    def to_gateway(self, message: Message) -> None:
        """A room's message for a SIP or HTTP occupant, through the router. In a cluster it may
        go to another node, which confirms it: sent from a greenlet of its own, in order, so the
        room (maybe handling a hand-over from another node) never waits for it."""
        if self.core.cluster is None:
            return self._route(message)
        self._gateway.put(message)
        if self._sender is None:
            self._sender = gevent.spawn(self._send_gateway)

    def _send_gateway(self) -> None:
        while True:
            self._route(self._gateway.get())

    def _route(self, message: Message) -> None:
        try:
            self.core.send(message, "muc")
        except RoutingError as exc:
            log.info("MUC: %s did not reach %s: %s", message.sender, message.recipient, exc)

    def stop(self) -> None:
        if self._sender is not None:
            self._sender.kill(block=False)

    # ---- casts and hand-overs from other nodes (``on_cluster_cast``) ----
    def received(self, kind: str, data: dict) -> str | None:
        try:
            hops = int(data.get("hops", 0))
            if kind == IN:
                element = ET.fromstring(data["xml"])
                sender = Address.from_jid(element.get("from") or "")
                if element.tag == PRESENCE:
                    self.muc.presence(element, hops)
                else:
                    self.muc.iq(Asker(self.muc, sender), element, hops)
                return "delivered"  # answered to the sender (errors included) by the room
            elif kind == MESSAGE:
                return self.muc.message(self._message(data), hops)
            elif kind == OUT:
                self._to_session(Address.from_jid(data["to"]), str(data["node"]), ET.fromstring(data["xml"]))
        except (KeyError, TypeError, ValueError, ET.ParseError, AddressError) as exc:
            log.warning("cluster: ignored a bad %s: %s", kind, exc)
            if kind != OUT:  # a hand-over: refused
                raise RoutingError("bad-request", f"a bad {kind}") from None
        return None

    @staticmethod
    def _message(data: dict) -> Message:
        message = decode_message(data["message"])
        if data.get("xmpp") is None:  # from SIP or HTTP: a gateway occupant's post
            return message
        return XmppMessage(message.sender, message.recipient, message.body, message.subject,
                           message.thread, message.type, message.id,
                           extensions=tuple(ET.fromstring(x) for x in data["xmpp"]))

    def _to_session(self, to: Address, node: str, element: ET.Element) -> None:
        """A room's stanza from ``node`` for the session ``to`` here; a self-presence (110)
        records (or, unavailable, forgets) that the session is in that node's room."""
        session = self.muc.xmpp.session(to)
        if session is None:
            return  # gone: the owner sees its endpoint leave the directory
        if element.tag == PRESENCE and element.find(f"{tag('x', MUC_USER)}/{tag('status', MUC_USER)}[@code='110']") is not None:
            occupant = Address.from_jid(element.get("from") or "")
            key = (to, occupant.local or "")
            if element.get("type") == "unavailable":
                rooms = self.elsewhere.get(node, {})
                if rooms.get(key) == occupant:  # not the old nick's after a nick change (§7.6.3)
                    del rooms[key]
            elif element.get("type") is None:
                self.elsewhere.setdefault(node, {})[key] = occupant
        session.send(element)

    def forget(self, jid: Address) -> None:
        """The session ``jid`` here ended: it is in no other node's room any more."""
        for rooms in self.elsewhere.values():
            for key in [k for k in rooms if k[0] == jid]:
                del rooms[key]

    def leaving(self, jid: Address) -> list[list[str]]:
        """The rooms the session ``jid`` here is in, each as [its node, room, occupant JID]:
        the session moves to another node (XEP-0198 resumption, ``sm_cluster``), which from then
        on tells it when one of those nodes is lost (``arrived``). It stays an occupant: a room
        reaches it there through the directory."""
        here = self.core.cluster.node_id
        rooms = [[here, name, str(room.occupant_jid(room.by_jid[jid]))]
                 for name in sorted(self.muc.joined.get(jid, ()))
                 if (room := self.muc.rooms.get(name)) is not None and jid in room.by_jid]
        rooms += [[node, key[1], str(occupant)] for node, table in self.elsewhere.items()
                  for key, occupant in table.items() if key[0] == jid]
        self.forget(jid)
        return rooms

    def arrived(self, jid: Address, rooms: list) -> None:
        """The session ``jid`` moved here with the rooms ``leaving`` listed: (node, room,
        occupant JID as an Address)."""
        here = self.core.cluster.node_id
        for node, room, occupant in rooms:
            if node != here:
                self.elsewhere.setdefault(node, {})[(jid, room)] = occupant

    def node_lost(self, node: str) -> None:
        """``node`` left the cluster with its rooms: the sessions here that were in one are out
        of it (XEP-0045 §11.2, status 332)."""
        rooms = self.elsewhere.pop(node, {})
        for (jid, _), occupant in rooms.items():
            session = self.muc.xmpp.session(jid)
            if session is not None:
                session.send(shutdown_presence(occupant, jid))
        if rooms:
            log.info("MUC: node %s left with the rooms of %d occupants here; they are told (332)",
                     node, len(rooms))
