"""Message Archive Management on group chat rooms (XEP-0313 §4 and §8 on a MUC room, XEP-0359).

A room is *archived* when the message archive is on (``[xmpp] archive``) and the room is
persistent (``muc#roomconfig_persistentroom``): temporary rooms, which end with their last
occupant, are not. Each groupchat message with a body that an archived room accepts gets a
XEP-0359 ``<stanza-id by='room@service' id=''/>`` (``new_stanza_id``), the same in every
occupant's copy, in the history sent on joining and in the archive; the archive is the room's
``muc_history`` rows (``muc_store``), kept for ``archive_retention`` days (0: forever) while
joining reads only the newest ``muc#maxhistoryfetch`` of them. The room's disco#info lists
``urn:xmpp:mam:2`` (and ``#extended``, ``urn:xmpp:sid:0``).

A query is an IQ set with ``<query xmlns='urn:xmpp:mam:2'/>`` to the room's bare JID, parsed and
answered by ``mam.py``'s shared pieces (form, RSM, results, ``<fin/>``): the results come from the
room's JID and forward ``<message type='groupchat' from='room/nick'/>`` with the delay stamp; the
real JID is shown as in the join history (non-anonymous rooms, moderators). ``with`` names an
occupant JID (``room@service/nick``: that nick's messages; the room's bare JID: all of them;
another JID: nothing). Who may read (XEP-0313 §4, XEP-0045 §7.2): occupants; in a members-only
room members, admins and owners; in another room anyone who may enter it without a password;
outcasts never. Others get ``forbidden``. An IQ get returns the query form (§5.1.1).
"""
from __future__ import annotations

import xml.etree.ElementTree as ET

from convergence.message import new_id

from . import mam, muc_store
from .muc import Room
from .stanzas import StanzaError, iq_result

FEATURES = mam.FEATURES


def archived(service, room: Room) -> bool:
    """Whether ``room``'s messages are archived (and carry stanza ids)."""
    return service.archive.enabled and room.config.persistent


def new_stanza_id(service, room: Room) -> str | None:
    """The XEP-0359 id of the next message ``room`` keeps, or None when it is not archived."""
    return new_id() if archived(service, room) else None


def _may_read(room: Room, sender) -> bool:
    """XEP-0313 §4 leaves it to the room: its occupants, and whoever could enter it."""
    if sender in room.by_jid:
        return True
    affiliation = room.affiliation(sender)
    if affiliation == "outcast":
        return False
    if affiliation in ("owner", "admin", "member"):
        return True
    return not room.config.members_only and not room.config.password


def query_iq(service, session, room: Room, iq: ET.Element) -> ET.Element:
    """A MAM <query/> to ``room`` (get: the form; set: a page of its archive)."""
    if not archived(service, room):
        raise StanzaError("service-unavailable", "this room has no archive")
    query = iq[0]
    if iq.get("type") == "get":
        reply = ET.Element(mam.QUERY)
        reply.append(mam.query_form())
        return iq_result(iq, reply)
    sender = session.address
    if not _may_read(room, sender):
        raise StanzaError("forbidden", "only who may enter the room reads its archive")
    if query.get("node"):
        raise StanzaError("item-not-found", "no pubsub archives here")
    where, page = mam.parse_query(query, service.settings["mam_max_page"])
    nick = None
    if where.with_jid is not None:
        with_jid = where.with_jid.partition("/")
        if with_jid[0] != str(room.jid):
            return mam.send_page(session, iq, str(room.jid), [], 0, 0, True)  # nobody else writes here
        nick = with_jid[2] or None
    try:
        entries, count, first, complete = muc_store.archive_page(
            service.core.db, room.jid.local, where, nick, page.max, page.after, page.before, page.index)
    except muc_store.archive_store.UnknownId as exc:
        raise StanzaError("item-not-found", f"no message {exc} in the room's archive") from None
    reader = room.by_jid.get(sender)
    results = [(e.stanza_id, e.stamp, room.archived_message(e, reader)) for e in entries]
    return mam.send_page(session, iq, str(room.jid), results, count, first, complete)
