"""Multi-User Chat rooms (XEP-0045 v1.34): the sans-IO state machine of one room.

A :class:`Room` holds its configuration (§10.2 ``muc#roomconfig``), the affiliations by bare JID
(§5.2: owner, admin, member, outcast), the occupants by nick with their roles (§5.1: moderator,
participant, visitor), the subject (§8.1) and the recent history (§7.2.14). Each operation checks
the XEP's rules and returns the stanzas to send as ``(to, element)`` pairs, or raises
:class:`~.stanzas.StanzaError` with the condition the XEP names. No I/O here: the service
(``muc_service.py``) sends what comes out and keeps persistent rooms in SQL (``muc_store.py``).

Occupants are usually XMPP sessions (their real JID is a full JID). A *gateway* occupant is an
account taking part from SIP or HTTP (docs/xmpp.md "Group chat"): it sends no presence, and the
service turns the room's messages into plain text for it.

Nicks (§7.2.9, §7.6) are compared by :func:`nick_key` (Unicode width and case folded, NFC, spaces
collapsed), so that two occupants cannot have nicks that differ only by case or width; a nick
that is (by the same folding) another occupant's or affiliated user's bare JID is a ``conflict``
too (impersonation).
"""
from __future__ import annotations

import unicodedata
import xml.etree.ElementTree as ET
from collections import deque
from dataclasses import dataclass, field, fields, replace
from datetime import datetime, timedelta, timezone
from types import MappingProxyType

from convergence import Address, AddressError

from .stanza_ids import STANZA_ID
from .stanzas import StanzaError, tag

MUC = "http://jabber.org/protocol/muc"
MUC_USER = MUC + "#user"
MUC_ADMIN = MUC + "#admin"
MUC_OWNER = MUC + "#owner"
ROOMCONFIG = MUC + "#roomconfig"
ROOMINFO = MUC + "#roominfo"
DATA = "jabber:x:data"
DELAY = "urn:xmpp:delay"

AFFILIATIONS = ("owner", "admin", "member", "none", "outcast")
ROLES = ("moderator", "participant", "visitor", "none")
RANK = MappingProxyType({"owner": 4, "admin": 3, "member": 2, "none": 1, "outcast": 0})
MAX_NICK_BYTES = 1023  # a resourcepart (RFC 7622 §3.4)
MAX_REASON = 1024  # characters of a kick/ban/invite reason kept


#: Cyrillic and Greek letters that look like Latin ones (a small part of Unicode TR39's
#: confusables), folded for nick comparison only
LOOKALIKES = MappingProxyType(str.maketrans({
    "а": "a", "е": "e", "о": "o", "р": "p", "с": "c", "у": "y", "х": "x", "і": "i", "ј": "j",
    "ѕ": "s", "ԁ": "d", "һ": "h", "ӏ": "l", "ԛ": "q", "ԝ": "w",  # Cyrillic
    "ο": "o", "α": "a", "ν": "v", "κ": "k", "ι": "i", "τ": "t", "υ": "u"}))  # Greek


def nick_key(nick: str) -> str:
    """The form two nicks are compared in (§7.2.9 impersonation): NFKC, case folded, combining
    marks dropped, a few look-alike Cyrillic and Greek letters read as Latin, spaces collapsed."""
    folded = unicodedata.normalize("NFD", unicodedata.normalize("NFKC", nick).casefold())
    text = "".join(ch for ch in folded if unicodedata.category(ch) != "Mn").translate(LOOKALIKES)
    return " ".join(unicodedata.normalize("NFC", text).split())


def check_nick(nick: str | None) -> str:
    """A nick as an occupant JID's resourcepart (§7.2.1, RFC 7622 §3.4): NFC, no control
    characters, not empty or only spaces; ``jid-malformed`` otherwise."""
    if not nick or not nick.strip():
        raise StanzaError("jid-malformed", "a nick is needed: join as room@service/nick")
    nick = unicodedata.normalize("NFC", nick)
    if len(nick.encode()) > MAX_NICK_BYTES:
        raise StanzaError("jid-malformed", "the nick is longer than 1023 bytes")
    if any(unicodedata.category(ch)[0] == "C" for ch in nick):
        raise StanzaError("jid-malformed", "the nick contains a control or unassigned character")
    return nick


@dataclass(frozen=True)
class RoomConfig:
    """§10.2 room configuration; the form fields are in ``FORM``."""

    name: str = ""
    description: str = ""
    persistent: bool = False
    public: bool = True
    members_only: bool = False
    moderated: bool = False
    password: str = ""
    max_users: int = 200
    whois: str = "moderators"  # "anyone": non-anonymous room (§4.2)
    change_subject: bool = False  # occupants (participants) may change the subject
    allow_invites: bool = True  # occupants may invite (§7.8); else admins and owners only
    history: int = 20  # messages kept (muc#maxhistoryfetch)

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: dict) -> RoomConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


#: form var → (RoomConfig field, kind, label) (§15.5.3 ``muc#roomconfig``)
FORM = MappingProxyType({
    "muc#roomconfig_roomname": ("name", "text-single", "Room name"),
    "muc#roomconfig_roomdesc": ("description", "text-single", "Description"),
    "muc#roomconfig_persistentroom": ("persistent", "boolean", "Persistent (kept when empty)"),
    "muc#roomconfig_publicroom": ("public", "boolean", "Listed in the room directory"),
    "muc#roomconfig_membersonly": ("members_only", "boolean", "Members only"),
    "muc#roomconfig_moderatedroom": ("moderated", "boolean", "Moderated (visitors have no voice)"),
    "muc#roomconfig_passwordprotectedroom": (None, "boolean", "Password protected"),
    "muc#roomconfig_roomsecret": ("password", "text-private", "Password"),
    "muc#roomconfig_maxusers": ("max_users", "text-single", "Maximum occupants"),
    "muc#roomconfig_whois": ("whois", "list-single", "Who may see real JIDs"),
    "muc#roomconfig_changesubject": ("change_subject", "boolean", "Occupants may change the subject"),
    "muc#roomconfig_allowinvites": ("allow_invites", "boolean", "Occupants may invite others"),
    "muc#maxhistoryfetch": ("history", "text-single", "Messages of history kept"),
})


def _bool(text: str | None) -> bool:
    if text not in ("0", "1", "true", "false"):
        raise StanzaError("not-acceptable", f"{text!r} is not a boolean (XEP-0004 §3.3)")
    return text in ("1", "true")


def config_form(config: RoomConfig, max_users: int, max_history: int) -> ET.Element:
    """The owner's configuration form (§10.1.3, XEP-0004 ``form``)."""
    form = ET.Element(tag("x", DATA), type="form")
    ET.SubElement(form, tag("title", DATA)).text = "Room configuration"
    hidden = ET.SubElement(form, tag("field", DATA), var="FORM_TYPE", type="hidden")
    ET.SubElement(hidden, tag("value", DATA)).text = ROOMCONFIG
    for var, (name, kind, label) in FORM.items():
        element = ET.SubElement(form, tag("field", DATA), var=var, type=kind, label=label)
        value = bool(config.password) if name is None else getattr(config, name)
        if kind == "boolean":
            value = "1" if value else "0"
        ET.SubElement(element, tag("value", DATA)).text = str(value)
        if var == "muc#roomconfig_whois":
            for option in ("moderators", "anyone"):
                ET.SubElement(ET.SubElement(element, tag("option", DATA), label=option),
                              tag("value", DATA)).text = option
        elif var == "muc#roomconfig_maxusers":
            element.set("label", f"Maximum occupants (at most {max_users})")
        elif var == "muc#maxhistoryfetch":
            element.set("label", f"Messages of history kept (at most {max_history})")
    return form


def apply_form(config: RoomConfig, form: ET.Element, max_users: int, max_history: int) -> RoomConfig:
    """The configuration a submitted form gives (§10.1.3); unknown fields are ignored, bad values
    are ``not-acceptable``."""
    changes: dict = {}
    protect = None
    for element in form.iter(tag("field", DATA)):
        var = element.get("var")
        if var not in FORM:
            continue
        name, kind, _ = FORM[var]
        value = element.findtext(tag("value", DATA)) or ""
        if name is None:
            protect = _bool(value)
        elif kind == "boolean":
            changes[name] = _bool(value)
        elif name in ("max_users", "history"):
            ceiling = max_users if name == "max_users" else max_history
            try:
                number = int(value)
            except ValueError:
                raise StanzaError("not-acceptable", f"{var}: not a number") from None
            if not 0 < number <= ceiling:
                raise StanzaError("not-acceptable", f"{var}: from 1 to {ceiling}")
            changes[name] = number
        elif name == "whois":
            if value not in ("moderators", "anyone"):
                raise StanzaError("not-acceptable", f"{var}: moderators or anyone")
            changes[name] = value
        else:
            if len(value) > MAX_REASON:
                raise StanzaError("not-acceptable", f"{var}: at most {MAX_REASON} characters")
            changes[name] = value
    config = replace(config, **changes)
    if protect is False:
        config = replace(config, password="")
    elif protect and not config.password:
        raise StanzaError("not-acceptable", "a password-protected room needs a password")
    return config


@dataclass
class Occupant:
    """One occupant (§5.1): its nick, real JID, role, and last presence (XMPP occupants)."""

    nick: str
    jid: Address  # the real JID: a full JID, or an account for a gateway occupant
    role: str
    presence: ET.Element | None = None  # the <presence/> it joined or last updated with
    gateway: bool = False  # takes part from SIP/HTTP: plain text, no presence


@dataclass
class HistoryEntry:
    """A groupchat message kept for the history sent on joining (§7.2.14)."""

    nick: str
    jid: str  # the sender's real bare JID (shown to moderators or in non-anonymous rooms)
    stamp: datetime  # UTC, naive
    body: str
    subject: str | None = None
    extra: tuple = ()  # other payloads of the original stanza
    stanza_id: str | None = None  # XEP-0359, by the room: archived rooms only (muc_mam.py)


@dataclass
class History:
    """What ``<history/>`` asks for (§7.2.14); every limit is optional."""

    maxstanzas: int | None = None
    maxchars: int | None = None
    seconds: int | None = None
    since: datetime | None = None

    @classmethod
    def parse(cls, x: ET.Element | None, default: int) -> History:
        element = x.find(tag("history", MUC)) if x is not None else None
        if element is None:
            return cls(maxstanzas=default)
        values: dict = {}
        for name in ("maxstanzas", "maxchars", "seconds"):
            text = element.get(name)
            if text is not None:
                try:
                    values[name] = max(0, int(text))
                except ValueError:
                    raise StanzaError("bad-request", f"history {name} is not a number") from None
        if element.get("since"):
            try:
                since = datetime.fromisoformat(element.get("since").replace("Z", "+00:00"))
            except ValueError:
                raise StanzaError("bad-request", "history since is not a date-time (XEP-0082)") from None
            values["since"] = since.astimezone(timezone.utc).replace(tzinfo=None) \
                if since.tzinfo else since
        if not values:
            values["maxstanzas"] = default
        return cls(**values)

    def select(self, entries, now: datetime, ceiling: int) -> list[HistoryEntry]:
        """The newest entries that meet every limit, oldest first; never more than ``ceiling``."""
        chosen: list[HistoryEntry] = []
        chars = 0
        stanzas = min(self.maxstanzas if self.maxstanzas is not None else ceiling, ceiling)
        for entry in reversed(entries):
            if len(chosen) >= stanzas:
                break
            if self.seconds is not None and entry.stamp < now - timedelta(seconds=self.seconds):
                break
            if self.since is not None and entry.stamp <= self.since:
                break
            chars += len(entry.body) + len(entry.nick) + 100  # roughly the stanza's size (§7.2.14)
            if self.maxchars is not None and chars > self.maxchars:
                break
            chosen.append(entry)
        chosen.reverse()
        return chosen


Outgoing = list  # of (Address, ET.Element)


def shutdown_presence(occupant: Address, to: Address) -> ET.Element:
    """§11.2: the ``unavailable`` self-presence (110) of the occupant JID ``occupant`` telling
    ``to`` that it was removed from the room because the service (here: the cluster node that
    held the room) shut down (332)."""
    element = ET.Element(tag("presence"), {"from": str(occupant), "to": str(to), "type": "unavailable"})
    x = ET.SubElement(element, tag("x", MUC_USER))
    ET.SubElement(x, tag("item", MUC_USER), affiliation="none", role="none")
    for code in ("110", "332"):
        ET.SubElement(x, tag("status", MUC_USER), code=code)
    return element


@dataclass
class Room:
    """One room: ``jid`` is room@service. ``locked`` until its owner configures it (§10.1.2)."""

    jid: Address
    config: RoomConfig = field(default_factory=RoomConfig)
    affiliations: dict = field(default_factory=dict)  # bare Address → owner/admin/member/outcast
    subject: str = ""
    subject_by: str = ""  # the nick that set it
    locked: bool = False
    history: deque = field(default_factory=lambda: deque(maxlen=20))
    occupants: dict = field(default_factory=dict)  # nick_key → Occupant
    by_jid: dict = field(default_factory=dict)  # real JID → Occupant

    # -- who is who --
    def affiliation(self, jid: Address) -> str:
        return self.affiliations.get(jid.bare, "none")

    def default_role(self, affiliation: str) -> str:
        """§5.1.2: the role an occupant of an affiliation gets on entering."""
        if affiliation in ("owner", "admin"):
            return "moderator"
        if affiliation == "member" or not self.config.moderated:
            return "participant"
        return "visitor"

    def occupant(self, nick: str) -> Occupant | None:
        return self.occupants.get(nick_key(nick))

    def occupant_jid(self, occupant: Occupant) -> Address:
        return self.jid.with_resource(occupant.nick)

    def _shows_jid(self, to: Occupant | None) -> bool:
        return self.config.whois == "anyone" or (to is not None and to.role == "moderator")

    def set_history_size(self, size: int) -> None:
        if self.history.maxlen != size:
            self.history = deque(self.history, maxlen=size)

    # -- stanzas --
    def _presence(self, occupant: Occupant, to: Occupant, codes=(), kind: str | None = None,
                  nick: str | None = None, reason: str | None = None, actor: str | None = None,
                  role: str | None = None) -> ET.Element:
        """The presence of ``occupant`` as ``to`` sees it (§7.2.3), with status ``codes``."""
        source = occupant.presence if kind is None and occupant.presence is not None else None
        element = ET.Element(tag("presence"), {"from": str(self.occupant_jid(occupant)), "to": str(to.jid)})
        if kind:
            element.set("type", kind)
        if source is not None:
            for child in source:
                if child.tag not in (tag("x", MUC), tag("x", MUC_USER)):
                    element.append(child)
        x = ET.SubElement(element, tag("x", MUC_USER))
        item = ET.SubElement(x, tag("item", MUC_USER), affiliation=self.affiliation(occupant.jid),
                             role=role or occupant.role)
        if self._shows_jid(to):
            item.set("jid", str(occupant.jid))
        if nick:
            item.set("nick", nick)
        if actor:
            ET.SubElement(item, tag("actor", MUC_USER), nick=actor)
        if reason:
            ET.SubElement(item, tag("reason", MUC_USER)).text = reason
        codes = list(codes)
        if to is occupant:
            codes.insert(0, "110")  # §7.2.3: self-presence
            if self.config.whois == "anyone":
                codes.append("100")  # §7.2.3: the room shows real JIDs
        for code in dict.fromkeys(codes):
            ET.SubElement(x, tag("status", MUC_USER), code=code)
        return element

    def _to_all(self, occupant: Occupant, codes=(), **kw) -> Outgoing:
        return [(o.jid, self._presence(occupant, o, codes, **kw))
                for o in self.occupants.values() if not o.gateway]

    def _remove(self, occupant: Occupant) -> None:
        self.occupants.pop(nick_key(occupant.nick), None)
        if self.by_jid.get(occupant.jid) is occupant:
            del self.by_jid[occupant.jid]

    def _add(self, occupant: Occupant) -> None:
        self.occupants[nick_key(occupant.nick)] = occupant
        self.by_jid[occupant.jid] = occupant

    # -- entering and leaving (§7.2, §7.6, §7.14) --
    def _nick_free(self, nick: str, jid: Address) -> None:
        key = nick_key(nick)
        other = self.occupants.get(key)
        if other is not None and other.jid != jid:
            raise StanzaError("conflict", "that nick is taken")  # §7.2.9
        impersonated = {nick_key(str(o.jid.bare)) for o in self.occupants.values() if o.jid.bare != jid.bare}
        impersonated.update(nick_key(str(j)) for j in self.affiliations if j != jid.bare)
        if key in impersonated or (key.partition("/")[0] in impersonated):
            raise StanzaError("conflict", "a nick may not be another user's address")

    def join(self, jid: Address, nick: str, presence: ET.Element | None, password: str | None,
             history: History, now: datetime, created: bool = False, gateway: bool = False,
             max_users: int = 200) -> Outgoing:
        """§7.2: ``jid`` enters as ``nick``. Returns every occupant's presence to the newcomer,
        its own (110, and 201 for a new room), its presence to the others, history and subject."""
        nick = check_nick(nick)
        affiliation = self.affiliation(jid)
        if affiliation == "outcast":
            raise StanzaError("forbidden", "you are banned from this room")  # §7.2.8
        if self.locked and affiliation != "owner":
            raise StanzaError("item-not-found", "the room is not configured yet")  # §10.1.1
        if self.config.members_only and affiliation == "none":
            raise StanzaError("registration-required", "this room is for members only")  # §7.2.7
        if self.config.password and affiliation != "owner" and password != self.config.password:
            raise StanzaError("not-authorized", "a password is required")  # §7.2.6
        self._nick_free(nick, jid)
        limit = min(self.config.max_users, max_users)
        if len(self.occupants) >= limit and affiliation not in ("owner", "admin"):
            raise StanzaError("service-unavailable", f"the room is full ({limit} occupants)")  # §7.2.10
        occupant = Occupant(nick, jid, self.default_role(affiliation), presence, gateway)
        out: Outgoing = []
        if not gateway:
            out += [(jid, self._presence(other, occupant)) for other in self.occupants.values()]
        self._add(occupant)
        for other in self.occupants.values():
            if other is not occupant and not other.gateway:
                out.append((other.jid, self._presence(occupant, other)))
        if not gateway:
            out.append((jid, self._presence(occupant, occupant, ["201"] if created else [])))
            for entry in history.select(self.history, now, self.history.maxlen or 0):
                out.append((jid, self._history_message(entry, occupant)))
            out.append((jid, self._subject_message(occupant)))
        return out

    def leave(self, jid: Address, status: str | None = None) -> Outgoing:
        """§7.14: ``unavailable`` from the occupant to everyone, itself included (110)."""
        occupant = self.by_jid.get(jid)
        if occupant is None:
            return []
        out = self._to_all(occupant, kind="unavailable")
        if status and occupant.presence is not None:
            for _, element in out:
                ET.SubElement(element, tag("status")).text = status
        self._remove(occupant)
        return out

    def change_nick(self, jid: Address, nick: str) -> Outgoing:
        """§7.6: unavailable with 303 and the new nick, then available under the new nick."""
        occupant = self.by_jid[jid]
        nick = check_nick(nick)
        if nick == occupant.nick:
            return []
        self._nick_free(nick, jid)
        out = self._to_all(occupant, ["303"], kind="unavailable", nick=nick)
        self._remove(occupant)
        occupant.nick = nick
        self._add(occupant)
        return out + self._to_all(occupant)

    def update_presence(self, jid: Address, presence: ET.Element) -> Outgoing:
        """§7.7: a changed availability goes to every occupant."""
        occupant = self.by_jid[jid]
        occupant.presence = presence
        return self._to_all(occupant)

    # -- messages (§7.4, §7.5, §8.1) --
    def _message(self, sender_nick: str, to: Address, kind: str, body: str = "",
                 subject: str | None = None, extra=(), id: str | None = None) -> ET.Element:
        element = ET.Element(tag("message"), {"from": str(self.jid.with_resource(sender_nick))
                                              if sender_nick else str(self.jid),
                                              "to": str(to), "type": kind})
        if id:
            element.set("id", id)
        if subject is not None:
            ET.SubElement(element, tag("subject")).text = subject
        if body:
            ET.SubElement(element, tag("body")).text = body
        element.extend(extra)
        return element

    def _stanza_id(self, element: ET.Element, stanza_id: str | None) -> ET.Element:
        """XEP-0359 §3: the room's ``<stanza-id by='room'/>`` on a message of its archive."""
        if stanza_id:
            ET.SubElement(element, STANZA_ID, {"by": str(self.jid), "id": stanza_id})
        return element

    def archived_message(self, entry: HistoryEntry, to: Occupant | None) -> ET.Element:
        """An archived message as a MAM result forwards it (XEP-0313 §4.2, XEP-0045 §7.2.14
        rules on the real JID: shown in non-anonymous rooms and to moderators)."""
        element = self._message(entry.nick, to.jid if to else self.jid, "groupchat", entry.body,
                                entry.subject, entry.extra)
        del element.attrib["to"]
        if self._shows_jid(to):
            ET.SubElement(ET.SubElement(element, tag("x", MUC_USER)), tag("item", MUC_USER), jid=entry.jid)
        return self._stanza_id(element, entry.stanza_id)

    def _history_message(self, entry: HistoryEntry, to: Occupant) -> ET.Element:
        element = self._message(entry.nick, to.jid, "groupchat", entry.body, entry.subject, entry.extra)
        self._stanza_id(element, entry.stanza_id)
        delay = ET.SubElement(element, tag("delay", DELAY), {
            "from": str(self.jid), "stamp": entry.stamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ")})
        if self._shows_jid(to):
            delay.set("from", str(self.jid))
            ET.SubElement(ET.SubElement(element, tag("x", MUC_USER)), tag("item", MUC_USER), jid=entry.jid)
        return element

    def _subject_message(self, to: Occupant) -> ET.Element:
        """§7.2.15: the subject, always sent last on joining (empty when none)."""
        return self._message(self.subject_by, to.jid, "groupchat", subject=self.subject)

    def speaker(self, jid: Address) -> Occupant:
        occupant = self.by_jid.get(jid)
        if occupant is None:
            raise StanzaError("not-acceptable", "join the room before writing to it")  # §7.4
        return occupant

    def groupchat(self, jid: Address, body: str, subject: str | None, extra, id: str,
                  now: datetime, stanza_id: str | None = None) -> tuple[Outgoing, HistoryEntry | None]:
        """§7.4 a message to everyone, or §8.1 a new subject; what history keeps (or None). A
        kept message with a ``stanza_id`` (the room is archived) carries it (XEP-0359)."""
        occupant = self.speaker(jid)
        if occupant.role == "visitor":
            raise StanzaError("forbidden", "visitors have no voice in this moderated room")  # §7.4
        if subject is not None and not body:
            if occupant.role != "moderator" and not self.config.change_subject:
                raise StanzaError("forbidden", "only moderators may change the subject")  # §8.1
            self.subject, self.subject_by = subject, occupant.nick
            entry = None
        elif body:
            entry = HistoryEntry(occupant.nick, str(jid.bare), now, body, subject, tuple(extra),
                                 stanza_id)
            self.history.append(entry)
        else:
            entry = None  # a chat state or marker alone: passed on, not kept
        kept_id = entry.stanza_id if entry is not None else None
        out = [(o.jid, self._stanza_id(self._message(occupant.nick, o.jid, "groupchat", body, subject,
                                                     extra, id), kept_id))
               for o in self.occupants.values()]
        return out, entry

    def private(self, jid: Address, nick: str, element: ET.Element) -> Outgoing:
        """§7.5: a private message to one occupant, from the sender's occupant JID."""
        sender = self.speaker(jid)
        target = self.occupant(nick)
        if target is None:
            raise StanzaError("item-not-found", "no occupant has that nick")  # §7.5
        copy = ET.Element(element.tag, dict(element.attrib))
        copy.extend(element)
        copy.set("from", str(self.occupant_jid(sender)))
        copy.set("to", str(target.jid))
        ET.SubElement(copy, tag("x", MUC_USER))
        return [(target.jid, copy)]

    def invite(self, jid: Address, invitee: Address, reason: str | None) -> tuple[ET.Element, bool]:
        """§7.8.2: the mediated invitation to send to ``invitee`` from the room; and whether the
        invitee became a member (members-only rooms: invited by an admin or owner, §9.3)."""
        inviter = self.speaker(jid)
        rank = RANK[self.affiliation(jid)]
        if not self.config.allow_invites and rank < RANK["admin"]:
            raise StanzaError("forbidden", "only admins and owners may invite to this room")
        added = False
        if self.config.members_only and self.affiliation(invitee) == "none":
            if rank < RANK["admin"] and not self.config.allow_invites:
                raise StanzaError("forbidden", "only admins may invite to a members-only room")
            self.affiliations[invitee.bare] = "member"
            added = True
        element = self._message("", invitee, "normal", f"{inviter.nick} invites you to the room "
                                f"{self.jid}" + (f": {reason}" if reason else ""))
        x = ET.SubElement(element, tag("x", MUC_USER))
        item = ET.SubElement(x, tag("invite", MUC_USER), {"from": str(jid.bare)})
        if reason:
            ET.SubElement(item, tag("reason", MUC_USER)).text = reason[:MAX_REASON]
        if self.config.password:
            ET.SubElement(x, tag("password", MUC_USER)).text = self.config.password
        return element, added

    # -- moderation and administration (§8, §9, §10) --
    def admin_set(self, jid: Address, items: list[ET.Element]) -> tuple[Outgoing, bool]:
        """§8.2–§8.6, §9.1–§9.8, §10.3–§10.7: role and affiliation changes from ``jid``. All
        items are checked first (all or nothing). Returns the presence stanzas and whether the
        affiliations changed (for the store)."""
        actor = self.by_jid.get(jid)
        actor_aff = self.affiliation(jid)
        actor_rank = RANK[actor_aff]
        changes = []
        for item in items:
            reason = (item.findtext(tag("reason", MUC_ADMIN)) or "")[:MAX_REASON] or None
            role, affiliation = item.get("role"), item.get("affiliation")
            if (role is None) == (affiliation is None):
                raise StanzaError("bad-request", "an item changes a role or an affiliation")
            if role is not None:
                if role not in ROLES:
                    raise StanzaError("bad-request", f"unknown role {role!r}")
                target = self.occupant(item.get("nick") or "")
                if target is None:
                    raise StanzaError("item-not-found" if item.get("nick") else "bad-request",
                                      "role changes name an occupant's nick")
                if actor is None or actor.role != "moderator":
                    raise StanzaError("forbidden", "only moderators change roles")
                target_rank = RANK[self.affiliation(target.jid)]
                if role == "moderator" or target.role == "moderator" and role != "none":
                    if actor_rank < RANK["admin"]:
                        raise StanzaError("not-allowed", "only admins and owners grant or revoke moderator")
                if target_rank >= RANK["admin"] and role != "moderator":
                    raise StanzaError("not-allowed", "an admin's or owner's role cannot be lowered")  # §8.2
                changes.append(("role", target, role, reason))
            else:
                if affiliation not in AFFILIATIONS:
                    raise StanzaError("bad-request", f"unknown affiliation {affiliation!r}")
                try:
                    target_jid = Address.from_jid(item.get("jid")).bare if item.get("jid") else None
                except AddressError as exc:
                    raise StanzaError("jid-malformed", str(exc)) from None
                if target_jid is None and item.get("nick"):
                    named = self.occupant(item.get("nick"))
                    target_jid = named.jid.bare if named else None
                if target_jid is None:
                    raise StanzaError("bad-request", "affiliation changes name a JID")
                current = self.affiliation(target_jid)
                if actor_rank < RANK["admin"]:
                    raise StanzaError("forbidden", "only admins and owners change affiliations")
                if actor_aff == "admin" and (RANK[current] >= RANK["admin"] or RANK[affiliation] >= RANK["admin"]):
                    raise StanzaError("not-allowed", "only owners change admins and owners")  # §9
                changes.append(("affiliation", target_jid, (current, affiliation), reason))
        owners = {j for j, a in self.affiliations.items() if a == "owner"}
        for kind, target, value, _ in changes:
            if kind == "affiliation":
                (owners.add if value[1] == "owner" else owners.discard)(target)
        if not owners:
            raise StanzaError("conflict", "a room keeps at least one owner")  # §10.6
        out: Outgoing = []
        affiliations_changed = False
        actor_nick = actor.nick if actor else None
        for kind, target, value, reason in changes:
            if kind == "role":
                if target.jid not in self.by_jid:
                    continue
                if value == "none":  # §8.2 kick
                    out += self._to_all(target, ["307"], kind="unavailable", reason=reason,
                                        actor=actor_nick, role="none")
                    self._remove(target)
                else:  # §8.3-§8.6 voice, §9.6 moderator
                    target.role = value
                    out += self._to_all(target, reason=reason)
                continue
            affiliations_changed = True
            before, value = value
            if value == "none":
                self.affiliations.pop(target, None)
            else:
                self.affiliations[target] = value
            for occupant in [o for o in self.occupants.values() if o.jid.bare == target]:
                if value == "outcast":  # §9.1 ban
                    out += self._to_all(occupant, ["301"], kind="unavailable", reason=reason,
                                        actor=actor_nick, role="none")
                    self._remove(occupant)
                elif value == "none" and self.config.members_only:  # §9.4 removed from members
                    out += self._to_all(occupant, ["321"], kind="unavailable", reason=reason,
                                        role="none")
                    self._remove(occupant)
                else:  # §9.3-§9.8: the role of the new affiliation; a moderator granted as
                    # such (not by being admin or owner) stays one
                    granted = occupant.role == "moderator" and RANK[before] < RANK["admin"]
                    occupant.role = "moderator" if granted else self.default_role(value)
                    out += self._to_all(occupant, reason=reason)
        return out, affiliations_changed

    def admin_get(self, jid: Address, query: ET.Element) -> ET.Element:
        """§8.5, §9.5, §10.5: the occupants of a role, or the JIDs of an affiliation."""
        items = query.findall(tag("item", MUC_ADMIN))
        if len(items) != 1:
            raise StanzaError("bad-request", "ask for one role or affiliation")
        role, affiliation = items[0].get("role"), items[0].get("affiliation")
        actor = self.by_jid.get(jid)
        answer = ET.Element(tag("query", MUC_ADMIN))
        if role in ("moderator", "participant", "visitor"):
            if actor is None or actor.role != "moderator":
                raise StanzaError("forbidden", "only moderators list roles")
            for occupant in self.occupants.values():
                if occupant.role == role:
                    ET.SubElement(answer, tag("item", MUC_ADMIN), affiliation=self.affiliation(occupant.jid),
                                  role=role, nick=occupant.nick, jid=str(occupant.jid))
        elif affiliation in ("owner", "admin", "member", "outcast"):
            if RANK[self.affiliation(jid)] < RANK["admin"]:
                raise StanzaError("forbidden", "only admins and owners list affiliations")
            for who, value in sorted(self.affiliations.items(), key=lambda kv: str(kv[0])):
                if value == affiliation:
                    ET.SubElement(answer, tag("item", MUC_ADMIN), affiliation=value, jid=str(who))
        else:
            raise StanzaError("bad-request", "ask for a role or an affiliation")
        return answer

    def configure(self, jid: Address, form: ET.Element, max_users: int, max_history: int) -> Outgoing:
        """§10.1.2/§10.2: the owner submits a form (empty: an instant room); unlocks the room.
        A room turned members-only loses its non-members (§9.4, 322)."""
        if self.affiliation(jid) != "owner":
            raise StanzaError("forbidden", "only owners configure the room")
        self.config = apply_form(self.config, form, max_users, max_history)
        self.set_history_size(self.config.history)
        self.locked = False
        out: Outgoing = []
        if self.config.members_only:
            for occupant in [o for o in self.occupants.values() if self.affiliation(o.jid) == "none"]:
                out += self._to_all(occupant, ["322"], kind="unavailable", role="none")
                self._remove(occupant)
        if self.config.moderated:
            for occupant in self.occupants.values():
                if occupant.role == "participant" and self.affiliation(occupant.jid) == "none":
                    occupant.role = "visitor"
                    out += self._to_all(occupant)
        return out

    def destroy(self, jid: Address, reason: str | None) -> Outgoing:
        """§10.9: every occupant gets ``unavailable`` with ``<destroy/>``."""
        if self.affiliation(jid) != "owner":
            raise StanzaError("forbidden", "only owners destroy the room")
        out: Outgoing = []
        for occupant in list(self.occupants.values()):
            if not occupant.gateway:
                element = self._presence(occupant, occupant, kind="unavailable", role="none")
                destroy = ET.SubElement(element.find(tag("x", MUC_USER)), tag("destroy", MUC_USER))
                if reason:
                    ET.SubElement(destroy, tag("reason", MUC_USER)).text = reason[:MAX_REASON]
                out.append((occupant.jid, element))
            self._remove(occupant)
        return out

    # -- discovery (§6.4) --
    def features(self) -> list[str]:
        c = self.config
        return [MUC, "muc_persistent" if c.persistent else "muc_temporary",
                "muc_public" if c.public else "muc_hidden",
                "muc_membersonly" if c.members_only else "muc_open",
                "muc_moderated" if c.moderated else "muc_unmoderated",
                "muc_passwordprotected" if c.password else "muc_unsecured",
                "muc_nonanonymous" if c.whois == "anyone" else "muc_semianonymous"]

    def info_form(self) -> ET.Element:
        """§6.4 the ``muc#roominfo`` extended information (XEP-0128)."""
        form = ET.Element(tag("x", DATA), type="result")
        for var, value in (("FORM_TYPE", ROOMINFO), ("muc#roominfo_description", self.config.description),
                           ("muc#roominfo_subject", self.subject),
                           ("muc#roominfo_occupants", str(len(self.occupants))),
                           ("muc#roomconfig_roomname", self.config.name),
                           ("muc#roomconfig_changesubject", "1" if self.config.change_subject else "0")):
            element = ET.SubElement(form, tag("field", DATA), var=var)
            if var == "FORM_TYPE":
                element.set("type", "hidden")
            ET.SubElement(element, tag("value", DATA)).text = value
        return form
