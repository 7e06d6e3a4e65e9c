"""The Multi-User Chat service of one core (XEP-0045 on ``[xmpp] muc_domain``, XEP-0410 self-ping).

Room JIDs (``room@conference.<domain>``) are addresses of another domain from the core's point of
view; the service takes every stanza for that domain:

- messages through the core's router: ``XmppServer.resolve_recipient`` answers the MUC domain with
  :class:`MucRoute`, so an XMPP client's message, a SIP phone's MESSAGE and ``POST /api/messages``
  all arrive at ``MucService.message``;
- presence (entering, nick changes, leaving) from ``visibility.deliver``, which hands presence
  for the MUC domain to ``MucService.presence``; a session that ends leaves every room
  (the IQ router's ``closed`` event);
- IQs from ``IqRouter._to_other_domain``: discovery of the service and rooms (XEP-0030, §6),
  moderation (``muc#admin``, §8–§9), configuration (``muc#owner``, §10), pings (XEP-0199) and
  self-pings to one's own occupant JID (XEP-0410).

Rooms live in memory while they have occupants (``rooms``); persistent ones are kept in SQL
(``muc_store``) and read back on first use, so they survive a restart with their configuration,
affiliations, subject and history. In a cluster each room lives in one process, the one that owns
its address (``muc_cluster``): the others hand it what they get for it, and it sends to occupants
on other nodes through theirs.

**Gateway occupants** (SIP and HTTP, docs/xmpp.md "Group chat"): a message to the room's bare
address that did not come from XMPP (a SIP MESSAGE to ``sip:room@conference.<domain>``, a ``POST
/api/messages``) joins its sender under the account's username as nick (the room's rules apply:
members-only, bans, password rooms refuse) and posts its text to the room. The room's messages
then reach that sender as plain ``chat`` messages from the room's bare address, ``nick: text``.
The text ``/leave`` leaves the room; a SIP binding or HTTP stream that goes away leaves too.
"""
from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from datetime import datetime, timezone

from convergence import Address, AddressError, Message, RoutingError
from convergence.addresses import normalize_domain
from convergence.config import ConfigError

from . import mam, muc_mam, muc_store
from .muc_cluster import RoomOwners
from .discovery import DISCO_INFO, DISCO_ITEMS, PING
from .messages import XmppMessage, element as message_element
from .muc import (DATA, MUC, MUC_ADMIN, MUC_OWNER, MUC_USER, History, Room, RoomConfig,
                  check_nick, config_form, nick_key, shutdown_presence)
from .stanza_ids import without_our_ids
from .stanzas import StanzaError, error_reply, iq_result, tag

log = logging.getLogger(__name__)

MESSAGE, PRESENCE = tag("message"), tag("presence")
LEAVE = "/leave"  # what a gateway occupant writes to leave (docs/xmpp.md)


def muc_domain(setting: str, domain: str) -> str | None:
    """``[xmpp] muc_domain`` with ``{domain}`` filled in; None when it is "" (no MUC). It cannot
    be the server's own domain (the rooms would take the accounts' addresses)."""
    if not setting:
        return None
    muc = normalize_domain(setting.replace("{domain}", domain))
    if muc == domain:
        raise ConfigError(f"[xmpp] muc_domain: {setting!r} is the server's own domain; "
                          'expected another, such as "conference.{domain}"')
    return muc


def now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


class MucRoute:
    """The route to every address of the MUC domain (``resolve_recipient``)."""

    protocol = "muc"

    def __init__(self, muc: MucService):
        self.muc = muc

    def deliver(self, message: Message) -> str:
        return self.muc.message(message)


class MucService:
    """The rooms of one core's MUC domain; built by ``XmppServer`` when ``muc_domain`` is set."""

    def __init__(self, xmpp, settings: dict, domain: str):
        self.xmpp = xmpp  # the C2SService: sessions to send to, the IQ router
        self.core = xmpp.core
        self.domain = domain
        self.max_rooms_per_user = settings["muc_max_rooms_per_user"]
        self.max_occupants = settings["muc_max_occupants"]
        self.history_default = settings["muc_history_default"]
        self.history_max = settings["muc_history_max"]
        self.rooms: dict[str, Room] = {}  # rooms with occupants (and new, unconfigured ones)
        self.joined: dict[Address, set[str]] = {}  # an occupant's real JID → its rooms
        self.route = MucRoute(self)
        self.owners = RoomOwners(self)  # which process holds each room, in a cluster
        xmpp.iq.on("closed", lambda service, session: self.gone(session.address))
        xmpp.iq.server_item(domain, "Chatrooms")
        xmpp.archive.purgers.append(muc_store.purge)  # rooms' archives: the same retention

    # ---- rooms ----
    def room(self, name: str) -> Room | None:
        """The room ``name``: live, or stored (persistent) and read back; None when neither."""
        room = self.rooms.get(name)
        if room is not None:
            return room
        stored = muc_store.load(self.core.db, name, self.history_max)
        if stored is None:
            return None
        config, subject, subject_by, affiliations, history = stored
        room = Room(Address(name, self.domain), RoomConfig.from_dict(config),
                    {Address.parse(jid): value for jid, value in affiliations.items()},
                    subject, subject_by)
        room.set_history_size(room.config.history)
        room.history.extend(history)
        self.rooms[name] = room
        return room

    def _save(self, room: Room, affiliations: bool = True) -> None:
        """Persistent rooms are written through; a room made temporary is deleted from SQL."""
        if room.config.persistent:
            muc_store.save(self.core.db, room.jid.local, room.config.to_dict(), room.subject,
                           room.subject_by, {str(j): a for j, a in room.affiliations.items()}
                           if affiliations else None)
        else:
            muc_store.remove(self.core.db, room.jid.local)

    def _drop_if_empty(self, room: Room) -> None:
        """An empty room leaves memory: a temporary one ends (§10.1.1), a persistent one stays in SQL."""
        if not room.occupants and self.rooms.get(room.jid.local) is room:
            del self.rooms[room.jid.local]
            self.owners.release(room.jid.local)

    def _settle(self, name: str) -> None:
        """After a stanza for room ``name``: a room not (or no longer) in memory is not this
        process's to hold (it may have claimed it to find out that there is no such room)."""
        if name not in self.rooms:
            self.owners.release(name)

    def moved(self, name: str) -> None:
        """Another node took room ``name`` over (this one could not refresh its claim in time:
        cut off from Redis, or stalled): the copy here ends, and its occupants are told as if
        the service shut down (§11.2, status 332); they rejoin the room where it is now."""
        room = self.rooms.pop(name)
        log.warning("MUC: %s is held by another node now; its %d occupants here are told", room.jid,
                    len(room.by_jid))
        for jid, occupant in room.by_jid.items():
            self._unjoin(jid, name)
            if not occupant.gateway:
                self.to_occupant(jid, shutdown_presence(room.occupant_jid(occupant), jid))

    def _create(self, name: str, owner: Address, locked: bool) -> Room:
        """§10.1.1: a new room, ``owner`` its owner (no more than ``muc_max_rooms_per_user``)."""
        if owner.domain != self.core.domain:
            raise StanzaError("not-allowed", "only users of this server create rooms")
        owned = muc_store.owned(self.core.db, str(owner.bare)) | {
            n for n, r in self.rooms.items() if r.affiliations.get(owner.bare) == "owner"}
        if len(owned) >= self.max_rooms_per_user:
            raise StanzaError("resource-constraint", f"you own {len(owned)} rooms already "
                              f"(at most {self.max_rooms_per_user})")
        config = RoomConfig(max_users=self.max_occupants, history=min(20, self.history_max))
        room = Room(Address(name, self.domain), config, {owner.bare: "owner"}, locked=locked)
        room.set_history_size(config.history)
        self.rooms[name] = room
        return room

    # ---- sending ----
    def send(self, room: Room, out, skip: Address | None = None) -> None:
        """Each ``(to, element)`` to its occupant: an XMPP session, or as text for a gateway
        occupant (only messages). An XMPP occupant whose session is gone leaves the room."""
        gone = []
        for to, element in out:
            occupant = room.by_jid.get(to)
            if occupant is not None and occupant.gateway:
                if to != skip and element.tag == MESSAGE:
                    self._to_gateway(room, occupant, element)
                continue
            if not self.to_occupant(to, element) and occupant is not None:
                gone.append(to)
        for jid in gone:
            if jid in room.by_jid:
                self._left(room, jid, room.leave(jid))

    def to_occupant(self, to: Address, element: ET.Element) -> bool:
        """``element`` to the XMPP session ``to``, here or on another node; False when it is gone."""
        session = self.xmpp.session(to) if to.domain == self.core.domain else None
        if session is not None:
            session.send(element)
            return True
        return self.owners.send(to, element)

    def _to_gateway(self, room: Room, occupant, element: ET.Element) -> None:
        body = element.findtext(tag("body"))
        subject = element.findtext(tag("subject"))
        nick = Address.parse(element.get("from")).resource
        if body:
            text = f"{nick}: {body}" if nick else body
        elif subject is not None and element.find(tag("delay", "urn:xmpp:delay")) is None:
            text = f"{nick or room.jid} changed the subject to: {subject}"
        else:
            return
        jid = occupant.jid
        targets = [jid] if jid.resource else [
            e.address for e in self.core.presence.endpoints(jid)
            if getattr(e, "origin_protocol", e.protocol) != "xmpp" and e.presence.available]
        for target in targets:
            self.owners.to_gateway(Message(room.jid, target, text, type="chat"))

    def _unjoin(self, jid: Address, name: str) -> None:
        """``jid`` is no longer in room ``name``."""
        rooms = self.joined.get(jid)
        if rooms is not None:
            rooms.discard(name)
            if not rooms:
                del self.joined[jid]

    def _left(self, room: Room, jid: Address, out) -> None:
        self._unjoin(jid, room.jid.local)
        self.send(room, out)
        self._drop_if_empty(room)

    def _forget_removed(self, room: Room, before: set) -> None:
        """Occupants a kick, ban or destruction removed: no longer in ``joined``."""
        for jid in before - set(room.by_jid):
            self._unjoin(jid, room.jid.local)

    # ---- presence (§7.2, §7.6, §7.7, §7.14) ----
    def presence(self, element: ET.Element, hops: int = 0) -> None:
        """A presence stanza from a session of this server (here or, ``hops`` > 0, handed on by
        another node) to a room or occupant JID."""
        sender = Address.parse(element.get("from"))
        kind = element.get("type")
        try:
            to = Address.from_jid(element.get("to"))
        except AddressError:
            return
        if kind not in (None, "unavailable") or to.local is None or sender.domain != self.core.domain:
            return  # subscriptions, probes and errors to rooms mean nothing here; no federation
        try:
            if (node := self.owners.owner(to.local)) is not None:
                return self.owners.forward(node, element, hops)
            if kind == "unavailable":
                room = self.rooms.get(to.local)
                if room is not None and sender in room.by_jid:
                    self._left(room, sender, room.leave(sender, element.findtext(tag("status"))))
                return
            self._available(sender, to, element)
        except (StanzaError, RoutingError) as error:
            if isinstance(error, RoutingError):  # the node holding the room is unknown or did not take it
                if kind == "unavailable":
                    return  # leaving: no error to a session that leaves (the owner sees it go)
                error = StanzaError(error.condition, error.text, "wait")
            reply = error_reply(element, error)  # §7.2.6 etc.: the error carries the MUC <x/> back
            reply.insert(0, ET.Element(tag("x", MUC)))
            self.to_occupant(sender, reply)
        finally:
            self._settle(to.local)

    def _available(self, sender: Address, to: Address, element: ET.Element) -> None:
        nick = check_nick(to.resource)
        room = self.room(to.local)
        if room is not None and sender in room.by_jid:
            occupant = room.by_jid[sender]
            if nick_key(nick) != nick_key(occupant.nick) or nick != occupant.nick:
                out = room.change_nick(sender, nick)
            else:
                out = room.update_presence(sender, element)
            return self.send(room, out)
        x = element.find(tag("x", MUC))
        created = room is None
        if created:
            room = self._create(to.local, sender, locked=x is not None)
        try:
            password = x.findtext(tag("password", MUC)) if x is not None else None
            out = room.join(sender, nick, element, password, History.parse(x, self.history_default),
                            now(), created=created, max_users=self.max_occupants)
        except StanzaError:
            if created:
                del self.rooms[to.local]
            else:
                self._drop_if_empty(room)
            raise
        self.joined.setdefault(sender, set()).add(room.jid.local)
        self.send(room, out)

    def gone(self, jid: Address | None) -> None:
        """A session ended: it leaves every room it was in (§7.14)."""
        self.owners.forget(jid)
        for name in list(self.joined.get(jid, ())):
            room = self.rooms.get(name)
            if room is not None and jid in room.by_jid:
                self._left(room, jid, room.leave(jid))
        self.joined.pop(jid, None)

    def endpoint_changed(self, account: Address) -> None:
        """A SIP binding or HTTP stream of ``account`` came or went: gateway occupants whose
        endpoint is gone leave."""
        for jid in [j for j in self.joined if j.bare == account.bare and j.resource]:
            if self.core.presence.endpoint(jid) is None:
                self.gone(jid)

    # ---- messages (§7.4, §7.5, §7.8, §8.1) ----
    def message(self, message: Message, hops: int = 0) -> str:
        """A message for a room or occupant, from any protocol (here or, ``hops`` > 0, handed on
        by another node)."""
        sender, to = message.sender, message.recipient
        if sender.domain != self.core.domain or not sender.local:
            raise RoutingError("forbidden", "rooms here take messages from this server's users only")
        if to.local is None:
            raise RoutingError("service-unavailable", "the chat service takes no messages")
        if message.type == "error":
            return "discarded"
        self.core.router.check_size(message, self.core.router.limits)  # every occupant can take it
        if (node := self.owners.owner(to.local)) is not None:
            return self.owners.forward_message(node, message, hops)
        room = self.room(to.local)
        if room is None:
            self._settle(to.local)
            raise RoutingError("item-not-found", f"no room {to.bare}")
        try:
            if not isinstance(message, XmppMessage):
                self._gateway(room, message)
            elif to.resource:
                if message.type == "groupchat":
                    raise StanzaError("bad-request", "groupchat messages go to the room's address")
                out = room.private(sender, to.resource, message_element(self.xmpp, message))
                self.send(room, out)
            elif message.type == "groupchat":
                self._groupchat(room, sender, message.body, message.subject, message.extensions, message.id)
            else:
                self._invitation(room, sender, message)
        except StanzaError as error:
            raise RoutingError(error.condition, error.text) from None
        finally:
            self._drop_if_empty(room)  # a stored room read back for nothing
        return "delivered"

    def _groupchat(self, room: Room, sender: Address, body: str, subject, extensions, id: str,
                   skip: Address | None = None) -> None:
        subject_before = (room.subject, room.subject_by)
        extra = [x for x in without_our_ids(extensions, self.domain) if x.tag != tag("x", MUC_USER)]
        stanza_id = muc_mam.new_stanza_id(self.xmpp, room)
        out, entry = room.groupchat(sender, body, subject, extra, id, now(), stanza_id)
        if room.config.persistent:
            if entry is not None:  # an archived room keeps every message (muc_mam.py)
                muc_store.add_history(self.core.db, room.jid.local, entry,
                                      None if stanza_id else room.config.history)
            elif (room.subject, room.subject_by) != subject_before:
                self._save(room, affiliations=False)
        self.send(room, out, skip=skip)

    def _invitation(self, room: Room, sender: Address, message: XmppMessage) -> None:
        """§7.8.2 mediated invitations and their declines."""
        x = next((e for e in message.extensions if e.tag == tag("x", MUC_USER)), None)
        invites = x.findall(tag("invite", MUC_USER)) if x is not None else []
        decline = x.find(tag("decline", MUC_USER)) if x is not None else None
        if not invites and decline is None:
            raise StanzaError("not-acceptable", "write to the room with type groupchat")
        if decline is not None:
            try:
                inviter = Address.from_jid(decline.get("to") or "")
            except AddressError as exc:
                raise StanzaError("jid-malformed", str(exc)) from None
            notice = ET.Element(MESSAGE, {"from": str(room.jid), "to": str(inviter)})
            item = ET.SubElement(ET.SubElement(notice, tag("x", MUC_USER)), tag("decline", MUC_USER),
                                 {"from": str(sender.bare)})
            reason = decline.findtext(tag("reason", MUC_USER))
            if reason:
                ET.SubElement(item, tag("reason", MUC_USER)).text = reason[:1024]
            self._deliver(notice, f"{sender.bare} declined the invitation to {room.jid}")
            return
        for invite in invites[:10]:  # a bounded number per message
            try:
                invitee = Address.from_jid(invite.get("to") or "")
            except AddressError as exc:
                raise StanzaError("jid-malformed", str(exc)) from None
            element, added = room.invite(sender, invitee, invite.findtext(tag("reason", MUC_USER)))
            if added and room.config.persistent:
                self._save(room)
            self._deliver(element, element.findtext(tag("body")))

    def _deliver(self, element: ET.Element, body: str) -> None:
        """A message from the room to anyone (an invitee, an inviter) through the core's router:
        an XMPP client gets the payload, a phone the body."""
        sender, to = Address.parse(element.get("from")), Address.parse(element.get("to"))
        extensions = tuple(c for c in element if c.tag not in (tag("body"),))
        try:
            self.core.send(XmppMessage(sender, to, body, type="normal", extensions=extensions), "muc")
        except RoutingError as exc:
            raise StanzaError(exc.condition, exc.text) from None

    def _gateway(self, room: Room, message: Message) -> None:
        """A SIP or HTTP sender: joins under its username, then its text is a groupchat message."""
        sender = message.sender
        text = message.body.strip()
        occupant = room.by_jid.get(sender)
        if text == LEAVE:
            if occupant is not None:
                self._left(room, sender, room.leave(sender))
            return
        if occupant is None:
            same = room.occupant(sender.local)
            if same is not None and same.jid.bare == sender.bare and not same.gateway:
                sender = same.jid  # the account's XMPP client is in under its name: post as it
            else:
                out = room.join(sender, sender.local, None, None, History(maxstanzas=0), now(),
                                gateway=True, max_users=self.max_occupants)
                self.joined.setdefault(sender, set()).add(room.jid.local)
                self.send(room, out)
        body = message.body.rstrip()  # a phone's text may end in a line break
        self._groupchat(room, sender, body, message.subject if not body else None, (), message.id,
                        skip=message.sender)

    # ---- IQs ----
    def iq(self, session, iq: ET.Element, hops: int = 0) -> None:
        """An IQ from a session to the service, a room or an occupant: a session here, or
        (``hops`` > 0) one on another node that handed it on (``muc_cluster.Asker``)."""
        if iq.get("type") not in ("get", "set"):
            return  # answers to nobody: IQs are not forwarded to occupants
        to = None
        try:
            to = Address.from_jid(iq.get("to"))
            if to.local is not None and (node := self.owners.owner(to.local)) is not None:
                iq.set("from", str(session.address))
                return self.owners.forward(node, iq, hops)
            if len(iq) != 1:
                raise StanzaError("bad-request", "an IQ get or set carries exactly one payload")
            reply = self._iq(session, to, iq, iq[0])
        except AddressError as exc:
            reply = error_reply(iq, StanzaError("jid-malformed", str(exc)))
        except StanzaError as exc:
            reply = error_reply(iq, exc)
        except RoutingError as exc:  # the node holding the room is unknown or did not take it
            reply = error_reply(iq, StanzaError(exc.condition, exc.text, "wait"))
        finally:
            if to is not None and to.local is not None:
                self._settle(to.local)
        session.send(reply)

    def _iq(self, session, to: Address, iq: ET.Element, payload: ET.Element) -> ET.Element:
        kind, sender = iq.get("type"), session.address
        if payload.tag == tag("ping", PING) and kind == "get":
            if to.resource:  # XEP-0410 §3: is this client still in the room under that nick?
                room = self.rooms.get(to.local or "")
                occupant = room.by_jid.get(sender) if room else None
                if occupant is None or occupant.nick != to.resource:
                    raise StanzaError("not-acceptable", "you are not in the room under that nick")
            return iq_result(iq)
        if to.resource:
            raise StanzaError("service-unavailable", "IQs are not relayed to occupants")
        if to.local is None:
            return self._service_iq(iq, payload)
        room = self.room(to.local)
        if room is None or room.locked and room.affiliation(sender) != "owner":
            raise StanzaError("item-not-found", f"no room {to}")
        try:
            if payload.tag == mam.QUERY:
                return muc_mam.query_iq(self.xmpp, session, room, iq)
            return self._room_iq(sender, room, iq, payload)
        finally:
            self._drop_if_empty(room)  # a destroyed room, or a stored one read back for an IQ

    def _room_iq(self, sender: Address, room: Room, iq: ET.Element, payload: ET.Element) -> ET.Element:
        kind = iq.get("type")
        if payload.tag == tag("query", DISCO_INFO) and kind == "get":
            query = ET.Element(tag("query", DISCO_INFO))
            ET.SubElement(query, tag("identity", DISCO_INFO), category="conference", type="text",
                          name=room.config.name or room.jid.local)
            archive = muc_mam.FEATURES if muc_mam.archived(self.xmpp, room) else ()
            for name in [DISCO_INFO, *room.features(), *archive]:
                ET.SubElement(query, tag("feature", DISCO_INFO), var=name)
            query.append(room.info_form())
            return iq_result(iq, query)
        if payload.tag == tag("query", DISCO_ITEMS) and kind == "get":
            return iq_result(iq, ET.Element(tag("query", DISCO_ITEMS)))  # occupants not listed (§6.5)
        before = set(room.by_jid)
        if payload.tag == tag("query", MUC_ADMIN):
            if kind == "get":
                return iq_result(iq, room.admin_get(sender, payload))
            out, changed = room.admin_set(sender, payload.findall(tag("item", MUC_ADMIN)))
            if changed and room.config.persistent:
                self._save(room)
        elif payload.tag == tag("query", MUC_OWNER):
            if room.affiliation(sender) != "owner":
                raise StanzaError("forbidden", "only owners configure the room")
            if kind == "get":
                query = ET.Element(tag("query", MUC_OWNER))
                query.append(config_form(room.config, self.max_occupants, self.history_max))
                return iq_result(iq, query)
            destroy, form = payload.find(tag("destroy", MUC_OWNER)), payload.find(tag("x", DATA))
            if destroy is not None:
                out = room.destroy(sender, destroy.findtext(tag("reason", MUC_OWNER)))
                muc_store.remove(self.core.db, room.jid.local)
            elif form is None:
                raise StanzaError("bad-request", "submit the configuration form or destroy the room")
            elif form.get("type") == "cancel":  # §10.1.3: a new room is not created after all
                out = room.destroy(sender, None) if room.locked else []
            else:
                was_persistent = room.config.persistent
                out = room.configure(sender, form, self.max_occupants, self.history_max)
                if room.config.persistent or was_persistent:
                    self._save(room)
        else:
            raise StanzaError("service-unavailable")
        self.send(room, out)
        self._forget_removed(room, before)
        return iq_result(iq)

    def _service_iq(self, iq: ET.Element, payload: ET.Element) -> ET.Element:
        """§6.1 the service's identity and features, §6.3 its public rooms."""
        if iq.get("type") != "get":
            raise StanzaError("service-unavailable")
        if payload.tag == tag("query", DISCO_INFO):
            query = ET.Element(tag("query", DISCO_INFO))
            ET.SubElement(query, tag("identity", DISCO_INFO), category="conference", type="text",
                          name="Chatrooms")
            for name in (DISCO_INFO, DISCO_ITEMS, MUC, PING):
                ET.SubElement(query, tag("feature", DISCO_INFO), var=name)
            return iq_result(iq, query)
        if payload.tag == tag("query", DISCO_ITEMS):
            query = ET.Element(tag("query", DISCO_ITEMS))
            names = dict(muc_store.public_rooms(self.core.db))
            names.update((n, r.config.name) for n, r in self.rooms.items()
                         if r.config.public and not r.locked)
            for name in sorted(names):
                item = ET.SubElement(query, tag("item", DISCO_ITEMS), jid=f"{name}@{self.domain}")
                if names[name]:
                    item.set("name", names[name])
            return iq_result(iq, query)
        raise StanzaError("service-unavailable")
