"""Two complete cores with different [xmpp] settings in one process do not see each other
(issue 12): each has its own ``xmpp:server`` with its own sessions, IQ router, presence memory,
limits and login-failure counts, and stopping one leaves the other serving.

Clients are sans-IO sessions on recording links (test_c2s.py's ``Peer``); both cores load every
installed plugin."""
import pytest

from convergence.plugins.xmpp.stream import StreamClose, StreamOpen

from .test_c2s import SASL, Peer, header, plain, stream_error

SETTINGS = {
    "example.org": {"max_queued": 4096, "max_stanza_size": 2048, "login_failures": 1},
    "example.net": {"max_queued": 65536, "max_stanza_size": 65536, "login_failures": 5},
}
PEER = ("192.0.2.7", 4000)  # the same client address talks to both servers


@pytest.fixture
def servers(make_core):
    """domain -> its core's XmppServer; alice and bob have accounts on both."""
    servers = {}
    for domain, xmpp in SETTINGS.items():
        core = make_core({"server": {"domain": domain}, "xmpp": xmpp})
        for name in ("alice", "bob"):
            core.add_account(name, f"{name}@{domain}")
        server = core.pm.get_plugin("xmpp:server")
        server.service.tls_context = object()  # the Link "does" TLS
        servers[domain] = server
    return servers


def login(service, name: str) -> Peer:
    peer = Peer(service, encrypted=True, address=PEER)
    domain = service.domain
    peer.say(header(to=domain))
    [success] = peer.say(b"<auth xmlns='%s' mechanism='PLAIN'>%s</auth>" % (
        SASL.encode(), plain(name, f"{name}@{domain}")))
    assert success.tag == f"{{{SASL}}}success"
    peer.restart()
    peer.say(header(to=domain))
    [bound] = peer.say(b"<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                       b"<resource>desk</resource></bind></iq>")
    assert bound.get("type") == "result"
    peer.say(b"<presence/>")
    return peer


def test_each_core_has_its_own_xmpp_server_and_settings(servers):
    org, net = servers["example.org"], servers["example.net"]
    assert org is not net and org.service is not net.service and org.service.iq is not net.service.iq
    for domain, server in servers.items():
        assert server.service.domain == domain
        assert {k: server.service.settings[k] for k in SETTINGS[domain]} == SETTINGS[domain]
    assert "jabber:iq:roster" in org.service.iq.features(org.service)


def test_sessions_presence_and_messages_stay_on_their_core(servers):
    org, net = (servers[d].service for d in SETTINGS)
    alice_org, bob_org = login(org, "alice"), login(org, "bob")
    alice_net = login(net, "alice")
    assert [s.address.jid for s in org.all_sessions()] == ["alice@example.org/desk", "bob@example.org/desk"]
    assert [s.address.jid for s in net.all_sessions()] == ["alice@example.net/desk"]
    assert set(org.last_presence) == {alice_org.session.address, bob_org.session.address}
    assert set(net.last_presence) == {alice_net.session.address}
    # alice on example.net saw no presence of example.org's bob (the shared roster is per core)
    assert not [e for e in alice_net.say(b"") if e.get("from", "").startswith("bob@")]

    alice_org.say(b"")
    bob_org.say(b"<message to='alice@example.org' type='chat' id='m1'><body>hi</body></message>")
    [message] = alice_org.say(b"")
    assert (message.get("from"), message.findtext("{jabber:client}body")) == ("bob@example.org/desk", "hi")
    assert alice_net.say(b"") == []


def test_limits_are_per_core(servers):
    org, net = (servers[d].service for d in SETTINGS)
    stanza = b"<message to='bob@%s'><body>" + b"x" * 4000 + b"</body></message>"
    small, large = login(org, "alice"), login(net, "alice")
    assert stream_error(small.say(stanza % b"example.org")) == "policy-violation"  # over 2048
    assert not [e for e in large.say(stanza % b"example.net") if isinstance(e, StreamClose)]
    assert not large.session.closed

    # one failed login blocks the address on example.org (login_failures = 1) and not on .net
    for service, blocked in ((org, True), (net, False)):
        peer = Peer(service, encrypted=True, address=PEER)
        peer.say(header(to=service.domain))
        peer.say(b"<auth xmlns='%s' mechanism='PLAIN'>%s</auth>" % (SASL.encode(), plain("alice", "wrong")))
        assert peer.session.closed is blocked
    assert login(net, "bob").session.address.jid == "bob@example.net/desk"


def test_stopping_one_core_leaves_the_other_serving(servers):
    org, net = servers["example.org"], servers["example.net"]
    alice_org, alice_net = login(org.service, "alice"), login(net.service, "alice")
    org.core.hook.on_shutdown(core=org.core)
    assert stream_error(alice_org.say(b"")) == "system-shutdown"
    assert org.core.pm.get_plugin("xmpp:server") is None
    assert net.core.pm.get_plugin("xmpp:server") is net
    assert not alice_net.session.closed and net.service.all_sessions() == [alice_net.session]
    opened, _ = Peer(net.service, encrypted=True, address=PEER).say(header(to="example.net"))
    assert isinstance(opened, StreamOpen)
