"""The API's event streams: Server-Sent Events (WHATWG HTML §9.2), each an endpoint of its account.

A client that opens ``GET /api/events`` is online: its stream logs in as
``account/http-<random>`` (protocol ``"http"``) and the router delivers to it like to an XMPP
resource or a SIP binding; when the client goes away the stream logs out and messages are stored
again. Events, each ``event: <name>`` and one ``data:`` line of JSON:

- ``stream`` first: ``{"stream": <id>, "jid": <full JID>}``; POST /api/messages with
  ``"stream": <id>`` sends from this stream, so replies come back to it;
- ``presence`` for each available contact whose presence the account sees, then at every change
  (``presence_changed``, run from the ``on_presence`` hook), and when a block list (XEP-0191)
  starts or stops keeping a contact's presence from it (``screen_changed``: unavailable, or the
  contact's presence again);
- ``message`` for each message: stored ones first (with ``stamp``), then as they come.

A ``: keep-alive`` comment goes out every ``[http] sse_keepalive`` seconds, so a client that has
gone is noticed by a failed write. At most ``[http] sse_queue`` events wait for a client: a full
queue refuses the message with ``resource-constraint`` (the router stores it) and ends the stream
after the events already queued; the client reconnects and gets the stored messages.

A message is never reported delivered and then lost (issue 11). The client sends nothing after its
request, so its socket turning readable means it closed: the loop watches for that and the stream
leaves the presence hub at once; ``deliver`` looks too (a message for a client that has gone is
refused, so the router stores it: the API answers 202), and so does the stream after writing each
message. A message the stream took but did not write goes back to the router (``Router.returned``
stores it). ``flush``, the Endpoint method the router waits on while it hands over a stored
backlog (which runs in a greenlet of its own, as the stream's generator does the writing), returns
once the WSGI server has written every message taken so far.

The streams of a deleted account end, and so do those opened with the password (HTTP Basic) when
the password changes (``account_changed``, run from the ``on_account`` hook, also for changes made
by the CLI: docs/operations.md).

The open streams of a core are a :class:`Streams`, owned by the HTTP plugin's object for that core
(``http:server``, :mod:`.server`), which passes it the ``on_presence`` and ``on_account`` hooks.
"""
from __future__ import annotations

import fcntl
import json
import os
import secrets
import socket
import struct
import termios
import time
from datetime import datetime, timezone

import gevent
from flask import has_request_context, request
from gevent.event import Event
from gevent.queue import Empty, Full, Queue

from convergence import Address, Presence, RoutingError, contacts
from convergence.presence import UNAVAILABLE

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


class MessageEvent(bytes):
    """A ``message`` event, knowing its message: given back to the router if it is not written."""

    def __new__(cls, message):
        chunk = super().__new__(cls, event("message", message_data(message)))
        chunk.message = message
        return chunk


def presence_data(contact: Address, presence: Presence) -> dict:
    return {"jid": contact.jid, "available": presence.available, "show": presence.show,
            "status": presence.status}


class Stream:
    """An open event stream: the endpoint the router and the presence hub see."""

    protocol = "http"

    def __init__(self, core, streams: Streams, account: Address, max_queued: int):
        self.core = core
        self.streams = streams  # the core's open streams: this one joins them while it runs
        # Opened with the password (HTTP Basic), not a bearer token: ends when the password changes.
        self.by_password = not has_request_context() or request.authorization.type == "basic"
        self.address = account.with_resource(f"http-{secrets.token_hex(8)}")
        self.presence = Presence()
        self.queue: Queue = Queue(max_queued)
        self.ended = False
        self.taken = self.written = 0  # messages deliver took; of those, written to the client
        self.hidden: set[Address] = set()  # contacts a block list keeps from it (``screen``)
        self._progress = Event()  # set at each written message and at the end (``flush``)
        self._in_flight = False  # a message event is being written: its fate is not known yet
        # The client's socket (a duplicate descriptor: looked at, never read from) and the loop's
        # watcher for it turning readable.
        # The WSGI handler puts the connection's socket in the environ as ``convergence.socket``.
        self._client = self._watcher = None
        client = request.environ.get("convergence.socket") if has_request_context() else None
        if client is not None:
            self._client = socket.socket(fileno=os.dup(client.fileno()))
            self._client.settimeout(0.0)

    @property
    def id(self) -> str:
        return self.address.resource

    def screen(self, contact: Address, hidden: bool) -> None:
        """Whether ``contact``'s presence is now kept from the stream (a block list): it goes
        unavailable once, or comes back once (``Streams.screen_changed``)."""
        if hidden and contact not in self.hidden:
            self.hidden.add(contact)
            self.show(contact, UNAVAILABLE)
        elif not hidden and contact in self.hidden:
            self.hidden.discard(contact)
            presence = self.core.presence.presence(contact)
            if presence.available:
                self.show(contact, presence)

    def deliver(self, message) -> None:
        if self._client_gone():
            raise RoutingError("recipient-unavailable", f"the client of event stream {self.id} left")
        if not self._put(MessageEvent(message)):
            raise RoutingError("resource-constraint", f"the event stream {self.id} is not reading")
        self.taken += 1

    def flush(self, timeout: float) -> bool:
        """Endpoint.flush: wait until every message taken so far has been written to the client;
        False if the stream ended first (it gave back what it did not write) or ``timeout``."""
        target, deadline = self.taken, time.monotonic() + timeout
        while self.written < target and (not self.ended or self._in_flight):
            self._progress.clear()
            if not self._progress.wait(max(0.0, deadline - time.monotonic())):
                return False
        return self.written >= target

    def show(self, contact: Address, presence: Presence) -> None:
        self._put(event("presence", presence_data(contact, presence)))

    def end(self) -> None:
        """End the stream after the events already queued (``account_changed``)."""
        if not self.ended:
            self.ended = True
            self._progress.set()
            try:  # wake ``events`` if it waits for the queue (PEP 3333: an empty chunk sends nothing)
                self.queue.put_nowait(b"")
            except Full:
                pass  # it is not waiting: it drains the queue, then ends

    def _put(self, data: bytes) -> bool:
        if self.ended:
            return False
        try:
            self.queue.put_nowait(data)
            return True
        except Full:  # a slow reader: stop accepting, drain what is queued, then end
            self.ended = True
            self.streams.overflows += 1
            gevent.spawn(self.core.presence.logout, self)
            return False

    def _peer(self) -> str:
        """What the client's side of the connection says now, without reading anything:
        ``"open"``, ``"closed"`` (a FIN: it closed cleanly) or ``"reset"``."""
        if self._client is None or self._client.fileno() < 0:
            return "open"
        try:
            if self._client.recv(1, socket.MSG_PEEK):
                return "open"  # bytes after the request: not a close (and nothing we read)
        except (BlockingIOError, InterruptedError):
            return "open"
        except OSError:
            return "reset"
        return "closed"

    def _client_gone(self) -> bool:
        """Whether the client has closed its end; if so the stream ends at once (``_leave``)."""
        if self._peer() == "open":
            return False
        self._leave()
        return True

    def _read_before_close(self) -> bool:
        """After a write to a client that has closed: whether it read what was written. A client
        that closes with unread bytes resets the connection instead of closing it, and a closed
        socket acknowledges nothing: so a clean close (FIN) with every byte we sent acknowledged
        (``TIOCOUTQ``, what waits in the send queue, is 0) means the client read it, then left.
        Anything else counts as not received: the message goes back to the router, at worst
        arriving twice rather than never."""
        if self._peer() != "closed":
            return False
        try:
            waiting = struct.unpack("i", fcntl.ioctl(self._client.fileno(), termios.TIOCOUTQ,
                                                     b"\0\0\0\0"))[0]
        except OSError:
            return False
        return waiting == 0

    def _leave(self) -> None:
        """End at once: leave the presence hub and give back the messages still queued (none can
        reach the client)."""
        self._stop_watching()
        self.ended = True
        self._progress.set()
        unwritten = list(self.queue.queue)
        self.queue.queue.clear()
        self.queue.put_nowait(b"")  # wake ``events``: it ends (an empty chunk sends nothing)
        self.core.presence.logout(self)
        self._give_back(unwritten)

    def _give_back(self, chunks) -> None:
        for chunk in chunks:
            if isinstance(chunk, MessageEvent):
                self.core.router.returned(chunk.message)

    def _watch(self) -> None:
        """Let the loop tell us when the client's socket turns readable (at its close)."""
        if self._client is not None:
            self._watcher = gevent.get_hub().loop.io(self._client.fileno(), 1)
            self._watcher.start(lambda: gevent.spawn(self._client_gone) and self._stop_watching())

    def _stop_watching(self) -> None:
        if self._watcher is not None:
            self._watcher.stop()
            self._watcher.close()
            self._watcher = None

    def events(self, keepalive: float):
        """The response body: log in, announce, snapshot, stored messages, then live events."""
        account = self.address.bare
        self.streams.add(self)
        self.core.presence.login(self)
        self._watch()
        chunk = backlog = None  # the chunk being written; the greenlet sending the backlog
        try:
            yield event("stream", {"stream": self.id, "jid": self.address.jid})
            for contact in contacts.watched(self.core, account):
                if contacts.screened(self.core, account, contact):
                    self.hidden.add(contact)
                    continue
                presence = self.core.presence.presence(contact)
                if presence.available:
                    yield event("presence", presence_data(contact, presence))
            backlog = gevent.spawn(self.core.router.deliver_stored, account)  # waits on flush
            while not (self.ended and self.queue.empty()):
                try:
                    chunk = self.queue.get(timeout=keepalive)
                except Empty:
                    chunk = KEEPALIVE
                self._in_flight = isinstance(chunk, MessageEvent)
                yield chunk
                if self._in_flight:  # written: but did it reach a client that is still there?
                    peer = self._peer()
                    if peer == "open" or self._read_before_close():
                        self.written += 1
                        chunk = None  # received: not given back
                    self._in_flight = False
                    self._progress.set()
                    if peer != "open":
                        self._leave()
                        break
                chunk = None
        finally:  # the client went away (a failed write closes this generator) or the stream ended
            self.ended = True
            self._in_flight = False
            self._progress.set()
            self._stop_watching()
            unwritten = [chunk, *self.queue.queue]
            self.queue.queue.clear()
            self.streams.discard(self)
            self.core.presence.logout(self)
            self._give_back(unwritten)
            if backlog is not None and not backlog:  # not started yet (``not``: unstarted or dead)
                backlog.kill(block=False)
            if self._client is not None:
                self._client.close()


class Streams:
    """The open event streams of one core, by account."""

    def __init__(self, core):
        self.core = core
        self._by_account: dict[Address, set[Stream]] = {}
        self.overflows = 0  # streams ended because their client did not read (metrics)

    def count(self) -> int:
        """The open streams (metrics)."""
        return sum(len(streams) for streams in self._by_account.values())

    def add(self, stream: Stream) -> None:
        self._by_account.setdefault(stream.address.bare, set()).add(stream)

    def discard(self, stream: Stream) -> None:
        account = stream.address.bare
        mine = self._by_account.get(account, set())
        mine.discard(stream)
        if not mine:
            self._by_account.pop(account, None)

    def presence_changed(self, account: Address, presence: Presence) -> None:
        """``on_presence``: tell the streams of every account that sees ``account``."""
        for owner, streams in list(self._by_account.items()):
            if streams and contacts.sees(self.core, owner, account):
                for stream in list(streams):
                    stream.show(account.bare, presence)

    def screen_changed(self, account: Address) -> None:
        """``on_screen_changed``: a block list of ``account`` changed (XEP-0191 §3.3, §3.4). The
        streams of the accounts whose rosters show ``account`` see it go unavailable when it is
        now kept from them, and get its presence again when it no longer is; so do
        ``account``'s own streams for each of its contacts (``Stream.screen``)."""
        core, account = self.core, account.bare
        for owner, streams in list(self._by_account.items()):
            if owner == account:
                changes = [(c, contacts.screened(core, account, c))
                           for c in contacts.watched(core, account)]
            elif streams and contacts.roster_allows(core, owner, account):
                changes = [(account, contacts.screened(core, owner, account))]
            else:
                continue
            for stream in list(streams):
                for contact, hidden in changes:
                    stream.screen(contact, hidden)

    def account_changed(self, account: Address, change: str) -> None:
        """``on_account``: the streams of a deleted account end, and those that logged in with the
        password when it changes (a bearer token stays valid: its streams go on)."""
        if change not in ("deleted", "changed"):
            return
        for stream in list(self._by_account.get(account, ())):
            if change == "deleted" or stream.by_password:
                stream.end()
