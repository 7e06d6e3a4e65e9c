"""The callback forwarder: messages for the HTTP user go to ``[callback] url`` as JSON.

This is the original sample's commented-out ``doHTTPGateway`` (research/seed.md §1.2 case 2), with
JSON instead of a form, and with failures reported. The policy is sans-IO — :func:`payload`,
:func:`interpret` (what a response means), :func:`forward` (tries, back-off) take no sockets and
no clocks — and :class:`Forwarder` runs it: a bounded queue, worker greenlets, :func:`post` (the
only I/O, cooperative because ``convergence serve`` monkey-patches the stdlib first). The
Forwarder is also the plugin's object for its core (``callback:server``): it claims the HTTP user.

What the sender gets back: a 2xx response's text as the HTTP user's reply (nothing when it is
empty); after the tries are used up an ``error`` message whose condition (RFC 6120 §8.3.3) is
``remote-server-timeout`` (no answer in time), ``service-unavailable`` (refused connection, 5xx,
other non-2xx) or ``not-acceptable`` (4xx, not retried).
"""
from __future__ import annotations

import codecs
import dataclasses
import http.client
import json
import logging
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Callable

import gevent
import gevent.queue

from convergence import Address, Message, RoutingError, __version__, hookimpl
from convergence.router import DELIVERED, DISCARDED
from convergence.services import answer

log = logging.getLogger(__name__)

CONTENT_TYPE = "application/json; charset=utf-8"


@dataclass(frozen=True)
class Response:
    """What the callback answered: status, media type (lower case, no parameters), charset, body."""

    status: int
    media_type: str
    charset: str
    body: bytes


@dataclass(frozen=True)
class Failure:
    """No usable answer: the RFC 6120 §8.3.3 condition for the sender, why, and whether to try again."""

    condition: str
    reason: str
    retry: bool


@dataclass(frozen=True)
class Policy:
    """``retries`` more tries after the first, ``backoff`` seconds before the first retry, doubling."""

    retries: int
    backoff: float

    def delays(self) -> list[float]:
        return [self.backoff * 2 ** n for n in range(self.retries)]


def payload(message: Message) -> bytes:
    """The JSON object POSTed for ``message`` (addresses as JIDs, absent fields as null)."""
    return json.dumps({"from": message.sender.jid, "to": message.recipient.jid, "type": message.type,
                       "body": message.body, "subject": message.subject, "thread": message.thread,
                       "id": message.id}, ensure_ascii=False).encode()


def reply_text(response: Response) -> str:
    """The reply in a 2xx body: a JSON object's string ``"body"``, else the whole text; trimmed."""
    charset = response.charset
    try:
        codecs.lookup(charset)
    except LookupError:
        charset = "utf-8"
    text = response.body.decode(charset, errors="replace")
    if response.media_type == "application/json":
        try:
            data = json.loads(text)
        except (ValueError, RecursionError):  # not JSON after all: the text is the reply
            data = None
        if isinstance(data, dict) and isinstance(data.get("body"), str):
            text = data["body"]
    return text.strip()


def interpret(response: Response) -> str | Failure:
    """2xx → the reply text (``""``: no reply); 5xx → retried; 4xx → refused for good."""
    status = response.status
    if 200 <= status < 300:
        return reply_text(response)
    if 400 <= status < 500:
        return Failure("not-acceptable", f"the HTTP user's callback refused the message (HTTP {status})",
                       retry=False)
    return Failure("service-unavailable", f"the HTTP user's callback failed (HTTP {status})",
                   retry=status >= 500)


def failure(exc: Exception) -> Failure:
    """A POST that raised: a timeout, or a connection that could not be made or was cut."""
    reason = getattr(exc, "reason", exc)  # URLError wraps the socket error
    if isinstance(reason, TimeoutError):
        return Failure("remote-server-timeout", "the HTTP user's callback did not answer in time",
                       retry=True)
    return Failure("service-unavailable", f"the HTTP user's callback is unreachable ({reason})",
                   retry=True)


def forward(post: Callable[[], Response], policy: Policy, sleep: Callable[[float], None]) -> str | Failure:
    """POST, and again after each back-off delay while the failure may pass; the last outcome."""
    tries = 0
    for delay in (None, *policy.delays()):
        if delay is not None:
            sleep(delay)
        tries += 1
        try:
            outcome = interpret(post())
        except (OSError, http.client.HTTPException) as exc:
            outcome = failure(exc)
        if not (isinstance(outcome, Failure) and outcome.retry):
            break
    if isinstance(outcome, Failure) and tries > 1:
        outcome = dataclasses.replace(outcome, reason=f"{outcome.reason}; tried {tries} times")
    return outcome


class NoRedirects(urllib.request.HTTPRedirectHandler):
    """A 3xx is the callback's answer: urllib would re-send a POST as a GET without its body."""

    def redirect_request(self, *args):
        return None


OPENER = urllib.request.build_opener(NoRedirects)


def post(url: str, data: bytes, timeout: float) -> Response:
    """One POST of ``data``, ``timeout`` seconds at most in all (connect, send, read)."""
    request = urllib.request.Request(url, data, {"Content-Type": CONTENT_TYPE,
                                                 "User-Agent": f"convergence/{__version__}"})
    with gevent.Timeout(timeout, TimeoutError(f"no answer within {timeout:g} s")):
        try:
            response = OPENER.open(request, timeout=timeout)
        except urllib.error.HTTPError as error:  # a non-2xx status is an answer too
            response = error
        with response:
            headers = response.headers
            return Response(response.getcode(), headers.get_content_type(),
                            headers.get_content_charset("utf-8"), response.read())


class Forwarder:
    """The HTTP user's route while ``[callback] url`` is set: each message waits for a worker.

    ``deliver`` never blocks: a full queue refuses the message with ``resource-constraint`` at
    once. An ``error`` message is neither forwarded nor answered (RFC 6120 §8.3.1: no loops).
    """

    def __init__(self, core, address: Address, url: str, settings: dict):
        self.core = core
        self.address = address
        self.url = url
        self.timeout = settings["timeout"]
        self.policy = Policy(settings["retries"], settings["backoff"])
        self.queue = gevent.queue.Queue(settings["queue_size"])
        self.busy = 0
        self.workers = [gevent.spawn(self._work) for _ in range(settings["workers"])]

    def deliver(self, message: Message) -> str:
        if message.type == "error" or not message.has_text:  # errors, typing notices (XEP-0085)
            return DISCARDED
        try:
            self.queue.put_nowait(message)
        except gevent.queue.Full:
            raise RoutingError("resource-constraint", f"{self.address} has {self.queue.maxsize} "
                               "messages waiting for its callback") from None
        return DELIVERED

    def _work(self) -> None:
        for message in self.queue:
            self.busy += 1
            try:
                outcome = self._outcome(message)
                if outcome is not None:
                    answer(self.core, outcome)
            finally:
                self.busy -= 1

    def _outcome(self, message: Message) -> Message | None:
        """The reply or error message for ``message``, or None when the callback has nothing to say."""
        try:
            outcome = forward(lambda: post(self.url, payload(message), self.timeout), self.policy,
                              gevent.sleep)
        except Exception:  # noqa: BLE001 - a bug must neither kill the worker nor lose the message
            log.exception("callback forwarder failed on %s", message.id)
            return message.failed("internal-server-error", "the HTTP user's callback forwarder failed")
        if isinstance(outcome, Failure):
            log.warning("callback for %s from %s: %s", message.id, message.sender, outcome.reason)
            return message.failed(outcome.condition, outcome.reason)
        return message.reply(body=outcome) if outcome else None

    @hookimpl(tryfirst=True)  # ahead of the HTTP plugin, whose route for the HTTP user echoes
    def resolve_recipient(self, address):
        return self if address.bare == self.address else None

    @hookimpl
    def on_shutdown(self):
        self.stop()
        self.core.pm.unregister(self)

    def stop(self) -> None:
        """Stop the workers; messages still waiting or in flight are logged as not answered."""
        pending = self.queue.qsize() + self.busy
        gevent.killall(self.workers)
        if pending:
            log.warning("callback forwarder stopped: %d messages for %s not answered", pending,
                        self.address)
