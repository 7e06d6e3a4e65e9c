"""The callback forwarder: messages for the HTTP user are POSTed to ``[callback] url`` and the
answer comes back as the HTTP user's reply; failures come back as error messages, never a hang."""
import json
import logging
import queue
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from convergence import Address, Message
from convergence.plugins.callback.forwarder import Failure, Policy, Response, forward, interpret, payload
from convergence.testing import free_port

PEOPLE = {"alice": "wonderland"}
CHAT_STATES = "http://jabber.org/protocol/chatstates"
HTTP_USER = "httpuser@example.org"
FAST = {"backoff": 0.05}  # [callback] for tests: short back-off


class Target:
    """A callback service in this process: ``behave(request) -> (status, content type, body,
    *headers)``,
    set by each test; every request (headers and JSON) is queued in ``requests``."""

    def __init__(self):
        self.requests: queue.Queue = queue.Queue()
        self.release = threading.Event()  # for behaviours that hold the answer back
        self.behave = lambda request: (200, "text/plain; charset=utf-8", request["json"]["body"].upper())
        target = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                data = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                request = {"method": self.command, "path": self.path,
                           "content_type": self.headers["Content-Type"],
                           "json": json.loads(data) if data else None}
                target.requests.put(request)
                status, content_type, body, *headers = target.behave(request)
                body = body.encode() if isinstance(body, str) else body
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                for name, value in headers:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST  # a followed redirect would show up here

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/bot"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def next(self, timeout: float = 5) -> dict:
        return self.requests.get(timeout=timeout)

    def close(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def target():
    target = Target()
    yield target
    target.close()


@pytest.fixture
def alice_and(convergence_server, xmpp_client):
    """``alice_and(callback_url, **callback)``: a server whose HTTP user forwards to the URL, and
    alice logged in to it, watching for error messages."""
    def start(url, **callback):
        server = convergence_server(PEOPLE, callback={"url": url, **FAST, **callback})
        alice = xmpp_client(server, "alice")
        alice.watch("message_error")  # before sending: an error may come back at once
        return alice
    return start


def reply_to(alice, body, **fields):
    alice.send_message(HTTP_USER, body, **fields)
    return alice.next("message", match=lambda m: str(m["from"]) == HTTP_USER and m["type"] != "error")


def error_to(alice, body, timeout=5):
    alice.send_message(HTTP_USER, body)
    error = alice.next("message_error", timeout=timeout)
    assert str(error["from"]) == HTTP_USER
    return error["error"]["condition"], error["error"]["text"]


# ---- scenarios: a real server, a real XMPP client, a real HTTP callback ----------------------------

def test_the_callback_answers_for_the_http_user(target, alice_and):
    alice = alice_and(target.url)
    reply = reply_to(alice, "hello bot", subject="greeting", thread="t1")
    assert (reply["body"], reply["subject"], reply["thread"], reply["type"]) == (
        "HELLO BOT", "greeting", "t1", "chat")
    request = target.next()
    assert (request["path"], request["content_type"]) == ("/bot", "application/json; charset=utf-8")
    sent = request["json"]
    assert {k: sent[k] for k in ("from", "to", "type", "body", "subject", "thread")} == {
        "from": alice.jid, "to": HTTP_USER, "type": "chat", "body": "hello bot",
        "subject": "greeting", "thread": "t1"}
    assert sent["id"]


def test_a_json_answer_gives_its_body_field(target, alice_and):
    target.behave = lambda request: (200, "application/json", json.dumps({"body": "from json", "x": 1}))
    assert reply_to(alice_and(target.url), "hi")["body"] == "from json"


def test_an_empty_answer_gives_no_reply(target, alice_and):
    target.behave = lambda request: (204 if request["json"]["body"] == "quiet" else 200, "text/plain",
                                     "" if request["json"]["body"] == "quiet" else "loud")
    alice = alice_and(target.url, workers=1)  # one worker: answered in order
    alice.send_message(HTTP_USER, "quiet")
    assert reply_to(alice, "second")["body"] == "loud"  # the first reply is the second message's


def test_a_failed_try_is_retried(target, alice_and):
    statuses = iter([500, 200])
    target.behave = lambda request: (next(statuses), "text/plain", "made it")
    assert reply_to(alice_and(target.url, retries=1), "again")["body"] == "made it"
    assert [target.next()["json"]["body"] for _ in range(2)] == ["again", "again"]


def test_a_failing_callback_gives_service_unavailable_after_the_retries(target, alice_and):
    target.behave = lambda request: (500, "text/plain", "broken")
    condition, text = error_to(alice_and(target.url, retries=2), "anyone?")
    assert condition == "service-unavailable"
    assert "HTTP 500" in text and "tried 3 times" in text
    assert target.requests.qsize() == 3


@pytest.mark.parametrize("answer, condition", [
    ((422, "text/plain", "no"), "not-acceptable"),
    ((302, "text/plain", "", ("Location", "/elsewhere")), "service-unavailable"),  # not followed
])
def test_a_refusal_or_a_redirect_is_not_retried(target, alice_and, answer, condition):
    target.behave = lambda request: answer
    assert error_to(alice_and(target.url, retries=2), "bad")[0] == condition
    assert (target.next()["method"], target.requests.empty()) == ("POST", True)


def test_a_slow_callback_times_out_without_a_hang(target, alice_and):
    target.behave = lambda request: (target.release.wait(10), (200, "text/plain", "late"))[1]
    alice = alice_and(target.url, timeout=0.3, retries=0)
    started = time.monotonic()
    condition, text = error_to(alice, "slow?", timeout=3)
    assert condition == "remote-server-timeout" and "in time" in text
    assert time.monotonic() - started < 1.5


def test_nothing_listening_gives_service_unavailable(alice_and):
    condition, text = error_to(alice_and(f"http://127.0.0.1:{free_port()}/bot", retries=1), "hello?")
    assert condition == "service-unavailable" and "unreachable" in text


def test_a_full_queue_refuses_at_once(target, alice_and):
    target.behave = lambda request: (target.release.wait(10), (200, "text/plain", request["json"]["body"]))[1]
    alice = alice_and(target.url, queue_size=1, workers=1)
    alice.send_message(HTTP_USER, "in flight")
    assert target.next()["json"]["body"] == "in flight"  # the worker holds it
    alice.send_message(HTTP_USER, "waiting")  # fills the queue
    started = time.monotonic()
    condition, _ = error_to(alice, "one too many")
    assert condition == "resource-constraint" and time.monotonic() - started < 1
    target.release.set()
    answers = [alice.next("message", match=lambda m: m["type"] == "chat")["body"] for _ in range(2)]
    assert answers == ["in flight", "waiting"]


def test_error_messages_are_not_forwarded(target, alice_and):
    alice = alice_and(target.url)
    alice.send_message(HTTP_USER, "an error", type="error")
    assert reply_to(alice, "a question")["body"] == "A QUESTION"
    assert target.next()["json"]["body"] == "a question"  # the error never reached the callback
    assert target.requests.empty()


def test_typing_notices_are_not_forwarded(target, alice_and):
    """A chat state alone (XEP-0085) has no text: the callback never sees an empty message."""
    alice = alice_and(target.url)
    alice.call(lambda: alice.xmpp.send_raw(
        f'<message to="{HTTP_USER}" type="chat"><composing xmlns="{CHAT_STATES}"/></message>'))
    assert reply_to(alice, "a question")["body"] == "A QUESTION"
    assert target.next()["json"]["body"] == "a question"  # the typing notice never reached it
    assert target.requests.empty()


@pytest.mark.parametrize("config, error", [
    ('[server]\ndisabled_plugins = ["http"]\n[callback]\nurl = "http://127.0.0.1:9/bot"\n',
     "[callback] url is set, but plugin 'callback' needs plugin 'http', which is disabled in "
     "[server] disabled_plugins"),
    ('[callback]\nurl = "ftp://example.org/bot"\n',
     "[callback] url: expected an http:// or https:// URL, got 'ftp://example.org/bot'"),
    ('[http]\ncallback_url = "ftp://example.org/bot"\n',
     "[http] callback_url: expected an http:// or https:// URL, got 'ftp://example.org/bot'"),
])
def test_a_callback_url_that_cannot_work_stops_start_up(tmp_path, config, error, run_convergence):
    path = tmp_path / "c.toml"
    path.write_text(f'[server]\ndata_dir = "{tmp_path}"\n' + config.replace("[server]\n", ""))
    result = run_convergence("--config", path, "serve", timeout=30)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == f"Error: {path}: {error}"


def test_the_old_name_http_callback_url_still_works_with_a_warning(make_core, caplog):
    """``[http] callback_url`` is read while ``[callback] url`` is empty; start-up warns once."""
    with caplog.at_level(logging.WARNING):
        core = make_core({"http": {"callback_url": "http://127.0.0.1:9/old"}})
        new = make_core({"http": {"callback_url": "http://127.0.0.1:9/old"},
                         "callback": {"url": "http://127.0.0.1:9/new"}})
    assert [r.getMessage() for r in caplog.records if "deprecated" in r.getMessage()] == \
        ["[http] callback_url is deprecated: set [callback] url instead"] * 2
    for server, url in ((core, "http://127.0.0.1:9/old"), (new, "http://127.0.0.1:9/new")):
        forwarder = server.pm.get_plugin("callback:server")
        assert (forwarder.url, forwarder.address) == (url, server.address("httpuser"))
        assert server.hook.resolve_recipient(core=server, address=server.address("httpuser")) is forwarder


def test_without_a_url_the_http_user_echoes_and_nothing_is_forwarded(make_core):
    core = make_core()
    assert core.pm.get_plugin("callback:server") is None
    route = core.hook.resolve_recipient(core=core, address=core.address("httpuser"))
    assert route is core.pm.get_plugin("http:server").route


# ---- the policy, without I/O ----------------------------------------------------------------------

MESSAGE = Message(Address("alice", "example.org", "phone"), Address("httpuser", "example.org"), "hi",
                  thread="t", type="chat", id="m1")


def text(status, body, media_type="text/plain", charset="utf-8"):
    return Response(status, media_type, charset, body.encode(charset))


def run(outcomes, policy):
    """forward() over scripted outcomes (a Response, or an exception raised by the POST)."""
    script, slept = iter(outcomes), []

    def post():
        outcome = next(script)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome
    return forward(post, policy, slept.append), slept


def test_payload_is_the_message_as_json():
    assert json.loads(payload(MESSAGE)) == {"from": "alice@example.org/phone", "to": "httpuser@example.org",
                                            "type": "chat", "body": "hi", "subject": None,
                                            "thread": "t", "id": "m1"}


@pytest.mark.parametrize("response, reply", [
    (text(200, "  plain text \n"), "plain text"),
    (text(200, '{"body": "the body"}', "application/json"), "the body"),
    (text(200, '{"answer": 42}', "application/json"), '{"answer": 42}'),
    (text(200, "not json", "application/json"), "not json"),
    (text(200, "caf\u00e9", charset="latin-1"), "caf\u00e9"),
    (Response(200, "text/plain", "no-such-charset", b"ok"), "ok"),
    (text(204, ""), ""),
])
def test_a_2xx_answer_is_the_reply_text(response, reply):
    assert interpret(response) == reply


@pytest.mark.parametrize("status, condition, retry", [
    (400, "not-acceptable", False), (404, "not-acceptable", False), (302, "service-unavailable", False),
    (500, "service-unavailable", True), (503, "service-unavailable", True)])
def test_other_statuses_fail(status, condition, retry):
    outcome = interpret(text(status, "x"))
    assert (outcome.condition, outcome.retry) == (condition, retry)


def test_retries_back_off_doubling_then_give_up():
    outcome, slept = run([text(500, "")] * 4, Policy(retries=3, backoff=0.5))
    assert slept == [0.5, 1.0, 2.0]
    assert isinstance(outcome, Failure) and outcome.reason.endswith("tried 4 times")


def test_a_success_or_a_refusal_ends_the_tries():
    assert run([ConnectionRefusedError(), text(200, "ok")], Policy(3, 0.1)) == ("ok", [0.1])
    outcome, slept = run([TimeoutError(), text(404, "")], Policy(3, 0.1))
    assert (outcome.condition, slept) == ("not-acceptable", [0.1])


def test_timeouts_and_refused_connections_are_named():
    timeout, _ = run([TimeoutError()], Policy(0, 1))
    refused, _ = run([ConnectionRefusedError(111, "Connection refused")], Policy(0, 1))
    assert (timeout.condition, refused.condition) == ("remote-server-timeout", "service-unavailable")
    assert "tried" not in timeout.reason  # one try only
