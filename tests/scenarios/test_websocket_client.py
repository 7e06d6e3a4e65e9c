"""A browser XMPP library over WebSocket (RFC 7395): @xmpp/client (npm, tests/websocket_client/)
run by Node logs in at /xmpp-websocket and chats with echo, with a slixmpp user over STARTTLS and
with a SIP phone (SIPp). ``.ci/run`` installs the package (``npm ci``) when Node is present."""
import json
import queue
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from actors import received_messages
from sipp_runner import needs_sipp

PACKAGE = Path(__file__).parent.parent / "websocket_client"
pytestmark = pytest.mark.skipif(shutil.which("node") is None, reason="node (Node.js) not installed")


class NodeClient:
    """``client.mjs`` as a subprocess: JSON commands in, JSON events out (one per line)."""

    def __init__(self, server, user: str, password: str, resource: str = "browser"):
        if not (PACKAGE / "node_modules" / "@xmpp" / "client").is_dir():
            pytest.fail(f"@xmpp/client is not installed: npm ci --prefix {PACKAGE}")
        url = f"ws://127.0.0.1:{server.http_port}/xmpp-websocket"
        self.process = subprocess.Popen(
            ["node", str(PACKAGE / "client.mjs"), url, server.domain, user, password, resource],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.events: queue.Queue = queue.Queue()
        self.seen: list[dict] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.events.put(json.loads(line))
        self.events.put({"event": "exit"})

    def next(self, event: str, match=lambda e: True, timeout: float = 10) -> dict:
        """The next ``event`` that ``match``es; an error event or the process ending fails."""
        while True:
            try:
                got = self.events.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"no {event} in {timeout} s; before: {self.seen}") from None
            self.seen.append(got)
            if got["event"] == event and match(got):
                return got
            if got["event"] in ("error", "exit"):
                raise AssertionError(f"{got} while waiting for {event}; stderr: "
                                     f"{self.process.stderr.read() if got['event'] == 'exit' else ''}")

    def command(self, **command) -> None:
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()

    def send(self, to: str, body: str) -> None:
        self.command(send={"to": to, "body": body})
        self.next("sent")

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(5)


@needs_sipp
def test_xmpp_client_library_logs_in_over_websocket_and_chats_with_echo_xmpp_and_a_phone(
        demo, xmpp_client, phone):
    browser = NodeClient(demo, "convergence", "1")
    try:
        jid = browser.next("online")["jid"]
        assert jid == demo.jid("convergence", "browser")
        browser.command(presence={})
        browser.next("presence", lambda e: e["from"] == jid)  # its own presence back (RFC 6121 §4.2.2)
        # echo
        browser.send("echo@example.org", "hello echo")
        reply = browser.next("message", lambda e: e["from"] == "echo@example.org")
        assert (reply["body"], reply["type"]) == ("hello echo", "chat")
        # a slixmpp user over STARTTLS, both ways
        userc = xmpp_client(demo, "userc")
        browser.send(demo.jid("userc"), "hi userc, from a browser")
        message = userc.next("message")
        assert (message["body"], str(message["from"])) == ("hi userc, from a browser", jid)
        userc.send_message(jid, "hi browser")
        got = browser.next("message", lambda e: e["from"] == userc.jid)
        assert got["body"] == "hi browser"
        # sipuserf's phone, both ways
        phone.register()
        incoming = phone.receive()
        browser.send(demo.jid("sipuserf"), "hi phone")
        (received,) = received_messages(incoming())
        assert "hi phone" in received and "From: <sip:convergence@example.org>" in received
        phone.send("convergence", "hi browser, from a phone")
        got = browser.next("message", lambda e: e["from"].startswith(demo.jid("sipuserf")))
        assert got["body"].strip() == "hi browser, from a phone"  # SIPp ends bodies with CRLF
        # <close/>: the library ends cleanly; userc sees the resource go
        browser.command(stop=True)
        browser.next("offline")
        assert browser.process.wait(10) == 0
        userc.next("presence", match=lambda p: str(p["from"]) == jid and p["type"] == "unavailable")
    finally:
        browser.close()
