"""Client State Indication (XEP-0352 v1.0, ``urn:xmpp:csi:0``) — sans-IO: no gevent, socket or ssl.

A client says ``<inactive/>`` when its user is away from it (a phone in a pocket) and ``<active/>``
when back (§4.2); every stream starts active, and a resumed stream (XEP-0198) does too (§5.2).
What the server does meanwhile is its own choice (§3.2). Ours, like Prosody's ``mod_csi_simple``:
while inactive, **presence updates** (available and unavailable, the latest per sender kept) and
**chat-state-only messages** (XEP-0085 notifications without a body, the latest per sender) are
held back; everything else — a message with a body or any other payload, IQs, subscription
requests, errors — is urgent: the held stanzas go out first (in the order they were held, so the
client sees them before what followed them), then it. ``<active/>`` sends what is held. More than
``[xmpp] csi_max_held`` held stanzas flush them too. In-order processing (§5.1): the state changes
where the element sits in the stream.

The held stanzas are not counted by stream management until they go out; those still held when
the session ends are dropped (presence and chat states are not worth keeping: RFC 6121 §8.5 and
XEP-0160 do not store them either).
"""
from __future__ import annotations

import xml.etree.ElementTree as ET

from .stanzas import tag

CSI_NS = "urn:xmpp:csi:0"
CHATSTATES_NS = "http://jabber.org/protocol/chatstates"
FEATURE = tag("csi", CSI_NS)
PRESENCE, MESSAGE, THREAD = tag("presence"), tag("message"), tag("thread")
_CHATSTATE = "{" + CHATSTATES_NS + "}"


def features(element: ET.Element) -> None:
    """Post-authentication stream features: ``<csi xmlns='urn:xmpp:csi:0'/>`` (§4.1)."""
    ET.SubElement(element, FEATURE)


def held_key(stanza: ET.Element | bytes):
    """What a stanza replaces while held: ``("presence", from)`` for a presence update,
    ``("chatstate", from)`` for a chat-state-only message; None for anything urgent, and for bytes
    (a message with a body, which ``Session.deliver`` wrote without an element)."""
    if type(stanza) is bytes:
        return None
    name = stanza.tag
    if name == PRESENCE:
        return ("presence", stanza.get("from")) if stanza.get("type") in (None, "unavailable") else None
    if name == MESSAGE and stanza.get("type") != "error" and len(stanza):
        states = 0
        for child in stanza:
            if child.tag.startswith(_CHATSTATE):
                states += 1
            elif child.tag != THREAD:
                return None  # a body, a receipt, an encrypted payload…: urgent
        return ("chatstate", stanza.get("from")) if states else None
    return None


class ClientState:
    """An inactive session's held stanzas (a session has one only while inactive)."""

    __slots__ = ("held", "limit")

    def __init__(self, limit: int):
        self.held: dict[tuple, ET.Element] = {}  # key → latest stanza; insertion ordered
        self.limit = limit

    def hold(self, session, stanza: ET.Element) -> bool:
        """True if ``stanza`` was dealt with here (held, or flushed with what was held); False:
        the caller sends it (after anything held went out first)."""
        key = held_key(stanza)
        if key is None:
            self.flush(session)
            return False
        held = self.held
        held.pop(key, None)  # the newer replaces it, in its own place
        held[key] = stanza
        if len(held) > self.limit:
            self.flush(session)
        return True

    def flush(self, session) -> None:
        """Send what is held, oldest first (``session.send`` with this state out of the way)."""
        if not self.held:
            return
        held, self.held = list(self.held.values()), {}
        session.csi = None
        try:
            for stanza in held:
                session.send(stanza)
        finally:
            if session.csi is None and not session.closed:
                session.csi = self

    def activate(self, session) -> None:
        """Back to active: send what is held; the session holds nothing any more."""
        self.flush(session)
        session.csi = None


def element(session, nonza: ET.Element) -> None:
    """``<active/>`` or ``<inactive/>`` from a bound session (§4.2)."""
    local = nonza.tag.rpartition("}")[2]
    if local == "inactive":
        if session.csi is None:
            session.csi = ClientState(session.service.settings["csi_max_held"])
    elif local == "active":
        if session.csi is not None:
            session.csi.activate(session)
    else:
        session.close("unsupported-stanza-type", f"unknown client state element <{local}/>")
