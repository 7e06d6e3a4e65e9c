"""The control path (convergence.control): ``convergence user add|del|passwd`` run as a separate
process reaches the running server's live sessions, over PostgreSQL NOTIFY or the SQLite control
socket, whichever the test run's database is (docs/operations.md)."""
import base64
import http.client
import socket
import stat

import gevent.event
import pytest

from convergence import hookimpl
from convergence.control import AccountChange, SocketChannel, decode, encode
from scenario_kit import LoginFailed

ROSTER_ITEM = "{jabber:iq:roster}query/{jabber:iq:roster}item"


@pytest.fixture
def run(run_convergence):
    """``run(server, *args)``: ``convergence --config <the server's> ARGS`` as a process of its own."""
    return lambda server, *args: run_convergence("--config", server.process.config_path, *args)


@pytest.fixture
def cli(run):
    """``cli(server, *args)``: (exit status, stderr) of ``run``."""
    def cli(server, *args) -> tuple[int, str]:
        result = run(server, *args)
        return result.returncode, result.stderr
    return cli


def roster_push(client, jid: str, subscription: str):
    """Wait for the roster push (RFC 6121 §2.1.6) of ``jid`` with that subscription."""
    def about(iq):
        return any(item.get("jid") == jid and item.get("subscription") == subscription
                   for item in iq.xml.findall(ROSTER_ITEM))
    return client.next("roster_update", match=lambda iq: iq["type"] == "set" and about(iq))


def stream_error(client) -> str:
    """The condition of the stream error (RFC 6120 §4.9) the server ends the client's stream with."""
    return client.next("stream_error")["condition"]


class EventStream:
    """GET /api/events as ``name`` (HTTP Basic with ``password``, or a bearer ``token``)."""

    def __init__(self, server, name: str, password: str | None = None, token: str | None = None):
        secret = base64.b64encode(f"{name}:{password}".encode()).decode()
        authorization = f"Bearer {token}" if token else f"Basic {secret}"
        self.conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=10)
        self.conn.request("GET", "/api/events", headers={"Authorization": authorization})
        self.response = self.conn.getresponse()
        assert self.response.status == 200
        self.next("stream")  # logged in: an endpoint of the account now

    def next(self, name: str) -> bytes:
        """The data line of the next event called ``name`` (within the 10 s socket timeout)."""
        while self.response.readline() != f"event: {name}\n".encode():
            pass
        return self.response.readline()

    def ended(self) -> bool:
        """True once the server has ended the stream (the final chunk came within 10 s)."""
        try:
            self.response.read()  # keep-alives (every 15 s by default) would not end it
            return self.response.isclosed()
        finally:
            self.conn.close()


@pytest.fixture
def server(convergence_server):
    return convergence_server({"alice": "pw-a", "bob": "pw-b"})


def applied(server, line: str) -> int:
    """How often the stopped server logged ``line`` (one info line per change it applied)."""
    assert server.process.stop() == 0
    return sum(line in logged for logged in server.process.output)


def test_user_add_is_pushed_to_the_logged_in_rosters(server, xmpp_client, cli):
    alice = xmpp_client(server, "alice", roster=True)
    assert cli(server, "user", "add", "carol", "-p", "pw-c") == (0, "")
    assert roster_push(alice, "carol@example.org", "both") is not None  # shared roster
    assert applied(server, "account carol@example.org created") == 1


def test_user_del_ends_every_session_of_the_account(server, xmpp_client, cli):
    alice = xmpp_client(server, "alice")
    stream = EventStream(server, "alice", "pw-a")
    bob = xmpp_client(server, "bob", roster=True)
    assert cli(server, "user", "del", "alice") == (0, "")
    assert stream_error(alice) == "not-authorized"  # RFC 6120 §4.9.3.12
    assert stream.ended()
    bob.next("presence", match=lambda p: str(p["from"]) == alice.jid and p["type"] == "unavailable")
    assert roster_push(bob, "alice@example.org", "remove") is not None
    with pytest.raises(LoginFailed):
        xmpp_client(server, "alice")
    assert applied(server, "account alice@example.org deleted") == 1


def test_user_passwd_ends_the_sessions_that_used_the_old_password(server, xmpp_client, run, cli):
    alice = xmpp_client(server, "alice")
    stream = EventStream(server, "alice", "pw-a")
    by_token = EventStream(server, "alice", token=run(server, "token", "create", "alice").stdout.strip())
    bob = xmpp_client(server, "bob")
    assert cli(server, "user", "passwd", "alice", "-p", "new-a") == (0, "")
    assert stream_error(alice) == "reset"  # RFC 6120 §4.9.3.16: authenticate again
    assert stream.ended()
    bob.send_message("alice@example.org", "still there?")  # a token stays valid: its stream too
    assert b"still there?" in by_token.next("message")
    with pytest.raises(LoginFailed):
        xmpp_client(server, "alice", resource="old")
    assert xmpp_client(server, "alice", password="new-a", resource="new").jid.endswith("/new")
    bob.none("stream_error", wait=0)  # other accounts' sessions stay (checked after the change)
    assert bob.call(bob.xmpp.is_connected)


def test_serve_names_its_database_and_a_second_server_on_its_data_dir_is_refused(server, database_url, cli):
    if database_url:  # on PostgreSQL any number of servers listen: the cluster case
        assert "PostgreSQL LISTEN" in "".join(server.process.output)
        return
    database = server.config["server"]["data_dir"] + "/convergence.db"
    assert any(f"database: sqlite:///{database}" in line for line in server.process.output)
    status, stderr = cli(server, "serve")  # same data_dir and ports: the control socket says it first
    assert status == 2 and "another convergence serve is using this data_dir" in stderr
    assert "control.sock" in stderr and "Traceback" not in stderr


def test_a_cli_change_without_a_server_is_made_quietly(tmp_path, run_convergence):
    data = tmp_path / "data"
    data.mkdir()
    with socket.socket(socket.AF_UNIX) as dead:  # a server that died left its socket file
        dead.bind(str(data / "control.sock"))
    (tmp_path / "c.toml").write_text(f'[server]\ndata_dir = "{data}"\n')
    result = run_convergence("-c", tmp_path / "c.toml", "user", "add", "bob", "-p", "pw")
    assert (result.returncode, result.stdout, result.stderr) == (0, "added bob@localhost\n", "")


# ---- the message and the origin rule, in-process ------------------------------------------------

def test_message_round_trip_and_refusals():
    change = AccountChange("bob", "deleted", "abc")
    assert decode(encode(change)) == change
    assert decode(b'{"account": "bob", "change": "created"}\n') == AccountChange("bob", "created")
    for bad in (b"not json", b"[]", b'{"change": "created"}', b'{"account": "bob", "change": "gone"}',
                b'{"account": "bob", "change": "created", "origin": 1}'):
        with pytest.raises(ValueError):
            decode(bad)


def test_a_server_applies_other_processes_changes_once_and_never_its_own(make_core):
    seen = []

    class Recorder:
        @hookimpl
        def on_account(self, account, change, endpoint):
            seen.append((account.jid, change, endpoint))
    core, other = make_core(plugins={"rec": Recorder()}), make_core()  # two cores, one process
    core.add_account("bob", "pw")
    core.control.receive(encode(AccountChange("bob", "created", core.control.origin)))  # its own
    core.control.receive(encode(AccountChange("bob", "deleted", other.control.origin)))
    core.control.receive(b'{"account": "no one@", "change": "deleted"}')  # logged and dropped
    assert seen == [("bob@localhost", "created", None), ("bob@localhost", "deleted", None)]


def test_the_socket_replaces_a_stale_file_and_carries_lines(tmp_path):
    path = tmp_path / "control.sock"
    with socket.socket(socket.AF_UNIX) as dead:  # a server that died left its socket file
        dead.bind(str(path))
    got = gevent.event.AsyncResult()
    listening = SocketChannel(path)
    listening.listen(got.set)
    try:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600  # only the owner may connect
        SocketChannel(path).publish(b'{"account": "bob", "change": "created"}')
        assert decode(got.get(timeout=5)) == AccountChange("bob", "created")
        with pytest.raises(OSError, match="another convergence serve"):
            SocketChannel(path).listen(got.set)
    finally:
        listening.stop()
    assert not path.exists()
