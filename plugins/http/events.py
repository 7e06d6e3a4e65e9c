"""The API's event streams: Server-Sent Events (WHATWG HTML §9.2), each an endpoint of its account.

A client that opens ``GET /api/events`` is online: its stream logs in as
``account/http-<random>`` (protocol ``"http"``) and the router delivers to it like to an XMPP
resource or a SIP binding; when the client goes away the stream logs out and messages are stored
again. Events, each ``event: <name>`` and one ``data:`` line of JSON:

- ``stream`` first: ``{"stream": <id>, "jid": <full JID>}``; POST /api/messages with
  ``"stream": <id>`` sends from this stream, so replies come back to it;
- ``presence`` for each available contact whose presence the account sees, then at every change
  (``presence_changed``, run from the ``on_presence`` hook);
- ``message`` for each message: stored ones first (with ``stamp``), then as they come.

A ``: keep-alive`` comment goes out every ``[http] sse_keepalive`` seconds, so a client that has
gone is noticed by a failed write. At most ``[http] sse_queue`` events wait for a client: a full
queue refuses the message with ``resource-constraint`` (the router stores it) and ends the stream
after the events already queued; the client reconnects and gets the stored messages.
"""
from __future__ import annotations

import json
import secrets
from datetime import datetime, timezone
from weakref import WeakKeyDictionary

import gevent
from gevent.queue import Empty, Full, Queue

from convergence import Address, Presence, RoutingError, contacts

#: The open streams of each running core, by account (tests run several cores in one process).
STREAMS: WeakKeyDictionary = WeakKeyDictionary()
KEEPALIVE = b": keep-alive\n\n"


def event(name: str, data: dict) -> bytes:
    """One event (§9.2.6): JSON has no raw line breaks, so it fits one ``data:`` line."""
    return f"event: {name}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


def _utc(stamp: datetime | None) -> str | None:
    if stamp is None:
        return None
    if stamp.tzinfo is not None:
        stamp = stamp.astimezone(timezone.utc).replace(tzinfo=None)
    return stamp.isoformat(timespec="seconds") + "Z"  # XEP-0082 DateTime


def message_data(message) -> dict:
    return {"id": message.id, "from": message.sender.jid, "to": message.recipient.jid,
            "type": message.type, "body": message.body, "subject": message.subject,
            "thread": message.thread, "stamp": _utc(message.stamp), "error": message.error}


def presence_data(contact: Address, presence: Presence) -> dict:
    return {"jid": contact.jid, "available": presence.available, "show": presence.show,
            "status": presence.status}


class Stream:
    """An open event stream: the endpoint the router and the presence hub see."""

    protocol = "http"

    def __init__(self, core, account: Address, max_queued: int):
        self.core = core
        self.address = account.with_resource(f"http-{secrets.token_hex(8)}")
        self.presence = Presence()
        self.queue: Queue = Queue(max_queued)
        self.ended = False

    @property
    def id(self) -> str:
        return self.address.resource

    def deliver(self, message) -> None:
        if not self._put(event("message", message_data(message))):
            raise RoutingError("resource-constraint", f"the event stream {self.id} is not reading")

    def show(self, contact: Address, presence: Presence) -> None:
        self._put(event("presence", presence_data(contact, presence)))

    def _put(self, data: bytes) -> bool:
        if self.ended:
            return False
        try:
            self.queue.put_nowait(data)
            return True
        except Full:  # a slow reader: stop accepting, drain what is queued, then end
            self.ended = True
            gevent.spawn(self.core.presence.logout, self)
            return False

    def events(self, keepalive: float):
        """The response body: log in, announce, snapshot, stored messages, then live events."""
        account = self.address.bare
        STREAMS.setdefault(self.core, {}).setdefault(account, set()).add(self)
        self.core.presence.login(self)
        try:
            yield event("stream", {"stream": self.id, "jid": self.address.jid})
            for contact in contacts.watched(self.core, account):
                presence = self.core.presence.presence(contact)
                if presence.available:
                    yield event("presence", presence_data(contact, presence))
            self.core.router.deliver_stored(account)
            while not (self.ended and self.queue.empty()):
                try:
                    yield self.queue.get(timeout=keepalive)
                except Empty:
                    yield KEEPALIVE
        finally:  # the client went away (a failed write closes this generator) or the stream ended
            self.ended = True
            streams = STREAMS.get(self.core, {})
            mine = streams.get(account, set())
            mine.discard(self)
            if not mine:
                streams.pop(account, None)
            self.core.presence.logout(self)


def presence_changed(core, account: Address, presence: Presence) -> None:
    """``on_presence``: tell the streams of every account that sees ``account``."""
    for owner, streams in list(STREAMS.get(core, {}).items()):
        if streams and contacts.sees(core, owner, account):
            for stream in list(streams):
                stream.show(account.bare, presence)
