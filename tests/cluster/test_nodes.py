"""Two nodes on one PostgreSQL schema and one Redis: XMPP users on different nodes chat and see
each other's presence, the HTTP API of one node reaches a session on the other, and a node killed
with SIGKILL leaves the directory within node_timeout, its users' messages stored and delivered at
their next login, exactly once (issue 14, docs/cluster.md)."""
from __future__ import annotations

import signal
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from .helpers import api_events, api_send, available_from, chat_body

ACCOUNTS = {"alice": "a", "bob": "b"}


@pytest.fixture
def cli(run_convergence):
    """``cli(server, *args)``: ``convergence --config <server's configuration> ARGS``."""
    return lambda server, *args: run_convergence("--config", server.process.config_path, *args)


def two_nodes(node):
    """node-a (which creates ``ACCOUNTS``) and node-b on the same database, Redis and prefix."""
    a = node("node-a", ACCOUNTS)
    b = node("node-b")
    b.passwords.update(ACCOUNTS)
    return a, b


def test_users_on_two_nodes_chat_and_see_presence(node, xmpp_client):
    a, b = two_nodes(node)
    bob = xmpp_client(b, "bob", resource="desk")
    alice = xmpp_client(a, "alice", resource="laptop")
    # bob (node B) sees alice's session on node A come online, through the directory
    bob.next("presence", timeout=10, match=available_from("alice@"))
    alice.send_message("bob@" + b.domain, "hello across")
    assert bob.next("message", timeout=10, match=chat_body("hello across"))["from"] == alice.jid
    bob.send_message(alice.jid, "and back")
    alice.next("message", timeout=10, match=chat_body("and back"))
    # the HTTP API of node A reaches bob's XMPP session on node B
    answer = api_send(a, "alice", "a", "bob@" + b.domain, "over http")
    assert answer["outcome"] == "delivered"
    bob.next("message", timeout=10, match=chat_body("over http"))
    # alice leaves node A: bob on node B sees her unavailable
    alice.disconnect()
    bob.next("presence", timeout=10, match=available_from("alice@", "unavailable"))


def test_killed_node_leaves_and_its_users_messages_are_kept(node, xmpp_client):
    a, b = two_nodes(node)
    alice = xmpp_client(a, "alice", resource="laptop")
    bob = xmpp_client(b, "bob", resource="desk")
    alice.next("presence", timeout=10, match=available_from("bob@"))
    alice.send_message("bob@" + b.domain, "before")
    bob.next("message", timeout=10, match=chat_body("before"))

    b.process.proc.send_signal(signal.SIGKILL)
    b.process.proc.wait()
    # within node_timeout (1 s, checked on the next heartbeat) alice sees bob go
    alice.next("presence", timeout=10, match=available_from("bob@", "unavailable"))
    a.process.wait_for("node node-b lost")
    for n in range(3):
        assert api_send(a, "alice", "a", "bob@" + a.domain, f"while away {n}")["outcome"] == "stored"

    bob.disconnect()
    again = xmpp_client(a, "bob", resource="back")  # bob comes back on the surviving node
    got = [again.next("message", timeout=10, match=lambda m: m["body"].startswith("while away"))["body"]
           for _ in range(3)]
    assert got == [f"while away {n}" for n in range(3)]
    again.none("message", wait=0.5)  # exactly once


def test_unconfirmed_hand_off_is_stored_once(node, xmpp_client):
    """The owner stops answering (SIGSTOP) with a message handed to it: the sender claims it back
    after handoff_timeout and stores it; the owner, running again, finds the claim taken and does
    not deliver it; the user gets it once, from the store, at the next login."""
    a, b = two_nodes(node)
    bob = xmpp_client(b, "bob", resource="desk")
    alice = xmpp_client(a, "alice", resource="laptop")
    alice.next("presence", timeout=10, match=available_from("bob@"))
    b.process.proc.send_signal(signal.SIGSTOP)
    try:
        assert api_send(a, "alice", "a", "bob@" + a.domain, "unconfirmed")["outcome"] == "stored"
        a.process.wait_for("did not confirm a message for bob@")
    finally:
        b.process.proc.send_signal(signal.SIGCONT)
    bob.none("message", wait=1.0)  # node B took the hand-off from its inbox but lost the claim
    bob.disconnect()
    again = xmpp_client(b, "bob", resource="again")
    again.next("message", timeout=10, match=chat_body("unconfirmed"))
    again.none("message", wait=0.5)


def test_phone_on_another_node_gets_messages(node, xmpp_client, tmp_path):
    """A phone whose REGISTER landed on node B receives the MESSAGE an XMPP user of node A sends
    (node B sends it and matches its 200), and its reply reaches the XMPP user."""
    from actors import ACCOUNTS as DEMO, SIP, Phone
    from sipp_runner import Sipp

    a = node("node-a", DEMO, sip=SIP)
    b = node("node-b", sip=SIP)
    folder = tmp_path / "sipp"
    folder.mkdir()
    phone = Phone(Sipp(b.sip_port, folder))
    phone.register()
    b.process.wait_for("registered sipuserf@")
    user = xmpp_client(a, "userc", password=DEMO["userc"], resource="pc")
    a.process.wait_for("registered sipuserf@")  # node A learnt the binding from the directory
    incoming = phone.receive()
    user.send_message("sipuserf@" + a.domain, "to the phone")
    assert "to the phone" in incoming()  # node B sent it; SIPp answered 200 to node B
    phone.send("userc", "from the phone")
    got = user.next("message", timeout=10)
    assert got["body"].strip() == "from the phone"  # SIPp ends bodies with CRLF
    assert got["from"].bare == "sipuserf@" + a.domain


def test_register_contact_star_on_another_node_removes_the_binding(node, xmpp_client, tmp_path):
    """RFC 3261 §10.3 step 6 across nodes: the phone registered through node A; a REGISTER with
    ``Contact: *`` and ``Expires: 0`` through node B (which holds no binding of it) removes the
    binding on node A too, at once: the XMPP user on node B sees the phone's resource go."""
    from actors import ACCOUNTS as DEMO, PHONE_PASSWORD, SIP, Phone
    from sipp_runner import Sipp, register

    a = node("node-a", DEMO, sip=SIP)
    b = node("node-b", sip=SIP)
    b.passwords.update(DEMO)
    folder = tmp_path / "sipp"
    folder.mkdir()
    Phone(Sipp(a.sip_port, folder)).register()
    user = xmpp_client(b, "userc", resource="pc")
    user.next("presence", timeout=10, match=available_from("sipuserf@"))
    mark = len(a.process.output)
    Sipp(b.sip_port, folder).run("star", register(1, "*", 0), user="sipuserf", password=PHONE_PASSWORD)
    a.process.wait_for("unregistered sipuserf@", start=mark)
    user.next("presence", timeout=10, match=available_from("sipuserf@", "unavailable"))
    b.process.wait_for("Contact: * removes sipuserf's bindings on every node")


def test_cluster_status_lists_the_nodes(node, xmpp_client, cli):
    a = node("node-a", ACCOUNTS)
    b = node("node-b")
    xmpp_client(a, "alice", resource="laptop")
    b.process.wait_for("registered alice@")  # published after node A wrote its directory
    done = cli(a, "cluster", "status")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[-1] == "2 nodes, 1 endpoints"
    (line_a,) = [line for line in lines if line.startswith("node-a ")]
    assert "heartbeat" in line_a and "1 xmpp" in line_a
    # every node's /metrics shows the whole cluster, per node (docs/operations.md, Metrics)
    with urllib.request.urlopen(b.http_url + "/metrics", timeout=10) as reply:
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                   for f in text_string_to_metric_families(reply.read().decode()) for s in f.samples}
    assert samples[("convergence_cluster_nodes", ())] == 2
    assert samples[("convergence_cluster_redis_up", ())] == 1
    assert samples[("convergence_cluster_node_endpoints", (("node", "node-a"), ("protocol", "xmpp")))] == 1


def test_account_change_from_the_cli_reaches_every_node(node, xmpp_client, cli):
    """``convergence user passwd`` (run against node A's configuration) ends bob's session on node
    B with <reset/> (the PostgreSQL control path reaches every member, docs/operations.md)."""
    a, b = two_nodes(node)
    bob = xmpp_client(b, "bob", resource="desk")
    done = cli(a, "user", "passwd", "bob", "-p", "new secret")
    assert done.returncode == 0, done.stderr
    b.process.wait_for("account bob@example.org changed (announced by another process)")
    error = bob.next("stream_error", timeout=10)
    assert error["condition"] == "reset"


def test_three_nodes_story_with_a_node_killed(node, xmpp_client, tmp_path):
    """The sample's story over three nodes: the XMPP user on A, the phone on B, the HTTP API and a
    watcher on C. Then A is killed with SIGKILL: the watcher sees the user go, the phone's
    messages are acknowledged (202: stored) and arrive exactly once when the user logs in again on
    C."""
    from actors import ACCOUNTS as DEMO, SIP, Phone
    from sipp_runner import Sipp

    a = node("node-a", DEMO, sip=SIP)
    b = node("node-b", sip=SIP)
    c = node("node-c", sip=SIP)
    folder = tmp_path / "sipp"
    folder.mkdir()
    phone = Phone(Sipp(b.sip_port, folder))
    phone.register()
    user = xmpp_client(a, "convergence", password=DEMO["convergence"], resource="pc")
    watcher = xmpp_client(c, "userc", password=DEMO["userc"], resource="w")
    watcher.next("presence", timeout=10, match=available_from("convergence@"))
    c.process.wait_for("registered sipuserf@")  # node C knows the phone (from node B)

    phone.send("convergence", "phone on B to XMPP on A")
    assert user.next("message", timeout=10)["body"].strip() == "phone on B to XMPP on A"
    incoming = phone.receive()
    assert api_send(c, "userc", DEMO["userc"], "sipuserf@" + c.domain, "HTTP on C")["outcome"] == "delivered"
    assert "HTTP on C" in incoming()

    a.process.proc.send_signal(signal.SIGKILL)
    a.process.proc.wait()
    for n in range(3):  # acknowledged with 202 whether or not node B has noticed yet
        phone.send("convergence", f"after the kill {n}", expect=202)
    watcher.next("presence", timeout=10, match=available_from("convergence@", "unavailable"))
    back = xmpp_client(c, "convergence", password=DEMO["convergence"], resource="again")
    got = [back.next("message", timeout=10)["body"].strip() for _ in range(3)]
    assert got == [f"after the kill {n}" for n in range(3)]
    back.none("message", wait=0.5)


def test_event_stream_on_another_node(node, xmpp_client):
    """bob's HTTP event stream on node B is an endpoint node A's XMPP user sees and reaches."""
    a, b = two_nodes(node)
    alice = xmpp_client(a, "alice", resource="laptop")
    events = api_events(b, "bob", "b")
    kind, stream = next(events)
    assert kind == "stream"
    alice.next("presence", timeout=10, match=available_from(stream["jid"]))  # the stream, as a resource of bob
    alice.send_message("bob@" + a.domain, "to the stream")
    message = next(data for kind, data in events if kind == "message")
    assert message["body"] == "to the stream" and message["from"] == alice.jid
    events.close()
    alice.next("presence", timeout=10, match=available_from(stream["jid"], "unavailable"))
