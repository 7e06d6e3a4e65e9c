"""Federation with a real Prosody 0.12 (Debian ``prosody``) on loopback (issue 13): STARTTLS and
dialback (XEP-0220) both ways with self-signed certificates, messages both ways, errors, offline
delivery, a Prosody restart while stanzas wait, certificates from a CA (SASL EXTERNAL), presence
and IQs. How the servers find each other is in ``prosody.py``'s docstring."""
import pytest

from .phones import SIP, FederatedPhone
from .pki import Authority
from convergence.testing import free_port

from .prosody import OURS, PROSODY, Prosody
from .talk import says

pytestmark = pytest.mark.skipif(PROSODY is None, reason="prosody is not installed (.ci/run installs it)")


@pytest.fixture
def s2s_port():
    """Where our server's s2s listener will be (Prosody is told before either starts)."""
    return free_port()


@pytest.fixture
def prosody(tmp_path, s2s_port):
    server = Prosody(tmp_path / "prosody", accounts={"bob": "bob-secret"}, peers={OURS: s2s_port})
    yield server
    server.stop()


@pytest.fixture
def ours(federated, prosody, s2s_port):
    return federated(OURS, {"alice": "alice-secret"}, {prosody.domain: prosody.s2s_address},
                     xmpp={"s2s_listen": f"127.0.0.1:{s2s_port}"}, sip=SIP)


def test_message_to_prosody_and_back(ours, prosody, xmpp_client):
    alice, bob = xmpp_client(ours, "alice"), xmpp_client(prosody, "bob")
    says(alice, bob, "hello prosody")
    says(bob, alice, "hello convergence", to=alice.jid)
    ours.process.wait_for(f"{prosody.domain} authenticated by dialback")  # its stream to us
    ours.process.wait_for(f"authenticated to {prosody.domain} by dialback")  # ours to it


def test_prosody_user_writes_first(ours, prosody, xmpp_client):
    alice, bob = xmpp_client(ours, "alice"), xmpp_client(prosody, "bob")
    says(bob, alice, "first contact")


def test_unknown_users_both_ways(ours, prosody, xmpp_client):
    alice, bob = xmpp_client(ours, "alice"), xmpp_client(prosody, "bob")
    alice.send_message(prosody.jid("nobody"), "anyone?")
    assert alice.next("message_error", timeout=15)["error"]["condition"] == "service-unavailable"
    bob.send_message(ours.jid("nobody"), "anyone here?")
    assert bob.next("message_error", timeout=15)["error"]["condition"] == "service-unavailable"


def test_offline_delivery_both_ways(ours, prosody, xmpp_client):
    """Each server stores a message for its offline user; an error for a stanza sent after it on
    the same stream shows the peer has handled it (streams keep their order)."""
    alice = xmpp_client(ours, "alice")
    alice.send_message(prosody.jid("bob"), "stored at prosody")
    alice.send_message(prosody.jid("nobody"), "ordering mark")
    alice.next("message_error", timeout=15)
    bob = xmpp_client(prosody, "bob")
    got = bob.next("message", timeout=15)
    assert (str(got["from"]), got["body"]) == (alice.jid, "stored at prosody")
    alice.disconnect()
    bob.send_message(ours.jid("alice"), "stored at convergence")
    bob.send_message(ours.jid("nobody"), "ordering mark")
    bob.next("message_error", timeout=15)
    alice = xmpp_client(ours, "alice", resource="again")
    got = alice.next("message", timeout=15)
    assert (str(got["from"]), got["body"]) == (bob.jid, "stored at convergence")
    assert got["delay"]["stamp"] is not None  # XEP-0203: it was stored


def test_prosody_restart_queued_stanzas_go_after_reconnect(ours, prosody, xmpp_client):
    alice, bob = xmpp_client(ours, "alice"), xmpp_client(prosody, "bob")
    alice.send_message(prosody.jid("bob"), "before")
    assert bob.next("message", timeout=15)["body"] == "before"
    bob.disconnect()
    prosody.stop()
    alice.send_message(prosody.jid("bob"), "while it was down")
    ours.process.wait_for("unreachable", timeout=15)  # the connection was refused: it retries
    prosody.start()
    bob = xmpp_client(prosody, "bob")
    got = bob.next("message", timeout=30, match=lambda m: m["body"] == "while it was down")
    assert str(got["from"]) == alice.jid


def test_certificates_from_a_ca_sasl_external_and_secure_auth(federated, tmp_path, xmpp_client):
    """Both servers have certificates from a CA made by the test and require valid ones
    (s2s_secure_auth on both sides): both streams authenticate with SASL EXTERNAL (XEP-0178),
    ours to Prosody and Prosody's to us (it presents its certificate as a TLS client)."""
    authority, port = Authority(tmp_path / "ca"), free_port()
    prosody = Prosody(tmp_path / "prosody", accounts={"bob": "bob-secret"}, peers={OURS: port},
                      secure_auth=True, cafile=authority.cert, cert=authority.issue("prosody.test"))
    try:
        cert, key = authority.issue(OURS)
        ours = federated(OURS, {"alice": "alice-secret"}, {prosody.domain: prosody.s2s_address},
                         xmpp={"s2s_listen": f"127.0.0.1:{port}", "tls_cert": str(cert), "tls_key": str(key),
                               "s2s_secure_auth": True, "s2s_ca_file": str(authority.cert)})
        ours.cert = prosody.cert = authority.cert  # the clients trust the CA
        alice, bob = xmpp_client(ours, "alice"), xmpp_client(prosody, "bob")
        says(alice, bob, "signed and sealed")
        ours.process.wait_for(f"authenticated to {prosody.domain} by SASL EXTERNAL")
        says(bob, alice, "delivered")
        ours.process.wait_for(f"{prosody.domain} authenticated by SASL EXTERNAL (inbound")
    finally:
        prosody.stop()


def test_secure_auth_refuses_a_self_signed_peer(federated, prosody, s2s_port, xmpp_client, tmp_path):
    authority = Authority(tmp_path / "ca")
    ours = federated(OURS, {"alice": "alice-secret"}, {prosody.domain: prosody.s2s_address},
                     xmpp={"s2s_listen": f"127.0.0.1:{s2s_port}", "s2s_secure_auth": True,
                           "s2s_ca_file": str(authority.cert), "s2s_retry_window": 0.1})
    alice = xmpp_client(ours, "alice")
    alice.send_message(prosody.jid("bob"), "not to an unverified server")
    error = alice.next("message_error", timeout=15)
    assert error["error"]["condition"] == "remote-server-not-found"
    ours.process.wait_for("does not validate (s2s_secure_auth)")


def test_presence_subscription_both_ways_broadcast_and_logout(ours, prosody, xmpp_client, tmp_path):
    """RFC 6121 across domains with Prosody: alice subscribes to bob (slixmpp approves and
    subscribes back by default), both see each other's presence, a phone registered for alice
    shows to bob as a resource of her account, her logout is unavailable at bob's, and her next
    login probes bob (RFC 6121 §4.3) and shows her to him."""
    alice, bob = xmpp_client(ours, "alice", roster=True), xmpp_client(prosody, "bob", roster=True)
    alice.call(lambda: alice.xmpp.send_presence(pto=prosody.jid("bob"), ptype="subscribe"))
    alice.next("presence", timeout=15, match=lambda p: str(p["from"]) == bob.jid and p["type"] == "available")
    bob.next("presence", timeout=15, match=lambda p: str(p["from"]) == alice.jid and p["type"] == "available")
    roster = alice.call(lambda: alice.xmpp.client_roster)
    assert roster[prosody.jid("bob")]["subscription"] == "both"

    phone = FederatedPhone(ours, "alice", "alice-secret", tmp_path / "sipp")
    phone.register()
    shown = bob.next("presence", timeout=15, match=lambda p: p["from"].bare == ours.jid("alice")
                     and p["from"].resource.startswith("sip-"))
    assert shown["type"] == "available"

    alice.disconnect()
    bob.next("presence", timeout=15, match=lambda p: str(p["from"]) == alice.jid and p["type"] == "unavailable")
    again = xmpp_client(ours, "alice", resource="again")  # initial presence probes bob (§4.3.1)
    again.next("presence", timeout=15, match=lambda p: str(p["from"]) == bob.jid and p["type"] == "available")
    bob.next("presence", timeout=15, match=lambda p: str(p["from"]) == again.jid and p["type"] == "available")


def test_iqs_cross_both_ways(ours, prosody, xmpp_client):
    """XEP-0199 pings and XEP-0030 disco over federation: a local client asks Prosody's server
    and a Prosody user; a Prosody user asks our server and a local client (who answers itself)."""
    alice, bob = xmpp_client(ours, "alice"), xmpp_client(prosody, "bob")
    for client, target in ((alice, prosody.domain), (alice, bob.jid), (bob, ours.domain), (bob, alice.jid)):
        assert client.call(lambda: client.xmpp.plugin["xep_0199"].ping(jid=target, timeout=10)) is not None
    info = bob.call(lambda: bob.xmpp.plugin["xep_0030"].get_info(jid=ours.domain, timeout=10))
    assert "urn:xmpp:ping" in info["disco_info"]["features"]
