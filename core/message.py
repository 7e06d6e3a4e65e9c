"""The protocol-neutral instant message every plugin hands to the router.

Fields follow RFC 6121 §5.2 (type, body, subject, thread), which RFC 7572 maps to and from SIP MESSAGE.
"""
from __future__ import annotations

import dataclasses
import itertools
import os
from dataclasses import dataclass, field
from datetime import datetime

from .addresses import Address

#: Characters outside XML 1.0 ``Char`` (§2.2), as a regex class: no XMPP client can be given them.
NOT_XML_CHARS = "\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff"

#: RFC 6121 §5.2.2 message types.
MESSAGE_TYPES = ("chat", "error", "groupchat", "headline", "normal")


class _Ids:
    """Where message ids come from: 64 random bits per process (ids stay unique across restarts
    and processes) and a counter (increasing: the archive's indexes grow at their ends; a uuid4
    per message cost more than building the message). A forked child draws a prefix of its own
    (``os.register_at_fork``): the test kit's fork server forks every server from one parent, and
    a prefix made at import would be every child's."""

    __slots__ = ("prefix", "counter")

    def __init__(self):
        self.renew()

    def renew(self) -> None:
        self.prefix, self.counter = os.urandom(8).hex(), itertools.count(1)


_IDS = _Ids()
os.register_at_fork(after_in_child=_IDS.renew)


def new_id() -> str:
    """A message id unique to this server (``_Ids``)."""
    ids = _IDS
    return f"{ids.prefix}{next(ids.counter):x}"


@dataclass(frozen=True, slots=True)  # slots: built once per message routed, cheaper
class Message:
    """One message from ``sender`` to ``recipient``.

    ``sender`` carries the resource of the endpoint it came from, so a reply addressed to it reaches
    that very endpoint. ``stamp`` is set when the message was stored offline (XEP-0203 delay).
    An ``error`` message names what went wrong in ``error``, an RFC 6120 §8.3.3 condition
    (``recipient-unavailable`` …), with the human text in ``body``.
    """

    sender: Address
    recipient: Address
    body: str = ""
    subject: str | None = None
    thread: str | None = None
    type: str = "normal"
    id: str = field(default_factory=new_id)
    stamp: datetime | None = None
    error: str | None = None

    def __post_init__(self):
        if self.type not in MESSAGE_TYPES:
            raise ValueError(f"message type {self.type!r} is not one of {', '.join(MESSAGE_TYPES)}")

    def reply(self, **changes) -> Message:
        """A message back to the sender: addresses swapped, same type, subject and thread, new id."""
        return dataclasses.replace(self, sender=self.recipient, recipient=self.sender,
                                   id=new_id(), stamp=None, **{"error": None, **changes})

    def failed(self, condition: str, text: str) -> Message:
        """The error message telling the sender this message failed, with its id (RFC 6120 §8.3.1)."""
        return dataclasses.replace(self.reply(type="error", error=condition, body=text), id=self.id)

    @property
    def has_text(self) -> bool:
        """Whether there is a body or subject: a chat state or receipt alone (XEP-0085, XEP-0184)
        has neither, and means nothing to a text-only endpoint (a SIP phone, the HTTP callback)."""
        return bool(self.body or self.subject)

    def size(self) -> int:
        """Bytes of body and subject in UTF-8: what a protocol's size limit applies to."""
        return len(self.body.encode()) + len((self.subject or "").encode())


class RoutingError(Exception):
    """The router could not accept a message.

    ``condition`` is an RFC 6120 §8.3.3 stanza error condition (``item-not-found``,
    ``service-unavailable``, ``remote-server-not-found``, ``resource-constraint``, …); each protocol
    maps it to its own error (RFC 7247 §8 for SIP response codes).

    ``retry_after`` (seconds) marks a temporary refusal — the server cannot decide where the
    message goes right now (a cluster without Redis, core/cluster.py): the sender should try
    again later (HTTP 503 with Retry-After, SIP 503 with Retry-After (RFC 3261 §20.33), an XMPP
    error of type ``wait``).
    """

    def __init__(self, condition: str, text: str, retry_after: float | None = None):
        super().__init__(f"{condition}: {text}")
        self.condition = condition
        self.text = text
        self.retry_after = retry_after
