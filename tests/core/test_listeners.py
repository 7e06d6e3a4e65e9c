"""Guards of every listener (``convergence.listeners``): per-address connection limits on the XMPP,
SIP TCP and HTTP listeners, HTTP request-head and body timeouts (slowloris), accept errors for want
of descriptors (EMFILE), and the open-file limit raised at start-up. The floods are bounded and on
loopback, against a real ``convergence serve``."""
from __future__ import annotations

import base64
import logging
import os
import resource
import selectors
import socket
import time

from convergence.listeners import AddressLimit, LogThrottle, networks, raise_file_limit

XMPP_HEADER = (b"<?xml version='1.0'?><stream:stream to='example.org' version='1.0' "
               b"xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>")
STATUS = b"GET /api/status HTTP/1.1\r\nHost: example.org\r\n\r\n"


# ---- units -------------------------------------------------------------------------------------

class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_address_limit_counts_per_address_and_exempts_networks(caplog):
    clock = Clock()
    limit = AddressLimit("XMPP", 2, networks(["10.0.0.0/8", "::1"]), clock=clock)
    caplog.set_level(logging.WARNING, "convergence.listeners")
    assert limit.admit("192.0.2.1") and limit.admit("192.0.2.1")
    assert not limit.admit("192.0.2.1")  # the third from one address
    assert not limit.admit("192.0.2.1")
    assert limit.admit("192.0.2.2")  # another address has its own count
    assert all(limit.admit(host) for host in ["10.1.2.3"] * 5 + ["::1"] * 5 + ["::ffff:10.0.0.1"] * 5)
    limit.release("192.0.2.1")
    assert limit.admit("192.0.2.1")  # one ended: one more may come
    for _ in range(2):
        limit.release("192.0.2.1")
    assert "192.0.2.1" not in limit.open  # an address without connections costs nothing
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "192.0.2.1" in lines[0] and "[xmpp] max_connections_per_address" \
        in lines[0]  # the second refusal within a minute is not logged
    clock.now = 61.0
    assert limit.admit("192.0.2.1") and limit.admit("192.0.2.1") and not limit.admit("192.0.2.1")
    assert "and 1 more since the last such line" in caplog.records[-1].getMessage()


def test_zero_means_no_limit():
    limit = AddressLimit("SIP", 0)
    assert all(limit.admit("192.0.2.1") for _ in range(1000))


def test_log_throttle_counts_what_it_leaves_out(caplog):
    clock = Clock()
    throttle = LogThrottle(10.0, clock)
    caplog.set_level(logging.INFO, "convergence.listeners")
    for now in (0.0, 1.0, 2.0, 10.5, 11.0):
        clock.now = now
        throttle.log(logging.INFO, "x %d", 1)
    assert [r.getMessage() for r in caplog.records] == [
        "x 1", "x 1 (and 2 more since the last such line)"]


def test_the_soft_file_limit_is_raised_to_the_hard_limit(caplog):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    lowered = min(hard, 256)
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowered, hard))
    caplog.set_level(logging.INFO, "convergence.listeners")
    try:
        raise_file_limit()
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    [line] = [r.getMessage() for r in caplog.records]
    assert line == (f"open file limit: raised from {lowered} to {hard} (the hard limit)"
                    if lowered < hard else f"open file limit: {hard} (the hard limit)")


# ---- clients -----------------------------------------------------------------------------------

def connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket()
    sock.settimeout(5)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def read_until(sock, marker: bytes, timeout: float = 5) -> bytes:
    data, deadline = b"", time.monotonic() + timeout
    while marker not in data:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed after {data!r}")
        data += chunk
    return data


def closed_by_server(sock, timeout: float = 5) -> bool:
    """True once the server closes the connection (without a word), False if it stays open."""
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


#: What each listener answers a served connection (which then stays open): request, end of answer.
EXCHANGES = {
    "xmpp": (XMPP_HEADER, b"</stream:features>"),
    "sip": (b"\r\n\r\n", b"\r\n"),  # a keep-alive ping and its pong (RFC 5626 §4.4.1)
    "http": (STATUS, b"}"),
}


def served(name: str, sock) -> bytes:
    request, end = EXCHANGES[name]
    sock.sendall(request)
    return read_until(sock, end)


def ports(server) -> dict:
    return {"xmpp": server.port, "sip": server.sip_port, "http": server.http_port}


# ---- per-address limits ------------------------------------------------------------------------

def test_connections_over_the_per_address_limit_are_closed_others_served(convergence_server):
    cap = {"max_connections_per_address": 2, "connection_limit_exempt": []}
    server = convergence_server(xmpp=cap, sip=cap, http=cap)
    for name, port in ports(server).items():
        held = [connect(port), connect(port)]
        for sock in held:
            served(name, sock)
        for _ in range(2):  # one more from 127.0.0.1 (twice: logged once)
            over = connect(port)
            assert closed_by_server(over), name
            over.close()
        other = connect(port, "127.0.0.2")  # another source address is served meanwhile
        served(name, other)
        held.pop().close()  # one ends: 127.0.0.1 may connect again, once the server has seen it
        deadline = time.monotonic() + 5
        while True:
            again = connect(port)
            try:
                served(name, again)
                break
            except ConnectionError:
                again.close()
                assert time.monotonic() < deadline, f"{name}: a freed place was not given back"
        held.append(again)
        for sock in [*held, other]:
            assert not closed_by_server(sock, 0.01), name
            sock.close()
    server.process.stop()
    log = "".join(server.process.output)
    for section in ("xmpp", "sip", "http"):
        assert log.count(f"[{section}] max_connections_per_address") == 1, log
    assert "Traceback" not in log


# ---- HTTP timeouts -----------------------------------------------------------------------------

def slowloris(port: int, count: int, first: bytes, drip: bytes, limit: float) -> list:
    """``count`` connections each send ``first``, then ``drip`` every 0.1 s of server silence (the
    attack), until the server closes it; returns (what the server sent, seconds from before the
    connection was opened until it closed) per connection. The clock starts before connecting:
    the server's timeout runs from its accept, which a clock started later would not cover."""
    selector = selectors.DefaultSelector()
    start = time.monotonic()
    socks = [connect(port) for _ in range(count)]
    results = {}
    for sock in socks:
        sock.sendall(first)
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ, b"")
    while selector.get_map() and time.monotonic() - start < limit:
        ready = selector.select(0.1)
        for key, _ in ready:
            try:
                chunk = key.fileobj.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if chunk:
                selector.modify(key.fileobj, selectors.EVENT_READ, key.data + chunk)
            else:
                results[key.fileobj] = (key.data, time.monotonic() - start)
                selector.unregister(key.fileobj)
        if not ready:
            for key in list(selector.get_map().values()):
                try:
                    key.fileobj.send(drip)
                except BlockingIOError:
                    pass
    assert not selector.get_map(), f"{len(selector.get_map())} slow clients still connected"
    return [results[sock] for sock in socks]


def test_slow_request_heads_and_bodies_are_cut_off(convergence_server):
    server = convergence_server({"alice": "pw"}, http={"header_timeout": 0.5, "body_timeout": 0.5})
    port = server.http_port
    heads = slowloris(port, 30, b"GET /api/status HTTP/1.1\r\nHost: example.org\r\n", b"X-A: b\r\n",
                      limit=10)
    for answer, after in heads:
        assert answer.startswith(b"HTTP/1.1 408 "), answer
        assert 0.5 <= after < 5
    credentials = base64.b64encode(b"alice:pw")
    bodies = slowloris(port, 5, b"POST /api/messages HTTP/1.1\r\nHost: example.org\r\n"
                       b"Authorization: Basic " + credentials + b"\r\nContent-Type: application/json"
                       b"\r\nContent-Length: 500\r\n\r\n{\"to\": \"alice@example.org\", \"body\": \"", b"x", limit=10)
    for answer, after in bodies:
        assert answer.startswith(b"HTTP/1.1 400 "), answer  # the body never came whole
        assert 0.5 <= after < 5
    [(answer, after)] = slowloris(port, 1, b"GET /api/status HTTP/1.1\r\nHost: example.org"
                                  b"\r\nContent-Length: 500\r\n\r\n", b"x", limit=10)
    assert answer.startswith(b"HTTP/1.1 200 ") and 0.5 <= after < 5  # a body nobody reads, too
    idle = connect(port)  # an idle keep-alive connection ends too (RFC 9112 §9.6)
    served("http", idle)
    assert closed_by_server(idle, 5)
    fast = connect(port)  # while a normal client is served
    assert b" 200 " in served("http", fast)
    server.process.stop()
    assert "Traceback" not in "".join(server.process.output)


# ---- out of file descriptors -------------------------------------------------------------------

def test_out_of_descriptors_one_log_line_then_served_again(convergence_server):
    """The server's hard limit is lowered below what a flood needs: accepts fail with EMFILE."""
    server = convergence_server()
    server.process.wait_for("open file limit")  # raised at start-up (logged)
    pid = server.process.proc.pid
    open_now = len(os.listdir(f"/proc/{pid}/fd"))
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (open_now + 10, open_now + 10))
    flood = [connect(server.http_port) for _ in range(40)]
    server.process.wait_for("cannot accept connections")
    for sock in flood:
        sock.close()
    deadline = time.monotonic() + 10
    while True:  # the descriptors come back as the server sees the flood go
        try:
            with connect(server.http_port) as sock:
                assert b" 200 " in served("http", sock)
            break
        except (ConnectionError, socket.timeout):
            assert time.monotonic() < deadline, "HTTP did not come back"
    server.process.stop()
    log = "".join(server.process.output)
    assert log.count("cannot accept connections") == 1, log
    assert "Too many open files" in log and "Traceback" not in log, log
