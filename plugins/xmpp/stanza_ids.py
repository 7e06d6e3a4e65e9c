"""XEP-0359 unique and stable stanza ids, sans-IO: what the archive (``archive.py``) stores and
stamps, and what ``messages.py`` strips from what clients send.

``without_our_ids`` drops a ``<stanza-id/>`` a sender put in that claims to be by our domain or one
of its accounts (XEP-0359 §3.1: only the server vouches for its ids); ``<origin-id/>`` and ids by
other entities stay. ``archivable`` says which messages go to the archive (XEP-0313 §3: 1:1
``chat``/``normal`` messages with a body, unless a XEP-0334 ``<no-store/>`` or
``<no-permanent-store/>`` hint says otherwise); ``stanza_text`` is the <message/> as archived.
"""
from __future__ import annotations

from .stanzas import tag
from .stream import _ATTR, _TEXT, CLIENT_NS, _entity, serialize_children

SID = "urn:xmpp:sid:0"
STANZA_ID, ORIGIN_ID = tag("stanza-id", SID), tag("origin-id", SID)
#: XEP-0334 hints that keep a message out of the archive
HINTS_NS = "urn:xmpp:hints"
NOT_ARCHIVED = (tag("no-store", HINTS_NS), tag("no-permanent-store", HINTS_NS))
_DECLARED = f" xmlns='{CLIENT_NS}'"


def archivable(message) -> bool:
    """A 1:1 message with a body, not opted out (XEP-0313 §3, XEP-0334 §4)."""
    if message.type not in ("chat", "normal") or not message.body:
        return False
    extensions = getattr(message, "extensions", ())
    return not extensions or not any(x.tag in NOT_ARCHIVED for x in extensions)


def without_our_ids(extensions: tuple, domain: str) -> tuple:
    """The payloads without a ``<stanza-id/>`` that claims to be by us (XEP-0359 §3.1: the server
    removes those a sender put in; only it may vouch for its own ids)."""
    return tuple(x for x in extensions if x.tag != STANZA_ID
                 or (x.get("by") or "").partition("/")[0].rpartition("@")[2].lower().rstrip(".") != domain)


def stanza_text(start: str) -> str:
    """The <message/> as archived, from its ``message_start``: ``messages.element`` without stamp
    or stanza id, serialized, with its namespace declared."""
    return f"<message{_DECLARED}{start[8:]}</message>"  # after "<message"


def message_start(message, sender_jid: str, recipient_jid: str) -> str:
    """A <message/> as ``serialize(messages.element(…))`` writes it, up to its error, delay stamp
    and stanza id and without its end tag: the core fields written directly (no element tree: the
    archive and each delivery write one), the other payloads through the stream's serializer.
    For a message with a body, subject, thread or payload (else the start tag would be empty)."""
    if _ATTR.search(f"{sender_jid}{recipient_jid}{message.id}"):  # rarely: one search for the three
        sender_jid, recipient_jid, message_id = _attr(sender_jid), _attr(recipient_jid), _attr(message.id)
    else:
        message_id = message.id
    text = [f"<message from='{sender_jid}' to='{recipient_jid}' type='{message.type}' id='{message_id}'>"]
    for name in ("subject", "body", "thread"):
        value = getattr(message, name)
        if value:
            text.append(f"<{name}>{_TEXT.sub(_entity, value)}</{name}>")
    extensions = getattr(message, "extensions", ())
    if extensions:
        text.append(serialize_children(extensions))
    return "".join(text)


def stanza_id_text(by: str, sid: str) -> str:
    """``<stanza-id by='' id=''/>`` (XEP-0359 §3.1) as the stream's serializer writes the element."""
    if _ATTR.search(f"{by}{sid}"):
        by, sid = _attr(by), _attr(sid)
    return f"<stanza-id xmlns='{SID}' by='{by}' id='{sid}'/>"


def _attr(value: str) -> str:
    return _ATTR.sub(_entity, value)
