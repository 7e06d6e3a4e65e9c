"""A stored backlog several times the outbound queue limit reaches an XMPP login whole (XEP-0160):
the router hands it over page by page and waits for the session's transport to write each message
before the next (``Endpoint.flush``), and deletes a stored message only once it was written.

The server's ``[xmpp] max_queued`` is small (64 KiB) so a backlog of ~1.2 MB is ~18 times the limit;
before flow control the login queued everything at once, was disconnected for a full queue, and
the store lost the messages that had been queued."""
import time

import pytest

from convergence import Message
from convergence.config import load
from convergence.core import Core
from convergence.plugins.xmpp.stream import Stanza
from convergence.store import offline

COUNT, SIZE, MAX_QUEUED = 300, 4096, 65536


@pytest.fixture
def backlog(xmpp_server):
    """A server with ``COUNT`` messages of ``SIZE`` bytes stored for alice, oldest first."""
    server = xmpp_server({"alice": "pw-a", "bob": "pw-b"}, max_queued=MAX_QUEUED)
    core = Core.create(load(None, server.config))  # the server's database, seen from the test
    bob, alice = core.address("bob", "desk"), core.address("alice")
    for n in range(COUNT):
        assert core.send(Message(bob, alice, f"{n:04d}:" + "x" * SIZE, type="chat")) == "stored"
    yield server, core
    core.close()


def bodies_in_order(bodies: list[str]) -> None:
    assert [b[:4] for b in bodies] == [f"{n:04d}" for n in range(COUNT)]  # in order, each once
    assert all(len(b) == SIZE + 5 for b in bodies)


def test_a_backlog_larger_than_the_queue_is_delivered_whole_and_in_order(backlog, xmpp_client):
    server, core = backlog
    alice = xmpp_client(server, "alice")
    bodies = [alice.next("message", timeout=20)["body"] for _ in range(COUNT)]
    bodies_in_order(bodies)
    # an answer means the login's backlog delivery (which runs before the next stanza) is done
    alice.call(alice.xmpp.get_roster)
    alice.none("message", wait=0.2)
    assert offline.count(core.db, "alice") == 0
    assert alice.xmpp.is_connected()


def test_a_slow_reader_gets_the_backlog_whole(backlog, raw_client):
    server, core = backlog
    client = raw_client(server)
    client.login("alice", "pw-a")
    client.send(b"<presence/>")
    bodies, deadline = [], time.monotonic() + 30
    while len(bodies) < COUNT and time.monotonic() < deadline:
        data = client.sock.recv(8192)  # a little at a time, with a pause: a client behind
        assert data, "the server closed the connection"
        bodies += [e.element.findtext("{jabber:client}body") for e in client.parser.feed(data)
                   if isinstance(e, Stanza) and e.element.tag == "{jabber:client}message"]
        time.sleep(0.002)
    bodies_in_order(bodies)
    client.send(b"<iq type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq>")
    assert client.next("iq").get("id") == "r1"  # answered after the backlog delivery ended
    assert offline.count(core.db, "alice") == 0
