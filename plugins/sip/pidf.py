"""PIDF presence documents (RFC 3863) with RPID activities (RFC 4480): read and written, sans-IO.

Rules of this file: no I/O (stdlib expat only), bounded input, no DTD. :func:`parse` reads an
``application/pidf+xml`` body (a phone's PUBLISH, RFC 3903) into a
:class:`convergence.Presence`; :func:`build` writes the document a NOTIFY carries (RFC 3856 §6.8)
for a presence. The mapping to XMPP presence (RFC 6121 §4.7) is our reading of RFC 8048 (the
table is in docs/convergence.md):

=============================================  =============================================
PIDF / RPID                                    XMPP
=============================================  =============================================
``<basic>closed</basic>`` (no tuple open)       unavailable
``<basic>open</basic>``, or no known basic      available, no ``<show/>``
open + ``<rpid:away/>`` (and other absences)    ``away``
open + ``<rpid:away/>`` + ``<rpid:other>``      ``xa``
``extended-away``
open + ``<rpid:busy/>``, ``<rpid:on-the-phone/>``, ``dnd``
``<rpid:meeting/>`` …
open + ``<rpid:other>chat</rpid:other>``        ``chat``
``<note>`` (person, document or tuple level)    ``<status/>``
=============================================  =============================================

Safety: the document is read by expat with a handler that refuses any DOCTYPE as it starts, so
no entity can be declared (no billion laughs, no external entity); an undefined entity is a
syntax error. Size is capped by the caller (the PUBLISH body limit) and by :data:`MAX_SIZE`;
nesting deeper than :data:`MAX_DEPTH` and more than :data:`MAX_ELEMENTS` elements are refused.
Any refusal is a :class:`PidfError` (the PUBLISH gets ``400``).
"""
from __future__ import annotations

from types import MappingProxyType
from xml.parsers import expat

from convergence.presence import Presence

PIDF = "urn:ietf:params:xml:ns:pidf"
DATA_MODEL = "urn:ietf:params:xml:ns:pidf:data-model"  # RFC 4479
RPID = "urn:ietf:params:xml:ns:pidf:rpid"  # RFC 4480
CONTENT_TYPE = "application/pidf+xml"
MAX_SIZE = 65536  # bytes of a document, whatever the caller allows
MAX_DEPTH = 16  # nested elements
MAX_ELEMENTS = 512
MAX_NOTE = 1024  # characters of a note kept as the XMPP status

#: RFC 4480 §3.2 activities and the XMPP ``show`` each means (our reading of RFC 8048); the
#: others (``unknown``, ``holiday``…) leave the presence plain available unless listed here.
SHOW_OF_ACTIVITY = MappingProxyType({
    "away": "away", "appointment": "away", "breakfast": "away", "dinner": "away",
    "lunch": "away", "meal": "away", "in-transit": "away", "travel": "away", "shopping": "away",
    "steering": "away", "spectator": "away", "looking-for-work": "away",
    "holiday": "xa", "vacation": "xa", "sleeping": "xa", "permanent-absence": "xa",
    "busy": "dnd", "on-the-phone": "dnd", "meeting": "dnd", "performance": "dnd",
    "presentation": "dnd", "worship": "dnd",
})
#: ``<rpid:other>`` texts we write and read back for the XMPP shows RPID has no element for.
OTHER_OF_SHOW = MappingProxyType({"chat": "chat", "xa": "extended-away"})
SHOW_OF_OTHER = MappingProxyType({"chat": "chat", "extended-away": "xa", "xa": "xa"})
#: The activity elements written for each XMPP show (RFC 4480 §3.2 names).
ACTIVITY_OF_SHOW = MappingProxyType({"away": "away", "xa": "away", "dnd": "busy"})
#: When several activities are listed, the least available wins.
_RANK = MappingProxyType({None: 0, "chat": 1, "away": 2, "xa": 3, "dnd": 4})


class PidfError(ValueError):
    """The body is not a PIDF document we read (the reason names why)."""


def _refuse_dtd(*_):
    raise PidfError("a DOCTYPE is not allowed in a PIDF document")


def _refuse_entity(*_):
    raise PidfError("entity declarations are not allowed")


class _Reader:
    """expat callbacks gathering what :func:`parse` needs: basic statuses, activities, notes."""

    def __init__(self):
        self.path: list[str] = []
        self.elements = 0
        self.basics: list[str] = []
        self.activities: list[str] = []
        self.others: list[str] = []
        self.notes: dict[str, str] = {}  # "person" / "presence" / "tuple" → first note
        self.text: list[str] = []

    def start(self, name: str, attrs) -> None:
        self.elements += 1
        if len(self.path) >= MAX_DEPTH or self.elements > MAX_ELEMENTS:
            raise PidfError("PIDF document nested too deep or too large")
        if not self.path and name != f"{PIDF} presence":
            raise PidfError("the root element is not a PIDF <presence>")
        parent = self.path[-1] if self.path else ""
        if parent == f"{RPID} activities":
            namespace, _, local = name.rpartition(" ")
            if namespace == RPID:
                self.activities.append(local)
        self.path.append(name)
        self.text = []

    def data(self, text: str) -> None:
        if sum(map(len, self.text)) < MAX_NOTE * 4:
            self.text.append(text)

    def end(self, name: str) -> None:
        self.path.pop()
        text = "".join(self.text).strip()
        self.text = []
        parent = self.path[-1] if self.path else ""
        if name == f"{PIDF} basic":
            self.basics.append(text.lower())
        elif name == f"{RPID} other" and parent == f"{RPID} activities":
            self.others.append(text.lower())
        elif name in (f"{PIDF} note", f"{DATA_MODEL} note", f"{RPID} note") and text:
            where = ("presence" if parent == f"{PIDF} presence" else
                     "person" if parent == f"{DATA_MODEL} person" else "tuple")
            self.notes.setdefault(where, text[:MAX_NOTE])


def parse(body: bytes) -> Presence:
    """The presence a PIDF document states (RFC 3863 §4, RFC 4480 §3): available when any tuple's
    ``<basic>`` is ``open``, unavailable when none is and one is ``closed``; a document that says
    neither (no tuple, or baresip 1.0's ``<basic>unknown</basic>`` before its user picked a state)
    is plain available: the phone is registered. ``show`` from the RPID activities; ``status``
    from the first note of the person (RFC 4479), else of the document, else of a tuple. Raises
    :class:`PidfError` for what is not a PIDF document."""
    if len(body) > MAX_SIZE:
        raise PidfError(f"PIDF document larger than {MAX_SIZE} bytes")
    reader = _Reader()
    parser = expat.ParserCreate(None, " ")
    parser.StartDoctypeDeclHandler = _refuse_dtd
    parser.EntityDeclHandler = _refuse_entity
    parser.StartElementHandler = reader.start
    parser.EndElementHandler = reader.end
    parser.CharacterDataHandler = reader.data
    try:
        parser.Parse(body, True)
    except expat.ExpatError as exc:
        raise PidfError(f"malformed PIDF: {exc}") from None
    except PidfError:
        raise
    except (LookupError, ValueError) as exc:  # an XML declaration naming an encoding expat
        # cannot read (unknown to Python, or multi-byte other than UTF-8/16)
        raise PidfError(f"PIDF in an unknown encoding: {exc}") from None
    note = reader.notes.get("person") or reader.notes.get("presence") or reader.notes.get("tuple")
    if "open" not in reader.basics and "closed" in reader.basics:
        return Presence(available=False, status=note)
    shows = [SHOW_OF_ACTIVITY.get(a) for a in reader.activities]
    shows += [SHOW_OF_OTHER.get(o) for o in reader.others]
    show = max(shows, key=_RANK.__getitem__, default=None)
    if show == "away" and "xa" in shows:
        show = "xa"
    return Presence(show=show, status=note)


def _escape(text: str) -> str:
    """Text for XML content or a double-quoted attribute; characters XML 1.0 forbids dropped."""
    kept = "".join(c for c in text if c in "\t\n\r" or (c >= " " and c not in "\ufffe\uffff"))
    return (kept.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;"))


def build(entity: str, presence: Presence, tuple_id: str = "t1", person_id: str = "p1") -> bytes:
    """The PIDF document (RFC 3863 §4) for ``entity`` (a ``sip:`` or ``pres:`` URI) in
    ``presence``: one tuple, open or closed, with the status as its ``<note>``; a ``dm:person``
    (RFC 4479) with the RPID activities of the show (RFC 4480 §3.2) and the note. baresip reads
    ``<basic>`` and ``<rpid:away/>``, ``<rpid:busy/>`` literally, so the prefixes are these."""
    basic = "open" if presence.available else "closed"
    activities = ""
    if presence.available and presence.show:
        activity = ACTIVITY_OF_SHOW.get(presence.show)
        other = OTHER_OF_SHOW.get(presence.show)
        activities = "<rpid:activities>" + (f"<rpid:{activity}/>" if activity else "") + (
            f"<rpid:other>{other}</rpid:other>" if other else "") + "</rpid:activities>"
    note = f"<note>{_escape(presence.status)}</note>" if presence.status else ""
    person = ""
    if activities or note:  # RFC 4480 §3.2: <activities> is never empty
        person = (f'<dm:person id="{_escape(person_id)}">{activities}'
                  f'{note.replace("note>", "dm:note>")}</dm:person>\n')
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<presence xmlns="{PIDF}" xmlns:dm="{DATA_MODEL}" xmlns:rpid="{RPID}" '
        f'entity="{_escape(entity)}">\n'
        f'<tuple id="{_escape(tuple_id)}"><status><basic>{basic}</basic></status>{note}</tuple>\n'
        f'{person}</presence>\n').encode()
