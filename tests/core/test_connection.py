"""core.connection over real loopback sockets (gevent clients: the tests share the hub with the server)."""
import socket

import gevent
import gevent.socket
import pytest
from gevent.event import Event
from gevent.server import StreamServer

from convergence.connection import Connection


@pytest.fixture
def server():
    """A loopback server whose connections echo what they read; yields (address, connections)."""
    connections = []
    ready = Event()

    def handle(sock, peer):
        conn = Connection(sock, peer, max_queued=64 * 1024, idle_timeout=0.2)
        connections.append(conn)
        ready.set()
        conn.run(conn.send)

    srv = StreamServer(("127.0.0.1", 0), handle)
    srv.start()
    yield srv.address, connections, ready
    srv.stop(timeout=1)


def test_echoes_in_order_and_sets_nodelay(server):
    address, connections, ready = server
    with gevent.socket.create_connection(address) as client:
        client.settimeout(5)
        for i in range(100):
            client.sendall(b"%d," % i)
        want = b"".join(b"%d," % i for i in range(100))
        got = b""
        while len(got) < len(want):
            got += client.recv(65536)
        assert got == want
        ready.wait(5)
        assert connections[0].sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


def test_idle_peer_is_closed_without_on_idle(server):
    address, connections, ready = server
    with gevent.socket.create_connection(address) as client:
        client.settimeout(5)
        assert client.recv(1) == b""  # closed by the server after 0.2 s of silence
    assert connections[0].close_reason == "idle timeout"


def test_peer_that_never_reads_is_disconnected_not_buffered():
    closed = Event()
    conns = []

    def handle(sock, peer):
        conn = Connection(sock, peer, max_queued=256 * 1024, write_timeout=30)
        conns.append(conn)
        chunk = b"x" * 16384
        while conn.send(chunk):
            gevent.sleep(0)  # let the writer fill the kernel buffers
        closed.set()

    srv = StreamServer(("127.0.0.1", 0), handle)
    srv.start()
    try:
        client = gevent.socket.create_connection(srv.address)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        assert closed.wait(10)
        assert conns[0].close_reason == "outbound queue full: the peer is not reading"
        assert conns[0]._queued <= 256 * 1024
        client.close()
    finally:
        srv.stop(timeout=1)
