"""Scenarios played by SIPp (Debian ``sip-tester``) against a real ``convergence serve``.

Each SIPp run is a user agent: it exits 0 only when every message of its scenario came as
scripted. The plays: alice registers with digest, re-registers, unregisters and clears with
``Contact: *``; alice MESSAGEs bob (a SIPp UAS registered to the server) and the server
retransmits to bob until he answers; alice calls bob through the proxy: INVITE (407, then
authenticated), 180, 200, ACK and BYE routed by our Record-Route.
"""
import shutil
import socket
import subprocess

import pytest

from convergence.testing import free_port

pytestmark = pytest.mark.skipif(shutil.which("sipp") is None,
                                reason="sipp not installed (Debian package sip-tester)")

DOMAIN = "example.com"  # tests/sip/conftest.py's

HEAD = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="{name}">
{body}
</scenario>
"""


def register(cseq: int, contact: str, expires: int) -> str:
    """A REGISTER, its 401, the authenticated REGISTER and its 200."""
    lines = """REGISTER sip:[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      Max-Forwards: 70
      From: <sip:[service]@[remote_ip]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]>
      Call-ID: [call_id]
      CSeq: {cseq} REGISTER
      Contact: {contact}
      Expires: {expires}
      {auth}Content-Length: 0
"""
    first = lines.format(cseq=cseq, contact=contact, expires=expires, auth="")
    second = lines.format(cseq=cseq + 1, contact=contact, expires=expires,
                          auth="[authentication]\n      ")
    return f"""  <send retrans="500"><![CDATA[
      {first}
  ]]></send>
  <recv response="401" auth="true"/>
  <send retrans="500"><![CDATA[
      {second}
  ]]></send>
  <recv response="200"/>
"""


UAS_REPLY = """SIP/2.0 {status}
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      [last_Record-Route:]
      Contact: <sip:bob@[local_ip]:[local_port]>
      {extra}Content-Length: [len]
"""
SDP = """v=0
o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
s=-
c=IN IP[media_ip_type] [media_ip]
t=0 0
m=audio [media_port] RTP/AVP 0
a=rtpmap:0 PCMU/8000"""


def reply(status: str, sdp: bool = False) -> str:
    extra = "Content-Type: application/sdp\n      " if sdp else ""
    return f"""  <send><![CDATA[
      {UAS_REPLY.format(status=status, extra=extra)}
      {SDP if sdp else ""}
  ]]></send>
"""


def request(method: str, cseq: int, uri: str, auth: bool = False, routes: bool = False,
            body: str = "", content_type: str = "", branch: str = "[branch]") -> str:
    extra = "".join(f"{line}\n      " for line in (
        "[authentication]" if auth else "", "[routes]" if routes else "",
        f"Content-Type: {content_type}" if content_type else "") if line)
    return f"""  <send retrans="500"><![CDATA[
      {method} {uri} SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch={branch}
      Max-Forwards: 70
      From: <sip:alice@{DOMAIN}>;tag=[pid]SIPpTag09[call_number]
      To: <sip:bob@{DOMAIN}>{"[peer_tag_param]" if routes else ""}
      Call-ID: [call_id]
      CSeq: {cseq} {method}
      Contact: <sip:alice@[local_ip]:[local_port]>
      {extra}Content-Length: [len]

      {body}
  ]]></send>
"""


class Sipp:
    """Runs SIPp scenarios against one server, logs in the test's folder."""

    def __init__(self, server, folder):
        self.server, self.folder = server, folder

    def command(self, name: str, body: str, port: int, user: str | None = None,
                password: str | None = None, timeout: int = 20, transport: str = "u1"
                ) -> list[str]:
        scenario = self.folder / f"{name}.xml"
        scenario.write_text(HEAD.format(name=name, body=body))
        command = ["sipp", f"127.0.0.1:{self.server.port}", "-sf", str(scenario), "-m", "1",
                   "-t", transport,
                   "-i", "127.0.0.1", "-p", str(port), "-nostdin", "-timeout", f"{timeout}s",
                   "-timeout_error", "-trace_msg", "-trace_err",
                   "-message_file", str(self.folder / f"{name}.log"),
                   "-error_file", str(self.folder / f"{name}.errors")]
        if user:
            command += ["-s", user, "-au", user, "-ap", password]
        return command

    def run(self, name: str, body: str, port: int | None = None, **options) -> str:
        """Play a scenario to its end; returns its message log."""
        command = self.command(name, body, port or free_port(socket.SOCK_DGRAM), **options)
        done = subprocess.run(command, cwd=self.folder, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, self.explain(name, done.stdout)
        return (self.folder / f"{name}.log").read_text()

    def start(self, name: str, body: str, port: int, **options) -> subprocess.Popen:
        """Start a scenario (a UAS waiting for calls) in the background."""
        return subprocess.Popen(self.command(name, body, port, **options), cwd=self.folder,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def wait(self, name: str, process: subprocess.Popen) -> str:
        output, _ = process.communicate(timeout=60)
        assert process.returncode == 0, self.explain(name, output)
        return (self.folder / f"{name}.log").read_text()

    def explain(self, name: str, output: str) -> str:
        logs = [self.folder / f"{name}.errors", self.folder / f"{name}.log"]
        return output[-2000:] + "".join(p.read_text()[-4000:] for p in logs if p.exists())


@pytest.fixture
def sipp(sip_process, tmp_path):
    # SIPp 3.6 answers only the first challenge and knows only MD5: offer MD5 first.
    server = sip_process(digest_algorithms=["MD5", "SHA-256"], t1=0.1)
    server.cli("user", "add", "alice", "--password", "secret")
    server.cli("user", "add", "bob", "--password", "hunter2")
    folder = tmp_path / "sipp"
    folder.mkdir()
    return Sipp(server, folder)


def bindings_of(server, user, password):
    """The contacts a registrar query (REGISTER without Contact) lists."""
    query = server.client().register(user, password, contact="", expires=None)
    return [c.uri for c in query.contacts]


@pytest.mark.parametrize("transport", ["u1", "t1"])  # UDP, TCP
def test_register_reregister_unregister_and_clear(sipp, transport):
    here = "<sip:alice@[local_ip]:[local_port];transport=[transport]>"
    alice = {"user": "alice", "password": "secret", "transport": transport}
    sipp.run("register", register(1, here, 300) + register(3, here, 600)
             + register(5, "<sip:alice@192.0.2.1:5060>", 300), **alice)
    assert len(bindings_of(sipp.server, "alice", "secret")) == 2
    sipp.run("unregister", register(1, "<sip:alice@192.0.2.1:5060>", 0), **alice)
    (left,) = bindings_of(sipp.server, "alice", "secret")
    assert left.startswith("sip:alice@127.0.0.1:")
    sipp.run("clear", register(1, "*", 0), **alice)
    assert bindings_of(sipp.server, "alice", "secret") == []


def register_bob(sipp, port: int) -> None:
    """bob's contact is the port his UAS scenario listens on (SIPp registers from another)."""
    sipp.run("bob-register", register(1, f"<sip:bob@127.0.0.1:{port}>", 300), user="bob",
             password="hunter2")


MESSAGE_TO_BOB = (request("MESSAGE", 1, f"sip:bob@{DOMAIN}", body="hello bob",
                          content_type="text/plain")
                  + '  <recv response="407" auth="true"/>\n'
                  + request("MESSAGE", 2, f"sip:bob@{DOMAIN}", auth=True, body="hello bob",
                            content_type="text/plain")
                  + '  <recv response="200"/>\n')


def test_message_between_two_sip_users_with_retransmissions(sipp):
    bob_port = free_port(socket.SOCK_DGRAM)
    register_bob(sipp, bob_port)
    # bob takes his time: the server retransmits the MESSAGE (T1 = 0.1 s) until he answers
    bob = sipp.start("bob-uas", '  <recv request="MESSAGE"/>\n  <pause milliseconds="700"/>\n'
                     + reply("200 OK"), bob_port)
    sipp.run("alice-message", MESSAGE_TO_BOB, user="alice", password="secret")
    log = sipp.wait("bob-uas", bob)
    received = [block for block in log.split("message received") if "MESSAGE sip:" in block]
    assert len(received) >= 2, log  # the original and at least one retransmission
    assert "hello bob" in received[0] and "From: <sip:alice@example.com>" in received[0]


def test_call_between_two_sipp_user_agents(sipp):
    bob_port = free_port(socket.SOCK_DGRAM)
    register_bob(sipp, bob_port)
    bob = sipp.start("bob-uas", '  <recv request="INVITE"/>\n' + reply("180 Ringing")
                     + reply("200 OK", sdp=True) + '  <recv request="ACK"/>\n'
                     + '  <recv request="BYE"/>\n' + reply("200 OK"), bob_port)
    ack_407 = f"""  <send><![CDATA[
      ACK sip:bob@{DOMAIN} SIP/2.0
      [last_Via:]
      Max-Forwards: 70
      From: <sip:alice@{DOMAIN}>;tag=[pid]SIPpTag09[call_number]
      [last_To:]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Content-Length: 0
  ]]></send>
"""
    alice = (request("INVITE", 1, f"sip:bob@{DOMAIN}", body=SDP, content_type="application/sdp")
             + '  <recv response="100" optional="true"/>\n'
             + '  <recv response="407" auth="true"/>\n' + ack_407
             + request("INVITE", 2, f"sip:bob@{DOMAIN}", auth=True, body=SDP,
                       content_type="application/sdp")
             + '  <recv response="100" optional="true"/>\n'
             + '  <recv response="180" optional="true"/>\n'
             + '  <recv response="200" rrs="true"/>\n'
             + request("ACK", 2, "[next_url]", routes=True).replace(' retrans="500"', "")
             + '  <pause milliseconds="200"/>\n'
             + request("BYE", 3, "[next_url]", routes=True)
             + '  <recv response="200"/>\n')
    log = sipp.run("alice-call", alice, user="alice", password="secret")
    bob_log = sipp.wait("bob-uas", bob)
    assert "Record-Route: <sip:127.0.0.1:" in log  # the 200 came through the proxy
    for method in ("INVITE", "ACK", "BYE"):
        assert f"{method} sip:bob@127.0.0.1:{bob_port}" in bob_log, method
