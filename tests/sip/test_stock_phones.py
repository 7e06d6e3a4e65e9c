"""Stock SIP phones as Debian ships them, against a real ``convergence serve`` with default settings.

baresip 1.0 (package ``baresip``) and sipsak 0.9.8 (``sipsak``) run with their defaults and only a
config directory or command line of our own, pointing at the server on 127.0.0.1 and a free port:
the phone registers (the XMPP user sees it come online), writes to the XMPP user, and — baresip —
shows what the XMPP user writes back. These are the clients that could not register while the
default ``[sip] digest_algorithms`` offered SHA-256 (docs/sip.md has the measured table).

baresip is driven headless: the ``stdio`` module reads ``/``-commands from its stdin (a pipe) and
``menu`` prints registrations and incoming messages on stdout, which ``stdbuf -oL`` keeps line
buffered. sipsak cannot receive a MESSAGE (it has no user-agent mode; its ``-M`` usrloc mode
crashes in 0.9.8.1), so it sends one from a request file (``-f``), answering the 407 itself.

``.ci/run`` installs the packages; a missing binary fails the test under CI (``CI=true``) and skips
it elsewhere.
"""
from __future__ import annotations

import os
import queue
import re
import shutil
import socket
import subprocess
import threading
import time

import pytest

from convergence.testing import free_port

PHONE, USER = "sipuserf", "convergence"
ACCOUNTS = {PHONE: "phone-secret", USER: "1"}


def require(binary: str, package: str) -> None:
    if shutil.which(binary) is None:
        reason = f"{binary} not installed (Debian package {package})"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)


def came_online(jid: str):
    return lambda p: p["from"].bare == jid and p["type"] == "available"


@pytest.fixture
def demo(convergence_server):
    """The README's demo accounts on a server with every setting at its default."""
    return convergence_server(ACCOUNTS)


@pytest.fixture
def user(demo, xmpp_client):
    """The XMPP user, online, watching the roster's presence."""
    return xmpp_client(demo, USER, roster=True)


class Console:
    """A line-oriented client driven through its stdin (``command``); ``expect`` waits for an
    output line matching a pattern. ``QUIT`` is the command that ends it."""

    NAME, QUIT = "the client", "quit"

    def start(self, command: list[str], **options) -> None:
        self.output: list[str] = []
        self.lines: queue.Queue[str] = queue.Queue()
        self.process = subprocess.Popen(["stdbuf", "-oL", *command], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        text=True, bufsize=1, **options)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.put(line)

    def expect(self, pattern: str, timeout: float = 10) -> re.Match:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"{self.NAME} printed no {pattern!r} within {timeout}s:\n"
                                     + "".join(self.output)) from None
            self.output.append(line)
            found = re.search(pattern, line)
            if found:
                return found

    def command(self, text: str) -> None:
        self.process.stdin.write(text + "\n")
        self.process.stdin.flush()

    def close(self) -> None:
        if self.process.poll() is None:
            self.command(self.QUIT)
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class Baresip(Console):
    """One baresip process with its own config directory; ``expect`` waits for an output line."""

    NAME, QUIT = "baresip", "/quit"

    def __init__(self, folder, server, contact: str, apps: tuple = (), account: str = ""):
        """``contact`` (with ``;``-parameters after it, as in baresip's contacts file) is the one
        contact; ``apps`` more application modules (``presence``); ``account`` more account
        parameters (``;pubint=60``)."""
        folder.mkdir()
        (folder / "config").write_text(
            f"sip_listen 127.0.0.1:{free_port(socket.SOCK_DGRAM)}\n"
            "module_path /usr/lib/baresip/modules\n"
            "module stdio.so\nmodule_app account.so\nmodule_app contact.so\nmodule_app menu.so\n"
            + "".join(f"module_app {app}.so\n" for app in apps))
        (folder / "accounts").write_text(
            f"<sip:{PHONE}@{server.domain}>;auth_pass={ACCOUNTS[PHONE]};"
            f'outbound="sip:127.0.0.1:{server.sip_port}"{account}\n')
        uri, _, params = contact.partition(";")
        (folder / "contacts").write_text(f"<sip:{uri}>{';' + params if params else ''}\n")
        self.start(["baresip", "-f", str(folder)])


@pytest.fixture
def baresip(tmp_path):
    require("baresip", "baresip")
    phones = []

    def start(server, contact: str, **options) -> Baresip:
        phones.append(Baresip(tmp_path / f"baresip{len(phones)}", server, contact, **options))
        return phones[-1]

    yield start
    for phone in phones:
        phone.close()


def test_baresip_registers_writes_to_xmpp_and_shows_the_reply(demo, user, baresip):
    phone = baresip(demo, demo.jid(USER))
    phone.expect(r"200 OK .*binding")  # REGISTER answered after the 401 (MD5 digest)
    online = user.next("presence", match=came_online(demo.jid(PHONE)), timeout=10)
    assert online["from"].resource.startswith("sip-")

    phone.command("/contact_next")  # the one contact of its contacts file: the XMPP user
    phone.expect(r"Current contact: .*" + re.escape(demo.jid(USER)))
    phone.command("/message hello from baresip")
    message = user.next("message", match=lambda m: m["body"], timeout=10)
    assert message["body"] == "hello from baresip" and message["type"] == "chat"
    assert message["from"].bare == demo.jid(PHONE)

    user.send_message(demo.jid(PHONE), "hello phone")
    phone.expect(re.escape(f'sip:{demo.jid(USER)}: "hello phone"'))


def test_sipsak_registers_and_writes_to_xmpp(demo, user, tmp_path):
    require("sipsak", "sipsak")
    server = "127.0.0.1"  # sipsak resolves the URI's host (even with -p) and cuts 5-digit ports
    target = ["-r", str(demo.sip_port), "-u", PHONE, "-a", ACCOUNTS[PHONE]]
    done = subprocess.run(["sipsak", "-U", "-x", "300", "-s", f"sip:{PHONE}@{server}", *target],
                          capture_output=True, text=True, timeout=20)
    assert done.returncode == 0, done.stdout + done.stderr  # its own 401 → REGISTER → 200
    user.next("presence", match=came_online(demo.jid(PHONE)), timeout=10)

    request = tmp_path / "message.sip"  # sipsak adds its Via and answers the 407
    body = "hello from sipsak"
    request.write_bytes((
        f"MESSAGE sip:{USER}@{demo.domain} SIP/2.0\r\n"
        f"From: <sip:{PHONE}@{demo.domain}>;tag=sipsak\r\nTo: <sip:{USER}@{demo.domain}>\r\n"
        f"Call-ID: sipsak-{os.getpid()}@127.0.0.1\r\nCSeq: 1 MESSAGE\r\nMax-Forwards: 70\r\n"
        f"Content-Type: text/plain\r\nContent-Length: {len(body)}\r\n\r\n{body}").encode())
    done = subprocess.run(["sipsak", "-vv", "-f", str(request), "-s", f"sip:{USER}@{server}",
                           *target], capture_output=True, text=True, timeout=20)
    assert done.returncode == 0 and "SIP/2.0 200 OK" in done.stdout, done.stdout + done.stderr
    message = user.next("message", match=lambda m: m["body"], timeout=10)
    assert message["body"] == body and message["from"].bare == demo.jid(PHONE)
