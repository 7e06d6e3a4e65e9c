"""A client that stops reading is disconnected, and the messages it was sent but not given are
stored for its next login, in order (issue 11: a message is never acknowledged and then lost).

alice logs in on a raw TLS socket with a small receive buffer and stops reading; bob (slixmpp)
sends her ``COUNT`` messages, far more than the server's ``[xmpp] max_queued`` (16 KiB) and the
kernel's socket buffers hold. The server disconnects her when her queue overflows. What her first
connection can still read (what the socket took before the close, then the end of the stream) plus
what her next login gets from the store is every message exactly once, in order. Before the fix the
messages in the thrown-away queue were lost: the count came up short."""
import socket

from convergence.config import load
from convergence.core import Core
from convergence.plugins.xmpp.stream import Stanza
from convergence.store import offline

COUNT, SIZE, MAX_QUEUED = 200, 2000, 16384
BODY = "{:04d}:" + "x" * SIZE


def slow_reader(raw_client, server):
    """A raw client whose socket buffers are small, as over a real network: over loopback the
    64 KiB segments would give the server a ~4 MB kernel send buffer, which a small segment size
    keeps near 100 KB; the client's own receive buffer holds 8 KB."""
    client = raw_client(server)
    client.sock.close()
    client.sock = socket.socket()
    client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 1200)
    client.sock.settimeout(5)
    client.sock.connect(("127.0.0.1", server.port))
    return client


def read_to_the_end(client) -> list[str]:
    """The message bodies a raw client reads until the server closes its connection."""
    bodies = []
    client.sock.settimeout(10)
    while data := client.sock.recv(65536):  # b"" at the end (a TLS end without close_notify too)
        bodies += [e.element.findtext("{jabber:client}body") for e in client.parser.feed(data)
                   if isinstance(e, Stanza) and e.element.tag == "{jabber:client}message"]
    return bodies


def the_rest_was_stored(server, xmpp_client, first: list[str]) -> None:
    """``first`` is what the slow reader got before the server gave up on her: every other message
    is in the offline store, and reaches her next login, each once, in order."""
    assert len(first) < COUNT // 2, "the slow reader was not disconnected"
    core = Core.create(load(None, server.config))  # the server's database, seen from the test
    try:
        assert offline.count(core.db, "alice") == COUNT - len(first)
    finally:
        core.close()
    alice = xmpp_client(server, "alice")
    rest = [alice.next("message", timeout=10)["body"] for _ in range(COUNT - len(first))]
    alice.none("message", wait=0.3)
    assert first + rest == [BODY.format(n) for n in range(COUNT)]


def test_a_client_that_stops_reading_gets_every_message_once_in_order(xmpp_server, raw_client,
                                                                      xmpp_client):
    server = xmpp_server({"alice": "pw-a", "bob": "pw-b"}, max_queued=MAX_QUEUED)
    slow = slow_reader(raw_client, server)
    slow.login("alice", "pw-a")
    slow.send(b"<presence/>")
    slow.next("presence")  # the server's echo: alice is available; from now on she reads nothing
    bob = xmpp_client(server, "bob")
    for n in range(COUNT):
        bob.send_message(server.jid("alice"), BODY.format(n))
    bob.call(bob.xmpp.get_roster)  # answered after every message before it was routed

    the_rest_was_stored(server, xmpp_client, read_to_the_end(slow))


def test_messages_queued_for_a_slow_reader_when_the_server_stops_are_stored(xmpp_server, raw_client,
                                                                           xmpp_client):
    """At shutdown each stream gets ``system-shutdown`` and two seconds to flush; a client that
    does not read cannot take its queue, which must be stored before the server exits."""
    server = xmpp_server({"alice": "pw-a", "bob": "pw-b"}, max_queued=1 << 20)
    slow = slow_reader(raw_client, server)
    slow.login("alice", "pw-a")
    slow.send(b"<presence/>")
    slow.next("presence")
    the_rest_arrives_after_a_restart(server, xmpp_client, lambda: read_to_the_end(slow))


def the_rest_arrives_after_a_restart(server, xmpp_client, read_to_the_end) -> None:
    """Bob sends alice (a slow reader) COUNT messages and the server restarts: what she read
    (``read_to_the_end()``) and what her next login gets are every message, each once, in order."""
    bob = xmpp_client(server, "bob")
    for n in range(COUNT):  # 400 KB: more than the kernel buffers, less than the queue
        bob.send_message(server.jid("alice"), BODY.format(n))
    bob.call(bob.xmpp.get_roster)
    bob.disconnect()
    server.restart()  # SIGTERM, a clean exit, and up again on the same database
    first = read_to_the_end()
    assert len(first) < COUNT // 2
    alice = xmpp_client(server, "alice")
    rest = [alice.next("message", timeout=10)["body"] for _ in range(COUNT - len(first))]
    alice.none("message", wait=0.3)
    assert first + rest == [BODY.format(n) for n in range(COUNT)]
