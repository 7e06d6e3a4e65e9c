"""SIPp (Debian ``sip-tester``) as a test client: scenario builders and a runner.

Each SIPp run is a user agent that exits 0 only when every message of its scenario came as
scripted. Shared by the SIP scenarios and the cross-protocol convergence scenarios.
"""
import shutil
import socket
import subprocess

import pytest

from convergence.testing import free_port

needs_sipp = pytest.mark.skipif(shutil.which("sipp") is None,
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
            body: str = "", content_type: str = "", branch: str = "[branch]",
            sender: str = "alice", recipient: str = "bob", domain: str = DOMAIN,
            headers: tuple = ()) -> str:
    """A request from ``sender`` to ``recipient`` (``[authentication]`` after a challenge)."""
    extra = "".join(f"{line}\n      " for line in (
        "[authentication]" if auth else "", "[routes]" if routes else "",
        f"Content-Type: {content_type}" if content_type else "", *headers) if line)
    return f"""  <send retrans="500"><![CDATA[
      {method} {uri} SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch={branch}
      Max-Forwards: 70
      From: <sip:{sender}@{domain}>;tag=[pid]SIPpTag09[call_number]
      To: <sip:{recipient}@{domain}>{"[peer_tag_param]" if routes else ""}
      Call-ID: [call_id]
      CSeq: {cseq} {method}
      Contact: <sip:{sender}@[local_ip]:[local_port]>
      {extra}Content-Length: [len]

      {body}
  ]]></send>
"""


class Sipp:
    """Runs SIPp scenarios against the SIP listener on 127.0.0.1:``port``, logs in ``folder``."""

    def __init__(self, port: int, folder):
        self.port, self.folder = port, folder

    def command(self, name: str, body: str, port: int, user: str | None = None,
                password: str | None = None, timeout: int = 20, transport: str = "u1"
                ) -> list[str]:
        scenario = self.folder / f"{name}.xml"
        scenario.write_text(HEAD.format(name=name, body=body))
        command = ["sipp", f"127.0.0.1:{self.port}", "-sf", str(scenario), "-m", "1",
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
