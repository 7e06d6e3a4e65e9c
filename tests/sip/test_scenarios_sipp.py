"""Scenarios played by SIPp (Debian ``sip-tester``) against a real ``convergence serve``.

Each SIPp run is a user agent: it exits 0 only when every message of its scenario came as
scripted. The plays: alice registers with digest, re-registers, unregisters and clears with
``Contact: *``; alice MESSAGEs bob (a SIPp UAS registered to the server) and the server
retransmits to bob until he answers; alice calls bob through the proxy: INVITE (407, then
authenticated), 180, 200, ACK and BYE routed by our Record-Route.
"""
import socket

import pytest

from convergence.testing import free_port
from sipp_runner import DOMAIN, SDP, Sipp, needs_sipp, register, reply, request

pytestmark = needs_sipp


@pytest.fixture
def server(sip_process):
    # SIPp 3.6 answers only the first challenge and knows only MD5: offer MD5 first.
    server = sip_process(digest_algorithms=["MD5", "SHA-256"], t1=0.1)
    server.cli("user", "add", "alice", "--password", "secret")
    server.cli("user", "add", "bob", "--password", "hunter2")
    return server


@pytest.fixture
def sipp(server, tmp_path):
    folder = tmp_path / "sipp"
    folder.mkdir()
    return Sipp(server.port, folder)


def bindings_of(server, user, password):
    """The contacts a registrar query (REGISTER without Contact) lists."""
    query = server.client().register(user, password, contact="", expires=None)
    return [c.uri for c in query.contacts]


@pytest.mark.parametrize("transport", ["u1", "t1"])  # UDP, TCP
def test_register_reregister_unregister_and_clear(server, sipp, transport):
    here = "<sip:alice@[local_ip]:[local_port];transport=[transport]>"
    alice = {"user": "alice", "password": "secret", "transport": transport}
    sipp.run("register", register(1, here, 300) + register(3, here, 600)
             + register(5, "<sip:alice@192.0.2.1:5060>", 300), **alice)
    assert len(bindings_of(server, "alice", "secret")) == 2
    sipp.run("unregister", register(1, "<sip:alice@192.0.2.1:5060>", 0), **alice)
    (left,) = bindings_of(server, "alice", "secret")
    assert left.startswith("sip:alice@127.0.0.1:")
    sipp.run("clear", register(1, "*", 0), **alice)
    assert bindings_of(server, "alice", "secret") == []


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
