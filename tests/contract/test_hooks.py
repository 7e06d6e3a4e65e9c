"""One test per hook (the contract meta-test requires ``test_hook_<name>`` for each)."""
import click
import pytest
import gevent
from click.testing import CliRunner
from flask import Blueprint
from gevent.server import StreamServer
from sqlalchemy import text

from convergence import Message, Presence, RoutingError, contacts, hookimpl, server
from convergence.cli import cli
from convergence.config import Option, Section
from convergence.credentials import ha1
from convergence.store import accounts, roster
from convergence.testing import RecordingEndpoint


class Recorder:
    """A plugin object that records every call of the hooks it implements."""

    def __init__(self):
        self.calls = []

    @hookimpl
    def on_message(self, message):
        self.calls.append(("on_message", message.body))

    @hookimpl
    def on_account(self, account, change):
        self.calls.append(("on_account", account.jid, change))

    @hookimpl
    def on_screen_changed(self, account):
        self.calls.append(("on_screen_changed", account.jid))

    @hookimpl
    def on_login(self, account, endpoint):
        self.calls.append(("on_login", account.jid, endpoint.address.resource))

    @hookimpl
    def on_logout(self, account, endpoint):
        self.calls.append(("on_logout", account.jid, endpoint.address.resource))

    @hookimpl
    def on_register(self, account, endpoint, expires):
        self.calls.append(("on_register", account.jid, expires))

    @hookimpl
    def on_presence(self, account, presence):
        self.calls.append(("on_presence", account.jid, presence.available))


def calls(recorder, hook):
    return [c[1:] for c in recorder.calls if c[0] == hook]


def test_hook_add_config_section(make_core):
    class Plugin:
        @hookimpl
        def add_config_section(self):
            return Section("weather", {"city": Option("Paris", "where")})
    core = make_core({"weather": {"city": "Oslo"}}, plugins={"weather": Plugin()})
    assert core.config["weather"] == {"city": "Oslo"}


def test_hook_add_cli_commands(tmp_path, monkeypatch):
    class Plugin:
        @hookimpl
        def add_cli_commands(self, cli):
            @cli.command("hello")
            def hello():
                click.echo("hello from a plugin")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["hello"], obj={"plugins": {"p": Plugin()}})
    assert result.output == "hello from a plugin\n", result.output
    cli.commands.pop("hello", None)


def test_hook_on_startup(make_core):
    class Plugin:
        started = None

        @hookimpl
        def on_startup(self, core):
            Plugin.started = core
    core = make_core(plugins={"p": Plugin()})
    assert Plugin.started is core


def test_hook_add_migrations(make_core, tmp_path):
    (tmp_path / "notes_0001.py").write_text(
        "import sqlalchemy as sa\nfrom alembic import op\n"
        "revision = 'notes_0001'\ndown_revision = None\nbranch_labels = ('notes',)\n"
        "depends_on = '0001'\n"
        "def upgrade():\n    op.create_table('notes', sa.Column('id', sa.Integer, primary_key=True))\n"
        "def downgrade():\n    op.drop_table('notes')\n")

    class Plugin:
        @hookimpl
        def add_migrations(self):
            return tmp_path
    core = make_core(plugins={"notes": Plugin()})
    with core.db.read() as session:
        assert session.execute(text("SELECT count(*) FROM notes")).scalar() == 0
    assert "notes_0001" in core.db.current()[1]


def test_hook_add_listeners(make_core):
    class Plugin:
        @hookimpl
        def add_listeners(self, core):
            return [StreamServer(("127.0.0.1", 0), lambda sock, addr: sock.sendall(b"hi"))]
    core = make_core({"server": {"disabled_plugins": ["http", "sip", "xmpp"]}}, plugins={"p": Plugin()})
    servers = server.start(core)
    try:
        from gevent import socket
        conn = socket.create_connection(servers[0].address[:2])
        assert conn.recv(2) == b"hi"
        conn.close()
    finally:
        for s in servers:
            s.stop()


def test_hook_add_blueprints(make_core):
    from convergence.plugins.http.app import create_app
    bp = Blueprint("hello", __name__)
    bp.add_url_rule("/hello", view_func=lambda: "hi")

    class Plugin:
        @hookimpl
        def add_blueprints(self, core):
            return [bp]
    core = make_core(plugins={"p": Plugin()})
    assert create_app(core).test_client().get("/hello").text == "hi"


def test_hook_add_metrics(make_core):
    from prometheus_client import Gauge
    from prometheus_client.parser import text_string_to_metric_families
    from prometheus_client.exposition import generate_latest

    class Plugin:
        @hookimpl
        def add_metrics(self, core, registry):
            Gauge("weather_temperature", "degrees", registry=registry).set(21)
    one, two = make_core(plugins={"p": Plugin()}), make_core()
    families = {f.name: f for f in text_string_to_metric_families(generate_latest(one.metrics.registry).decode())}
    assert families["weather_temperature"].samples[0].value == 21
    assert "convergence_messages_routed" in families and "process_cpu_seconds" in families
    assert b"weather_temperature" not in generate_latest(two.metrics.registry)  # a registry per core


def test_hook_on_shutdown(make_core):
    class Plugin:
        stopped = False

        @hookimpl
        def on_shutdown(self, core):
            Plugin.stopped = True
    core = make_core({"server": {"disabled_plugins": ["http"]}}, plugins={"p": Plugin()})
    server.stop(core, [])
    assert Plugin.stopped


def test_hook_resolve_recipient(core, register_plugin):
    taken = []

    class Route:
        def deliver(self, message):
            taken.append(message)
            return "delivered"

    class Plugin:
        @hookimpl(tryfirst=True)
        def resolve_recipient(self, address):
            return Route() if address.local == "bot" else None
    register_plugin(Plugin(), "bot")
    assert core.send(Message(core.address("x"), core.address("bot"), "hi")) == "delivered"
    assert [m.body for m in taken] == ["hi"]


def test_hook_on_message(core, register_plugin):
    rec = register_plugin(Recorder(), "rec")
    core.send(Message(core.add_account("x", "pw"), core.address("echo"), "ping"))
    assert calls(rec, "on_message") == [("ping",), ("ping",)]  # the message and echo's reply


def test_hook_screen_message(core, register_plugin):
    """Any implementation may refuse a message before delivery, told the protocol it came by; the
    router's cached list of implementations follows plugins coming and going."""
    seen = []

    class Filter:
        @hookimpl
        def screen_message(self, message, source):  # a subset of the arguments, any order
            seen.append((source, message.body))
            if "spam" in message.body:
                raise RoutingError("forbidden", "no spam")
    rec = register_plugin(Recorder(), "rec")
    alice = core.add_account("alice", "pw")
    phone = RecordingEndpoint(alice.with_resource("phone"))
    core.presence.login(phone)
    sender = core.address("bob", "sip-1")
    core.send(Message(sender, alice, "before"), "sip")
    core.pm.register_plugin(Filter(), "filter")  # unregistered below, not by the fixture
    with pytest.raises(RoutingError) as refused:
        core.send(Message(sender, alice, "spam offer"), "sip")
    assert refused.value.condition == "forbidden"
    assert core.send(Message(sender, alice, "hello"), "http") == "delivered"
    assert seen == [("sip", "spam offer"), ("http", "hello")]
    assert [m.body for m in phone.received] == ["before", "hello"]
    assert calls(rec, "on_message") == [("before",), ("hello",)]  # a refused message is not observed
    assert core.router.counts[("sip", "none", "refused", "forbidden")] == 1
    core.pm.unregister(name="filter")
    assert core.send(Message(sender, alice, "spam again"), "sip") == "delivered"


def test_hook_screen_message_again_for_the_offline_store(core, register_plugin):
    """A stored message is screened again when the backlog is delivered (source ``offline``):
    refused then, it is dropped from the store, and the rest of the backlog is delivered."""
    refusing = set()

    class Filter:
        @hookimpl
        def screen_message(self, message, source):
            if source == "offline" and message.sender.local in refusing:
                raise RoutingError("forbidden", "blocked since")
    register_plugin(Filter(), "filter")
    alice = core.add_account("alice", "pw")
    for sender in ("bob", "carol", "bob"):
        assert core.send(Message(core.address(sender, "x"), alice, f"from {sender}"), "sip") == "stored"
    refusing.add("bob")
    phone = RecordingEndpoint(alice.with_resource("phone"))
    core.presence.login(phone)
    assert core.router.deliver_stored(alice) == 1
    assert [m.body for m in phone.received] == ["from carol"]
    assert core.router.deliver_stored(alice) == 0  # bob's were dropped, not kept


def test_hook_screen_presence(core, register_plugin):
    """``contacts.sees`` (and ``contacts.screened``) obey any implementation that keeps an
    account's presence from a watcher, whatever the (shared) roster says."""
    alice, bob = core.add_account("alice", "pw"), core.add_account("bob", "pw")

    class Screen:
        @hookimpl
        def screen_presence(self, watcher, account):
            return (watcher, account) == (bob, alice)
    assert contacts.sees(core, bob, alice) and contacts.sees(core, alice, bob)
    register_plugin(Screen(), "screen")
    assert contacts.screened(core, bob.with_resource("r"), alice)
    assert not contacts.sees(core, bob, alice) and contacts.sees(core, alice, bob)


def test_hook_on_screen_changed(core, register_plugin):
    """The XMPP plugin's block lists fire it at every block and unblock, for the account whose
    list changed; and answer ``screen_presence`` from the lists, both ways."""
    rec = register_plugin(Recorder(), "rec")
    alice, bob = core.add_account("alice", "pw"), core.add_account("bob", "pw")
    lists = core.pm.get_plugin("xmpp:server").service.blocking
    lists.block(alice, [bob])
    assert contacts.screened(core, bob, alice) and contacts.screened(core, alice, bob)
    lists.unblock(alice, None)
    assert not contacts.screened(core, bob, alice)
    assert calls(rec, "on_screen_changed") == [("alice@localhost",), ("alice@localhost",)]


def test_hook_on_cluster_cast(make_core, caplog):
    """A cast from another node reaches the implementations with its kind and data; a plugin that
    fails is logged, not raised into the node's hand-off loop; a cast that is not an object is
    ignored. Across two real nodes over Redis: tests/cluster/test_xmpp_relay.py, test_sip_workers.py."""
    from convergence.cluster import Cluster

    got = []

    class Relay:
        @hookimpl
        def on_cluster_cast(self, kind, data):
            got.append((kind, data))

    class Broken:
        @hookimpl
        def on_cluster_cast(self, core, kind, data):
            raise RuntimeError("plugin bug")
    core = make_core({"cluster": {"redis": "redis://127.0.0.1:1/0"}},
                     plugins={"broken": Broken(), "relay": Relay()})  # relay runs first
    member = Cluster(core, "node-a")  # not started: no Redis is needed to take a cast
    member._cast_here({"t": "cast", "kind": "xmpp.stanza", "data": {"to": "bob@example.org"}})
    member._cast_here({"t": "cast", "kind": "xmpp.stanza", "data": "not an object"})  # ignored
    assert got == [("xmpp.stanza", {"to": "bob@example.org"})]
    assert "a plugin failed on a cast xmpp.stanza" in caplog.text
    assert "ignored a bad cast" in caplog.text


def test_hook_on_cluster_cast_answers_a_hand_over(make_core):
    """A hand-over (``core.cluster.hand_over``) is confirmed with the outcome the plugin returns;
    a RoutingError it raises, or nobody taking the kind, refuses it. Across two real nodes:
    tests/cluster/test_muc_owner.py."""
    from convergence.cluster import Cluster

    class Rooms:
        @hookimpl
        def on_cluster_cast(self, kind, data):
            if kind == "rooms.post":
                if data.get("room") == "closed":
                    raise RoutingError("forbidden", "closed room")
                return "delivered"
            return None
    core = make_core({"cluster": {"redis": "redis://127.0.0.1:1/0"}}, plugins={"rooms": Rooms()})
    member = Cluster(core, "node-a")  # not started: taking a hand-over needs no Redis
    assert member._hand_over_here({"kind": "rooms.post", "data": {"room": "open"}}) == "delivered"
    for event, condition in (({"kind": "rooms.post", "data": {"room": "closed"}}, "forbidden"),
                             ({"kind": "other.kind", "data": {}}, "service-unavailable"),
                             ({"kind": "rooms.post", "data": "not an object"}, "bad-request")):
        with pytest.raises(RoutingError) as refused:
            member._hand_over_here(event)
        assert refused.value.condition == condition


def test_hook_on_cluster_node_lost(make_core, caplog):
    """A node the cluster member knew leaves (lost or stopped): every implementation hears of it
    once, a failing one is logged; a node never known fires nothing. Across real nodes:
    tests/cluster/test_muc_owner.py (room occupants told 332)."""
    from convergence.cluster import Cluster

    lost = []

    class Rooms:
        @hookimpl
        def on_cluster_node_lost(self, node):
            lost.append(node)

    class Broken:
        @hookimpl
        def on_cluster_node_lost(self, core, node):
            raise RuntimeError("plugin bug")
    core = make_core({"cluster": {"redis": "redis://127.0.0.1:1/0"}},
                     plugins={"broken": Broken(), "rooms": Rooms()})
    member = Cluster(core, "node-a")
    member.nodes.add("node-b")
    member._drop_node("node-b")
    member._drop_node("node-b")  # known no more
    member._drop_node("node-c")  # never known
    assert lost == ["node-b"]
    assert "a plugin failed on the loss of node node-b" in caplog.text


def test_hook_on_cluster_resync(make_core, caplog):
    """Casts may have been missed (a subscription back, a node back from an outage): the
    implementations run in a greenlet of their own; asked again while they run, they run once
    more afterwards, not twice at once; a failing one is logged. Across real nodes with Redis
    stopped and started: tests/cluster/test_blocking_relay.py (block lists read again)."""
    from convergence.cluster import Cluster

    from gevent.event import Event

    runs, release = [], Event()

    class Cache:
        @hookimpl
        def on_cluster_resync(self, core):
            runs.append(core)
            release.wait()

    class Broken:
        @hookimpl
        def on_cluster_resync(self):
            raise RuntimeError("plugin bug")
    core = make_core({"cluster": {"redis": "redis://127.0.0.1:1/0"}},
                     plugins={"broken": Broken(), "cache": Cache()})
    member = Cluster(core, "node-a")  # not started: resyncing needs no Redis
    member._resync()
    gevent.idle()
    member._resync()  # while the first runs: once more after it
    member._resync()
    assert runs == [core]
    release.set()
    member._resyncing.join(timeout=5)
    assert runs == [core, core]
    assert "a plugin failed to re-read what it caches" in caplog.text


def test_hook_service_users(make_core):
    """A third-party service user is on every account's shared roster, next to echo and the HTTP user."""
    class Bot:
        @hookimpl
        def service_users(self, core):
            return [core.address("bot")]
    core = make_core(plugins={"bot": Bot()})
    alice = core.add_account("alice", "pw")
    assert set(contacts.service_users(core)) == {core.address(n) for n in ("bot", "echo", "httpuser")}
    items, _ = contacts.view(core, alice)
    assert ("bot@localhost", "both", ("Friends",)) in [(i.jid, i.subscription, i.groups) for i in items]
    assert contacts.is_shared(core, alice, core.address("bot"))
    core.pm.unregister(name="bot")  # the answer is kept only until a plugin comes or goes
    assert core.address("bot") not in contacts.service_users(core)


def test_hook_share_roster(make_core):
    """The shared roster is on unless a plugin says no (the XMPP plugin answers [xmpp] shared_roster)."""
    class Off:
        @hookimpl
        def share_roster(self):
            return False
    alone = make_core(load_entry_points=False)
    off = make_core(load_entry_points=False, plugins={"off": Off()})
    by_xmpp = make_core({"xmpp": {"shared_roster": False}})
    for core in (alone, off, by_xmpp):
        core.add_account("bob", "pw")
    assert [i.jid for i in contacts.view(alone, alone.add_account("alice", "pw"))[0]] == ["bob@localhost"]
    for core in (off, by_xmpp):
        assert contacts.view(core, core.add_account("alice", "pw"))[0] == []
        assert not contacts.sees(core, core.address("alice"), core.address("bob"))


def test_hook_on_subscription_request(make_core):
    """A watcher without a roster (a SIP SUBSCRIBE answered pending) asks: the XMPP plugin puts the
    request to the contact (stored for his next login) and shows it pending on the watcher's roster."""
    core = make_core({"xmpp": {"shared_roster": False}})
    alice, bob = core.add_account("alice", "pw"), core.add_account("bob", "pw")
    core.hook.on_subscription_request(core=core, account=alice, contact=bob)
    assert roster.has_request(core.db, "bob", "alice@localhost")
    assert roster.get(core.db, "alice", "bob@localhost").ask


def test_hook_on_account(core, register_plugin):
    rec = register_plugin(Recorder(), "rec")
    core.add_account("bob", "a")
    core.set_password("bob", "b")
    core.delete_account("bob")
    assert calls(rec, "on_account") == [("bob@localhost", "created"), ("bob@localhost", "changed"),
                                        ("bob@localhost", "deleted")]


def test_hook_password_secrets(make_core):
    """HA1 (password-equivalent for digest) is stored only when a plugin asks for it."""
    class Digest:
        @hookimpl
        def password_secrets(self, core):
            return ["digest"]

    without = make_core(load_entry_points=False)
    without.add_account("bob", "a")
    assert accounts.credentials(without.db, "bob").ha1_md5 == ""
    asking = make_core(load_entry_points=False, plugins={"digest": Digest()})
    asking.add_account("bob", "a")
    asking.set_password("bob", "b")
    assert accounts.credentials(asking.db, "bob").ha1_md5 == ha1("md5", "bob", "localhost", "b")


def test_hook_on_login(core, register_plugin):
    rec = register_plugin(Recorder(), "rec")
    core.presence.login(RecordingEndpoint(core.address("bob", "pc")))
    assert calls(rec, "on_login") == [("bob@localhost", "pc")]


def test_hook_on_logout(core, register_plugin):
    rec = register_plugin(Recorder(), "rec")
    endpoint = RecordingEndpoint(core.address("bob", "pc"))
    core.presence.login(endpoint)
    core.presence.logout(endpoint)
    core.presence.logout(endpoint)  # twice: reported once
    assert calls(rec, "on_logout") == [("bob@localhost", "pc")]


def test_hook_on_register(core, register_plugin):
    rec = register_plugin(Recorder(), "rec")
    binding = RecordingEndpoint(core.address("bob", "sip-1"), "sip")
    core.presence.register(binding, 3600)
    core.presence.register(binding, 1800)
    core.presence.unregister(binding)
    assert calls(rec, "on_register") == [("bob@localhost", 3600), ("bob@localhost", 1800),
                                         ("bob@localhost", 0)]


def test_hook_on_presence(core, register_plugin):
    rec = register_plugin(Recorder(), "rec")
    core.presence.set_service(core.address("bot"), Presence())
    core.presence.set_service(core.address("bot"), None)
    assert calls(rec, "on_presence") == [("bot@localhost", True), ("bot@localhost", False)]
    gevent.sleep(0)
