"""The cluster's sans-IO parts: a message as it crosses to another node, the default node id, the
status lines (run on SQLite too: no server, no Redis)."""
from __future__ import annotations

import json
import random
import time

import pytest

from convergence.addresses import Address
from convergence.cluster import (HandedMessage, check_ask, decode_message, default_node_id, encode_message,
                                 status_lines)
from convergence.config import load
from convergence.message import Message


def test_a_message_crosses_unchanged():
    message = Message(Address("alice", "example.org", "laptop"), Address("bob", "example.org"),
                      "hé ✓", subject="s", thread="t", type="chat")
    back = decode_message(json.loads(json.dumps(encode_message(message))))
    assert isinstance(back, HandedMessage)
    for field in ("sender", "recipient", "body", "subject", "thread", "type", "id", "error"):
        assert getattr(back, field) == getattr(message, field)
    assert back.store_hint is None and back.stamp is None


def test_the_store_hint_crosses():
    fields = encode_message(Message(Address("a", "d"), Address("b", "d"), "", type="chat"))
    back = decode_message({**fields, "store_hint": True})
    assert back.store_hint is True


def test_garbage_is_a_value_error():
    """Seeded, bounded: every mangled hand-off is refused with ValueError, nothing else."""
    good = encode_message(Message(Address("a", "d", "r"), Address("b", "d"), "x", type="chat"))
    values = [None, 0, 1.5, True, "", "chat", "bogus", [], {}, "a@d/r", "@/", "x" * 300]
    rng = random.Random(14)
    for _ in range(2000):
        fields = dict(good)
        for key in rng.sample(sorted(good) + ["store_hint"], rng.randint(1, 3)):
            if rng.random() < 0.2:
                fields.pop(key, None)
            else:
                fields[key] = rng.choice(values)
        try:
            decode_message(fields)
        except ValueError:
            pass
    for junk in (None, [], "text", 3):
        with pytest.raises(ValueError):
            decode_message(junk)


def test_a_request_names_its_node():
    """The ``ask`` a request's cast carries (``Cluster.ask``): its request id begins with the
    asking node's id; anything else is a ValueError (the plugin logs it and answers nothing)."""
    assert check_ask({"node": "host/w1", "id": "host/w1:0af3"}) == ("host/w1", "host/w1:0af3")
    for bad in (None, [], {}, {"node": "a"}, {"node": "a", "id": "b:1"}, {"node": 1, "id": "1:x"},
                {"node": "a", "id": None}):
        with pytest.raises(ValueError):
            check_ask(bad)


def test_default_node_id_names_host_listeners_and_worker():
    config = load(None, {"server": {"domain": "example.org"}})
    assert default_node_id(config, 1).endswith("/w1")
    assert "/w" not in default_node_id(config)


def test_status_lines():
    nodes = [{"node": "n1", "pid": 7, "host": "h", "started": 100.0, "beat": 160.0, "age": 0.5,
              "directory": 3, "endpoints": {"xmpp": 2, "sip": 1}}]
    lines = status_lines(nodes)
    assert lines[0].startswith("n1  pid 7 on h  heartbeat 0.5 s ago  up 60 s  endpoints: 1 sip, 2 xmpp")
    assert lines[-1] == "1 nodes, 3 endpoints"
    assert status_lines([]) == ["0 nodes, 0 endpoints"]


def test_sip_branches_name_their_node():
    """A node's Via branches carry its tag (docs/cluster.md, SIP over UDP with workers); the
    tag of a branch that is not ours, or of one made outside a cluster, is not a node's."""
    from convergence.cluster import node_tag
    from convergence.plugins.sip.dispatcher import OUR_BRANCH, Transactions
    from convergence.plugins.sip.transaction import Timing

    tags = {node_tag(f"host/127.0.0.1:5060/w{n}") for n in range(50)}
    assert len(tags) == 50 and all(len(t) == 8 and int(t, 16) >= 0 for t in tags)
    made = Transactions(Timing(), time, None, None, "example.org", 5060)
    plain = made.new_branch("abc")
    made.tag_with(node_tag("node-a"))
    branch = made.new_branch("abc")
    assert branch.startswith(OUR_BRANCH + "abc.")
    assert Transactions.node_tag_of(branch) == node_tag("node-a") != Transactions.node_tag_of(plain)
    for foreign in (None, "", "z9hG4bK776asdhds", "z9hG4bK-cvnodot", "1234"):
        assert Transactions.node_tag_of(foreign) is None
