"""Group chat across two nodes (issue 14, plugins/xmpp/muc_cluster.py, docs/cluster.md "Group
chat"): a room lives in the node that first used it (its claim in Redis names it); occupants on
the other node join through it, see everyone's presence and messages, private messages, IQs
(self-ping, discovery) and the HTTP API's posts made on the other node; an occupant whose session
ends on its node leaves. The owner killed: the other node's occupants are told the room is gone
(XEP-0045 §11.2, 332), rejoin, and the persistent room is read back from SQL by their node, which
owns it from then on. The same with 2 workers of one ``serve``: the owner worker killed and
restarted by the supervisor under the same node id. A phone registered through one node posts to
a room the other holds and gets its messages."""
from __future__ import annotations

import os
import re
import signal

import redis
from sipp_runner import Sipp, needs_sipp

from ..xmpp.roster_client import iq
from ..xmpp.test_muc import (ACCOUNTS, DISCO_INFO, ROOM, SERVICE, client, codes, create, groupchat,
                             join, presence_of, said)
from .conftest import REDIS
from .helpers import api_send, available_from, on_another_worker, worker_of

CLAIM = f"own:xmpp.muc:{ROOM}"


def two_nodes(node):
    a = node("node-a", ACCOUNTS)
    b = node("node-b")
    b.passwords.update(ACCOUNTS)
    return a, b


def owner_of_room(cluster_table) -> str | None:
    client = redis.Redis.from_url(REDIS, decode_responses=True)
    try:
        return client.get(cluster_table["prefix"] + CLAIM)
    finally:
        client.close()


def test_occupants_on_two_nodes_share_one_room(node, cluster_table, xmpp_client):
    a, b = two_nodes(node)
    alice = client(xmpp_client, a, "alice")
    bob = client(xmpp_client, b, "bob")
    carol = client(xmpp_client, b, "carol")
    a.process.wait_for(f"registered {carol.jid} ")  # node A knows node B's sessions
    create(alice, ROOM, "Alice", **{"muc#roomconfig_roomname": "Lobby"})
    assert owner_of_room(cluster_table) == "node-a"

    # bob (node B) joins the room node A holds: he sees alice, alice sees him
    presence, _, occupants, _ = join(bob, ROOM, "bob")
    assert 110 in codes(presence) and 201 not in codes(presence)
    assert [str(p["from"]) for p in occupants] == [f"{ROOM}/Alice", f"{ROOM}/bob"]
    presence_of(alice, ROOM, "bob")
    join(carol, ROOM, "carol")
    presence_of(bob, ROOM, "carol")  # from node A to node B, for an occupant of node B
    presence_of(alice, ROOM, "carol")

    # messages both ways, and a private message (§7.5) from node B to node A
    groupchat(bob, ROOM, "hello from B")
    for c in (alice, bob, carol):
        said(c, ROOM, "bob", "hello from B")
    groupchat(alice, ROOM, "hello from A")
    for c in (alice, bob, carol):
        said(c, ROOM, "Alice", "hello from A")
    bob.send_message(f"{ROOM}/Alice", "psst")
    assert str(alice.next("message", match=lambda m: m["body"] == "psst")["from"]) == f"{ROOM}/bob"

    # IQs from node B reach the room on node A: discovery, XEP-0410 self-ping
    info = iq(bob, f"<query xmlns='{DISCO_INFO}'/>", to=ROOM).xml.find(f"{{{DISCO_INFO}}}query")
    assert info.find(f"{{{DISCO_INFO}}}identity").get("name") == "Lobby"
    assert iq(bob, "<ping xmlns='urn:xmpp:ping'/>", to=f"{ROOM}/bob")["type"] == "result"

    # the HTTP API of node B posts to the room as its user (a gateway occupant), confirmed by A
    assert api_send(b, "dave", "pw-d", ROOM, "from the web")["outcome"] == "delivered"
    for c in (alice, bob):
        said(c, ROOM, "dave", "from the web")

    # bob leaves, carol's session ends on node B: both leave the room on node A
    bob.call(lambda: bob.xmpp.plugin["xep_0045"].leave_muc(ROOM, "bob"))
    assert 110 in codes(presence_of(bob, ROOM, "bob", "unavailable"))
    presence_of(alice, ROOM, "bob", "unavailable")
    carol.disconnect()
    presence_of(alice, ROOM, "carol", "unavailable", timeout=10)
    assert owner_of_room(cluster_table) == "node-a"


def test_killed_owner_room_is_taken_over(node, cluster_table, xmpp_client):
    a, b = two_nodes(node)
    alice = client(xmpp_client, a, "alice")
    bob = client(xmpp_client, b, "bob")
    bob.next("presence", timeout=10, match=available_from("alice@"))  # node B knows alice's session
    create(alice, ROOM, "Alice", **{"muc#roomconfig_persistentroom": True})
    groupchat(alice, ROOM, subject="Kept in SQL")
    join(bob, ROOM, "bob")
    groupchat(alice, ROOM, "before the crash")
    said(bob, ROOM, "Alice", "before the crash")

    a.process.proc.send_signal(signal.SIGKILL)
    a.process.proc.wait()
    # node B finds node A lost and tells bob the room is gone (§11.2: 110 and 332)
    gone = presence_of(bob, ROOM, "bob", "unavailable", timeout=10)
    assert {110, 332} <= codes(gone)
    b.process.wait_for("node node-a lost")

    # bob rejoins: node B reads the persistent room back and holds it now
    presence, subject, occupants, history = join(bob, ROOM, "bob")
    assert 201 not in codes(presence) and subject["subject"] == "Kept in SQL"
    assert [str(p["from"]) for p in occupants] == [f"{ROOM}/bob"]  # alice went with node A
    assert [m["body"] for m in history] == ["before the crash"]
    assert owner_of_room(cluster_table) == "node-b"
    carol = client(xmpp_client, b, "carol")
    join(carol, ROOM, "carol")
    groupchat(carol, ROOM, "after the crash")
    for c in (bob, carol):
        said(c, ROOM, "carol", "after the crash")


def test_two_workers_share_a_room_and_survive_the_owner_s_death(convergence_server, cluster_table,
                                                                 xmpp_client):
    server = convergence_server(ACCOUNTS, server={"workers": 2}, cluster=cluster_table)
    server.process.wait_for("convergence serving")
    alice = client(xmpp_client, server, "alice", resource="a")
    home = worker_of(server, alice.jid)
    bob = on_another_worker(lambda n: client(xmpp_client, server, "bob", resource=f"b{n}"), server, home)
    bob.next("presence", timeout=10, match=available_from(alice.jid))
    create(alice, ROOM, "Alice", **{"muc#roomconfig_persistentroom": True})
    assert owner_of_room(cluster_table).endswith("/" + home)  # alice's worker holds the room
    join(bob, ROOM, "bob")
    presence_of(alice, ROOM, "bob")
    groupchat(bob, ROOM, "across workers")
    for c in (alice, bob):
        said(c, ROOM, "bob", "across workers")

    # the owner worker is killed; the supervisor starts it again under the same node id: bob's
    # worker tells him the room is gone (332) — on the restarted worker's announcement or on the
    # old one's expired heartbeat, whichever comes first — and he rejoins; the room is read back
    # by whichever worker claims it then (the restarted one, if its heartbeat is already there)
    pid = int(re.search(r"worker serving %s \(pid (\d+)\)" % home[1:],
                        server.process.wait_for(f"worker serving {home[1:]} ")).group(1))
    os.kill(pid, signal.SIGKILL)
    assert {110, 332} <= codes(presence_of(bob, ROOM, "bob", "unavailable", timeout=10))
    presence, *_ = join(bob, ROOM, "bob")
    assert 201 not in codes(presence)  # the persistent room, from SQL
    carol = client(xmpp_client, server, "carol")  # on either worker
    join(carol, ROOM, "carol")
    groupchat(carol, ROOM, "after the restart")
    for c in (bob, carol):
        said(c, ROOM, "carol", "after the restart")
    assert server.process.stop() == 0, "".join(server.process.output[-20:])


@needs_sipp
def test_phone_on_one_node_in_a_room_the_other_holds(node, xmpp_client, tmp_path):
    """A SIP MESSAGE to sip:lobby@conference… taken by node B is handed over to node A, which
    holds the room (the phone's 200 is node A's confirmation); the room's messages reach the
    phone through node B, which owns its binding."""
    from actors import PHONE_PASSWORD, SIP, Phone

    accounts = {**ACCOUNTS, "sipuserf": PHONE_PASSWORD}
    a = node("node-a", accounts, sip=SIP)
    b = node("node-b", sip=SIP)
    b.passwords.update(accounts)
    alice = client(xmpp_client, a, "alice")
    create(alice, ROOM, "alice")
    folder = tmp_path / "sipp"
    folder.mkdir()
    phone = Phone(Sipp(b.sip_port, folder))
    phone.register()
    a.process.wait_for("registered sipuserf@")  # node A learnt the binding from the directory
    phone.send("lobby", "hello from the phone", domain=SERVICE)
    said(alice, ROOM, "sipuserf", "hello from the phone")
    incoming = phone.receive()
    groupchat(alice, ROOM, "hello phone")
    log = incoming()
    assert f"From: <sip:lobby@{SERVICE}>" in log and "alice: hello phone" in log
