"""c2s session transcripts (RFC 6120 §4-§8): bytes in, bytes out, on a real Core, no sockets.

A ``Peer`` plays the client: ``say(bytes)`` feeds the session and returns what the server wrote,
parsed back into elements by a client-side stream parser. The last tests log in with slixmpp over
real STARTTLS (and Direct TLS) with each SASL mechanism.
"""
import base64
import xml.etree.ElementTree as ET

import pytest
from slixmpp.util.sasl import client as sasl_client

from convergence import Presence
from convergence.plugins.xmpp import c2s
from convergence.plugins.xmpp.stream import Stanza, StreamClose, StreamOpen, StreamParser
from convergence.store import offline

DOMAIN = "example.org"
SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
STREAM_ERRORS = "urn:ietf:params:xml:ns:xmpp-streams"
STANZA_ERRORS = "urn:ietf:params:xml:ns:xmpp-stanzas"


def header(to=DOMAIN, ns="jabber:client", version="1.0"):
    attrs = "".join(f" {k}='{v}'" for k, v in (("to", to), ("version", version)) if v is not None)
    return (f"<?xml version='1.0'?><stream:stream{attrs} xmlns='{ns}' "
            f"xmlns:stream='http://etherx.jabber.org/streams'>").encode()


class Link:
    """What the transport gives a session, recording instead of writing to a socket: what it
    accepts counts as written at once, unless ``hold()`` made it keep bytes back (a client that
    does not read)."""

    def __init__(self):
        self.out = bytearray()
        self.tls = False
        self.closed = None
        self.accepted = self.written = 0
        self.holding = False

    def send(self, data: bytes) -> bool:
        if self.closed:
            return False
        self.out += data
        self.accepted += len(data)
        if not self.holding:
            self.written = self.accepted
        return True

    def hold(self) -> None:
        self.holding = True

    def close(self, reason: str) -> None:
        """As the connection closes when its queue overflows or its peer is gone."""
        self.closed = reason

    def flush(self, timeout) -> bool:
        return not self.closed and self.written == self.accepted

    def start_tls(self, context) -> None:
        self.tls = True

    def close_after_flush(self, reason: str) -> None:
        self.closed = reason


class Peer:
    """A scripted client: ``say`` returns the server's answer as parsed events/elements."""

    def __init__(self, service, encrypted=False, address=("192.0.2.1", 4000)):
        self.link = Link()
        self.session = c2s.Session(service, self.link, address, encrypted)
        self.reader = StreamParser(10 ** 7)

    def say(self, data: bytes) -> list:
        """Send ``data`` (b"": nothing, just read what the server wrote since)."""
        if data:
            self.session.receive(data)
        out, self.link.out = bytes(self.link.out), bytearray()
        return [e.element if isinstance(e, Stanza) else e for e in self.reader.feed(out)]

    def restart(self):
        self.reader.reset()


def names(events) -> list[str]:
    return [e.tag if isinstance(e, ET.Element) else type(e).__name__ for e in events]


def stream_error(events) -> str:
    [error] = [e for e in events if isinstance(e, ET.Element) and e.tag.endswith("}error")
               and e.tag.startswith("{http://etherx")]
    return error[0].tag.split("}")[1]


def stanza_error(element) -> str:
    error = element.find("{jabber:client}error")
    return next(c.tag.split("}")[1] for c in error if c.tag.startswith("{" + STANZA_ERRORS))


@pytest.fixture
def service(make_core):
    def make(**xmpp):
        core = make_core({"server": {"domain": DOMAIN}, "xmpp": xmpp})
        service = core.pm.get_plugin("xmpp:server").service
        service.tls_context = object()  # the Link "does" TLS
        return service
    return make


@pytest.fixture
def svc(service):
    svc = service()
    svc.core.add_account("alice", "secret")
    svc.core.add_account("bob", "secret")
    return svc


def plain(name, password):
    return base64.b64encode(f"\0{name}\0{password}".encode())


def login(service, name="alice", resource="phone", address=("192.0.2.1", 4000)) -> Peer:
    peer = Peer(service, address=address)
    peer.say(header())
    assert peer.say(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")[0].tag.endswith("proceed")
    peer.restart()
    peer.say(header())
    [success] = peer.say(b"<auth xmlns='%s' mechanism='PLAIN'>%s</auth>" % (SASL.encode(), plain(name, "secret")))
    assert success.tag == f"{{{SASL}}}success"
    peer.restart()
    peer.say(header())
    [result] = peer.say(b"<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                        b"<resource>%s</resource></bind></iq>" % resource.encode())
    assert result.get("type") == "result"
    return peer


# ---- stream header (RFC 6120 §4.7) ---------------------------------------------------------------

def test_header_is_answered_with_ours_and_starttls_required(svc):
    peer = Peer(svc)
    opened, features = peer.say(header())
    assert isinstance(opened, StreamOpen)
    assert opened.attrs["from"] == DOMAIN and opened.attrs["version"] == "1.0" and opened.attrs["id"]
    [starttls] = features
    assert starttls.tag == "{urn:ietf:params:xml:ns:xmpp-tls}starttls"
    assert starttls.find("{urn:ietf:params:xml:ns:xmpp-tls}required") is not None


@pytest.mark.parametrize("data, condition", [
    (header(to="other.example"), "host-unknown"),
    (header(to="not a domain"), "host-unknown"),
    (header(to=None), "improper-addressing"),
    (header(ns="jabber:server"), "invalid-namespace"),
    (header(version=None), "unsupported-version"),
    (header(version="2.0"), "unsupported-version"),
    (b"<?xml version='1.0'?><stream xmlns='jabber:client'>", "invalid-namespace"),
    (b"<!DOCTYPE lol [<!ENTITY lol 'lol'>]>", "restricted-xml"),
    (b"<?php echo 1; ?>", "restricted-xml"),
    (b"<stream:stream>", "bad-namespace-prefix"),
])
def test_bad_headers_get_our_header_then_a_stream_error(svc, data, condition):
    peer = Peer(svc)
    events = peer.say(data)
    assert isinstance(events[0], StreamOpen) and isinstance(events[-1], StreamClose)
    assert stream_error(events) == condition
    assert peer.link.closed and peer.session.closed


def test_header_to_is_compared_normalized(svc):
    assert names(Peer(svc).say(header(to="Example.ORG")))[1] == "{http://etherx.jabber.org/streams}features"


# ---- STARTTLS and SASL (RFC 6120 §5, §6) --------------------------------------------------------

def test_starttls_proceeds_and_restarts_with_mechanisms(svc):
    peer = Peer(svc)
    peer.say(header())
    peer.session.receive(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
    assert bytes(peer.link.out) == b"<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"
    assert peer.link.tls and peer.session.encrypted
    peer.link.out.clear()
    peer.restart()
    _, features = peer.say(header())
    mechanisms = [m.text for m in features.find(f"{{{SASL}}}mechanisms")]
    assert mechanisms == ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"]
    assert features.find("{urn:ietf:params:xml:ns:xmpp-tls}starttls") is None


def test_auth_before_tls_is_refused_when_tls_is_required(svc):
    peer = Peer(svc)
    peer.say(header())
    [failure] = peer.say(b"<auth xmlns='%s' mechanism='PLAIN'>%s</auth>" % (SASL.encode(), plain("alice", "secret")))
    assert failure[0].tag == f"{{{SASL}}}encryption-required"
    assert peer.session.username is None


def test_without_required_tls_plain_is_still_only_offered_over_tls(service):
    svc = service(require_tls=False)
    svc.core.add_account("alice", "secret")
    peer = Peer(svc)
    _, features = peer.say(header())
    assert [m.text for m in features.find(f"{{{SASL}}}mechanisms")] == ["SCRAM-SHA-256", "SCRAM-SHA-1"]
    assert features.find("{urn:ietf:params:xml:ns:xmpp-tls}starttls").find(
        "{urn:ietf:params:xml:ns:xmpp-tls}required") is None
    [failure] = peer.say(b"<auth xmlns='%s' mechanism='PLAIN'>%s</auth>" % (SASL.encode(), plain("alice", "secret")))
    assert failure[0].tag == f"{{{SASL}}}encryption-required"


def tls_peer(svc, address=("192.0.2.1", 4000)) -> Peer:
    peer = Peer(svc, encrypted=True, address=address)
    peer.say(header())
    return peer


@pytest.mark.parametrize("data, condition", [
    (b"<auth xmlns='%s' mechanism='DIGEST-MD5'/>", "invalid-mechanism"),
    (b"<auth xmlns='%s' mechanism='PLAIN'>!!notbase64</auth>", "incorrect-encoding"),
    (b"<auth xmlns='%s' mechanism='PLAIN'>AGFsaWNl</auth>", "malformed-request"),
    (b"<response xmlns='%s'>AA==</response>", "malformed-request"),
    (b"<abort xmlns='%s'/>", "aborted"),
])
def test_sasl_failures_carry_the_right_condition(svc, data, condition):
    peer = tls_peer(svc)
    [failure] = peer.say(data % SASL.encode())
    assert failure.tag == f"{{{SASL}}}failure" and failure[0].tag == f"{{{SASL}}}{condition}"
    assert not peer.session.closed  # the client may try again (RFC 6120 §6.4.5)


def test_plain_without_initial_response_gets_an_empty_challenge(svc):
    peer = tls_peer(svc)
    peer.session.receive(b"<auth xmlns='%s' mechanism='PLAIN'/>" % SASL.encode())
    assert bytes(peer.link.out).endswith(b"<challenge xmlns='%s'>=</challenge>" % SASL.encode())
    peer.link.out.clear()
    assert peer.say(b"<response xmlns='%s'>%s</response>" % (SASL.encode(), plain("alice", "secret")))[0].tag \
        == f"{{{SASL}}}success"


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-1"])
def test_scram_exchange_with_an_independent_client(svc, mechanism):
    mech = sasl_client.choose([mechanism], lambda required, optional: {
        "username": b"alice", "password": b"secret", "authzid": b"", "channel_binding": None},
        lambda values: {"encrypted": True, "encrypted_plain": True, "unencrypted_scram": True,
                        "tls_version": "TLSv1.3", "binding_proposed": False})
    peer = tls_peer(svc)
    [challenge] = peer.say(b"<auth xmlns='%s' mechanism='%s'>%s</auth>" % (
        SASL.encode(), mechanism.encode(), base64.b64encode(mech.process(None))))
    assert challenge.tag == f"{{{SASL}}}challenge"
    [success] = peer.say(b"<response xmlns='%s'>%s</response>" % (
        SASL.encode(), base64.b64encode(mech.process(base64.b64decode(challenge.text)))))
    assert success.tag == f"{{{SASL}}}success"
    mech.process(base64.b64decode(success.text))  # raises if our server signature were wrong
    peer.restart()
    _, features = peer.say(header())
    assert {c.tag for c in features} >= {"{urn:ietf:params:xml:ns:xmpp-bind}bind",
                                         "{urn:ietf:params:xml:ns:xmpp-session}session"}
    assert features.find("{urn:ietf:params:xml:ns:xmpp-session}session")[0].tag.endswith("optional")


def test_failed_logins_are_limited_per_source_address(service):
    svc = service(login_failures=3)
    svc.core.add_account("alice", "secret")
    wrong = b"<auth xmlns='%s' mechanism='PLAIN'>%s</auth>" % (SASL.encode(), plain("alice", "guess"))
    peer = tls_peer(svc)
    for _ in range(2):
        [failure] = peer.say(wrong)
        assert failure[0].tag == f"{{{SASL}}}not-authorized"
    events = peer.say(wrong)  # the third: <failure/>, then policy-violation (RFC 6120 §6.4.5)
    assert events[0][0].tag == f"{{{SASL}}}not-authorized"
    assert stream_error(events) == "policy-violation" and peer.session.closed
    # a new connection from that address is refused before its password is even checked
    again = tls_peer(svc)
    assert stream_error(again.say(b"<auth xmlns='%s' mechanism='PLAIN'>%s</auth>" % (
        SASL.encode(), plain("alice", "secret")))) == "policy-violation"
    # another address logs in fine
    assert login(svc, address=("192.0.2.99", 4000)).session.address is not None


# ---- resource binding (RFC 6120 §7) -------------------------------------------------------------

def test_bind_with_a_chosen_resource_logs_the_session_in(svc):
    peer = login(svc, resource="phone")
    session = peer.session
    assert session.address == svc.core.address("alice", "phone")
    assert svc.session(session.address) is session
    assert svc.core.presence.endpoint(session.address) is session
    assert not session.presence.available  # until initial presence


def test_bind_without_resource_gets_one_generated(svc):
    peer = Peer(svc, encrypted=True)
    peer.say(header())
    peer.say(b"<auth xmlns='%s' mechanism='PLAIN'>%s</auth>" % (SASL.encode(), plain("alice", "secret")))
    peer.restart()
    peer.say(header())
    [result] = peer.say(b"<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
    jid = result.find("{urn:ietf:params:xml:ns:xmpp-bind}bind/{urn:ietf:params:xml:ns:xmpp-bind}jid").text
    assert jid.startswith("alice@example.org/") and len(jid) > len("alice@example.org/")


def test_conflicting_resource_replaces_the_old_session(svc):
    old = login(svc, resource="phone")
    new = login(svc, resource="phone")
    assert stream_error(old.say(b"")) == "conflict" and old.session.closed
    assert svc.session(new.session.address) is new.session
    assert svc.core.presence.endpoint(new.session.address) is new.session


def test_conflicting_resource_is_renamed_when_configured(service):
    svc = service(resource_conflict="rename")
    svc.core.add_account("alice", "secret")
    old, new = login(svc, resource="phone"), login(svc, resource="phone")
    assert not old.session.closed
    assert new.session.address.resource.startswith("phone-")
    assert len(svc.sessions(svc.core.address("alice"))) == 2


def test_legacy_session_iq_is_answered(svc):
    peer = login(svc)
    [result] = peer.say(b"<iq type='set' id='s'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>")
    assert (result.get("type"), result.get("id")) == ("result", "s")


# ---- stanzas (RFC 6120 §8) ----------------------------------------------------------------------

def test_stanza_before_authentication_is_not_authorized(svc):
    peer = tls_peer(svc)
    events = peer.say(b"<message to='bob@example.org'><body>hi</body></message>")
    assert stream_error(events) == "not-authorized" and peer.session.closed


def test_stanza_after_auth_before_bind_is_not_authorized(svc):
    peer = tls_peer(svc)
    peer.say(b"<auth xmlns='%s' mechanism='PLAIN'>%s</auth>" % (SASL.encode(), plain("alice", "secret")))
    peer.restart()
    peer.say(header())
    assert stream_error(peer.say(b"<presence/>")) == "not-authorized"


def test_spoofed_from_is_replaced_by_the_real_full_jid(svc):
    alice, bob = login(svc, "alice"), login(svc, "bob", resource="desk")
    alice.say(b"<message from='bob@example.org/desk' to='bob@example.org/desk' type='chat' id='m1'>"
              b"<body>it is me, bob</body></message>")
    [message] = bob.say(b"")
    assert message.get("from") == "alice@example.org/phone"
    assert message.findtext("{jabber:client}body") == "it is me, bob"


def test_stanzas_split_anywhere_arrive_whole(svc):
    alice, bob = login(svc, "alice"), login(svc, "bob", resource="desk")
    data = "<message to='bob@example.org/desk'><body>héllo wörld</body></message>".encode()
    for i in range(len(data)):
        alice.say(data[i:i + 1])
    [message] = bob.say(b"")
    assert message.findtext("{jabber:client}body") == "héllo wörld"


def test_unknown_top_level_element_is_unsupported_stanza_type(svc):
    assert stream_error(login(svc).say(b"<foo/>")) == "unsupported-stanza-type"


@pytest.mark.parametrize("iq, condition", [
    (b"<iq type='get' id='1'><query xmlns='urn:example:unknown'/></iq>", "service-unavailable"),
    (b"<iq type='get' id='1'/>", "bad-request"),
    (b"<iq type='get' id='1'><ping xmlns='urn:xmpp:ping'/><ping xmlns='urn:xmpp:ping'/></iq>", "bad-request"),
    (b"<iq type='bogus' id='1'><ping xmlns='urn:xmpp:ping'/></iq>", "bad-request"),
    (b"<iq type='set' id='1'><ping xmlns='urn:xmpp:ping'/></iq>", "feature-not-implemented"),
    (b"<iq type='get' id='1' to='nobody@example.org/x'><ping xmlns='urn:xmpp:ping'/></iq>",
     "service-unavailable"),
    (b"<iq type='get' id='1' to='bob@example.org'><ping xmlns='urn:xmpp:ping'/></iq>", "service-unavailable"),
    (b"<iq type='get' id='1' to='other.example'><ping xmlns='urn:xmpp:ping'/></iq>", "remote-server-not-found"),
    (b"<iq type='get' id='1' to='a@b@c'><ping xmlns='urn:xmpp:ping'/></iq>", "jid-malformed"),
    (b"<iq type='get' id='1' to='nobody@example.org'>"
     b"<query xmlns='http://jabber.org/protocol/disco#info'/></iq>", "service-unavailable"),
])
def test_iq_errors(svc, iq, condition):
    [reply] = login(svc).say(iq)
    assert reply.get("type") == "error" and stanza_error(reply) == condition


def test_iq_results_to_the_server_are_dropped(svc):
    assert login(svc).say(b"<iq type='result' id='ping-1'/>") == []


def test_iq_to_a_full_jid_is_forwarded_with_the_real_from(svc):
    alice, bob = login(svc, "alice"), login(svc, "bob", resource="desk")
    alice.say(b"<iq type='get' id='v1' to='bob@example.org/desk'><query xmlns='jabber:iq:version'/></iq>")
    [forwarded] = bob.say(b"")
    assert (forwarded.get("from"), forwarded.get("id")) == ("alice@example.org/phone", "v1")
    bob.say(b"<iq type='result' id='v1' to='alice@example.org/phone'/>")
    [result] = alice.say(b"")
    assert (result.get("type"), result.get("from")) == ("result", "bob@example.org/desk")


def test_server_discovery_ping_and_version(svc):
    peer = login(svc)
    [info] = peer.say(b"<iq type='get' id='d' to='example.org'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
    query = info.find("{http://jabber.org/protocol/disco#info}query")
    identity = query.find("{http://jabber.org/protocol/disco#info}identity")
    assert (identity.get("category"), identity.get("type")) == ("server", "im")
    features = {f.get("var") for f in query.findall("{http://jabber.org/protocol/disco#info}feature")}
    assert {"urn:xmpp:carbons:2", "urn:xmpp:ping", "jabber:iq:version", "msgoffline",
            "http://jabber.org/protocol/disco#info", "http://jabber.org/protocol/disco#items"} <= features
    [account] = peer.say(b"<iq type='get' id='a' to='bob@example.org'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
    identity = account.find("{http://jabber.org/protocol/disco#info}query/{http://jabber.org/protocol/disco#info}identity")
    assert (identity.get("category"), identity.get("type")) == ("account", "registered")
    [items] = peer.say(b"<iq type='get' id='i'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>")
    assert items.get("type") == "result"
    [pong] = peer.say(b"<iq type='get' id='p' to='example.org'><ping xmlns='urn:xmpp:ping'/></iq>")
    assert (pong.get("type"), pong.get("from"), len(pong)) == ("result", DOMAIN, 0)
    [version] = peer.say(b"<iq type='get' id='v'><query xmlns='jabber:iq:version'/></iq>")
    assert version.findtext("{jabber:iq:version}query/{jabber:iq:version}name") == "Convergence"


# ---- messages (RFC 6121 §5, §8.5) ---------------------------------------------------------------

@pytest.mark.parametrize("to, condition", [
    (b"nobody@example.org", "service-unavailable"),  # RFC 6121 §8.5.1, not item-not-found
    (b"someone@other.example", "remote-server-not-found"),
])
def test_undeliverable_messages_are_answered_with_an_error(svc, to, condition):
    [error] = login(svc).say(b"<message to='%s' id='m1'><body>hi</body></message>" % to)
    assert (error.get("type"), error.get("id"), error.get("from")) == ("error", "m1", to.decode())
    assert stanza_error(error) == condition


def test_an_error_message_is_never_answered_with_an_error(svc):
    assert login(svc).say(b"<message to='nobody@example.org' type='error'/>") == []


def test_message_to_an_offline_account_is_stored_and_later_delivered_with_a_delay(svc):
    alice = login(svc)
    alice.say(b"<message to='bob@example.org' type='chat' id='o1'><body>while you were out</body></message>")
    bob = login(svc, "bob")
    assert svc.core.router.deliver_stored(svc.core.address("bob")) == 0  # not available yet
    bob.session.presence = Presence()  # what presence.py does on initial presence
    svc.core.presence.update(bob.session)
    assert svc.core.router.deliver_stored(svc.core.address("bob")) == 1
    [message] = [e for e in bob.say(b"") if e.tag == "{jabber:client}message"]
    assert message.findtext("{jabber:client}body") == "while you were out"
    assert message.find("{urn:xmpp:delay}delay").get("from") == DOMAIN


def available(peer) -> Peer:
    peer.session.presence = Presence()  # what presence.py does on initial presence
    peer.session.service.core.presence.update(peer.session)
    return peer


def test_messages_a_closed_connection_did_not_write_are_stored_in_order(svc):
    alice, bob = login(svc, "alice"), available(login(svc, "bob"))
    say = lambda n: alice.say(b"<message to='bob@example.org' type='chat'><body>%d</body></message>" % n)
    say(0)  # written
    bob.link.hold()  # bob stops reading: what follows stays queued
    say(1), say(2)
    bob.link.close("outbound queue full: the peer is not reading")
    say(3)  # refused by the closed link, after 1 and 2 went back
    stored = lambda: [m.body for _, m in offline.pending(svc.core.db, "bob", 10)]
    assert stored() == ["1", "2", "3"]
    assert svc.core.presence.endpoint(bob.session.address) is None  # it left the hub first
    bob.session.connection_lost()  # the transport's on_close, later: nothing goes back twice
    assert stored() == ["1", "2", "3"]


def test_a_closing_stream_gives_back_what_it_did_not_write_once_its_connection_closed(svc):
    alice, bob = login(svc, "alice"), available(login(svc, "bob"))
    bob.link.hold()
    alice.say(b"<message to='bob@example.org' type='chat'><body>held</body></message>")
    bob.link.close_after_flush = lambda reason: None  # the stream error is still being written
    bob.session.close("connection-timeout")
    assert offline.count(svc.core.db, "bob") == 0  # it may still be written
    bob.link.close("write failed: timeout")
    bob.session.connection_lost()
    assert [m.body for _, m in offline.pending(svc.core.db, "bob", 10)] == ["held"]


def test_extension_payloads_travel_with_the_message(svc):
    alice, bob = login(svc, "alice"), login(svc, "bob", resource="desk")
    alice.say(b"<message to='bob@example.org/desk' type='chat'><body>x</body>"
              b"<active xmlns='http://jabber.org/protocol/chatstates'/></message>")
    [message] = bob.say(b"")
    assert message.find("{http://jabber.org/protocol/chatstates}active") is not None


def test_echo_answers_through_the_router(svc):
    peer = login(svc)
    [reply] = peer.say(b"<message to='echo@example.org' type='chat' id='e1'><body>ping</body></message>")
    assert (reply.get("from"), reply.get("to")) == ("echo@example.org", "alice@example.org/phone")
    assert reply.findtext("{jabber:client}body") == "ping"


def test_carbons(svc):
    phone, laptop = login(svc, "alice", "phone"), login(svc, "alice", "laptop")
    bob = login(svc, "bob", "desk")
    [enabled] = laptop.say(b"<iq type='set' id='c'><enable xmlns='urn:xmpp:carbons:2'/></iq>")
    assert enabled.get("type") == "result" and laptop.session.carbons
    phone.say(b"<message to='bob@example.org/desk' type='chat' id='s1'><body>sent</body></message>")
    [copy] = laptop.say(b"")
    forwarded = copy.find("{urn:xmpp:carbons:2}sent/{urn:xmpp:forward:0}forwarded/{jabber:client}message")
    assert (copy.get("from"), forwarded.get("id")) == ("alice@example.org", "s1")
    bob.say(b"")
    bob.say(b"<message to='alice@example.org/phone' type='chat' id='r1'><body>received</body></message>")
    [copy] = laptop.say(b"")
    forwarded = copy.find("{urn:xmpp:carbons:2}received/{urn:xmpp:forward:0}forwarded/{jabber:client}message")
    assert (forwarded.get("from"), forwarded.findtext("{jabber:client}body")) == ("bob@example.org/desk", "received")
    phone.say(b"<message to='bob@example.org/desk' type='chat'><body>secret</body>"
              b"<private xmlns='urn:xmpp:carbons:2'/></message>")
    assert laptop.say(b"") == []
    laptop.say(b"<iq type='set' id='d'><disable xmlns='urn:xmpp:carbons:2'/></iq>")
    phone.say(b"<message to='bob@example.org/desk' type='chat'><body>again</body></message>")
    assert laptop.say(b"") == []


# ---- timers and the end of a stream -------------------------------------------------------------

def test_unbound_session_is_closed_at_the_negotiation_deadline(svc):
    peer = tls_peer(svc)
    peer.session.idle()
    assert stream_error(peer.say(b"")) == "connection-timeout" and peer.session.closed


def test_silent_bound_session_is_pinged_then_closed(svc):
    peer = login(svc)
    assert peer.session.idle_timeout() == svc.settings["ping_interval"]
    peer.session.idle()
    [ping] = peer.say(b"")
    assert ping.find("{urn:xmpp:ping}ping") is not None and ping.get("to") == "alice@example.org/phone"
    assert peer.session.idle_timeout() == svc.settings["ping_timeout"]
    peer.say(b"<iq type='result' id='%s'/>" % ping.get("id").encode())  # any traffic: alive
    assert peer.session.idle_timeout() == svc.settings["ping_interval"]
    peer.session.idle()
    peer.session.idle()
    assert stream_error(peer.say(b"")) == "connection-timeout"
    assert svc.core.presence.endpoint(peer.session.address) is None


def test_clean_close_is_answered_and_logs_out(svc):
    peer = login(svc)
    assert peer.say(b"</stream:stream>") == [StreamClose()]
    assert peer.link.closed and svc.session(peer.session.address) is None
    assert svc.core.presence.endpoint(peer.session.address) is None


def test_shutdown_ends_every_session_with_system_shutdown(svc):
    bound, negotiating = login(svc), tls_peer(svc)
    svc.shutdown()
    assert stream_error(bound.say(b"")) == "system-shutdown"
    assert stream_error(negotiating.say(b"")) == "system-shutdown"


# ---- real logins: slixmpp over STARTTLS / Direct TLS ---------------------------------------------

@pytest.fixture
def server(xmpp_server):
    return xmpp_server({"alice": "wonderland", "bob": "builder"}, tls_listen=True)


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"])
def test_login_over_starttls_with_each_mechanism(server, xmpp_client, mechanism):
    alice = xmpp_client(server, "alice", mechanism=mechanism, resource="laptop")
    assert alice.jid == "alice@example.org/laptop"
    assert alice.xmpp.plugin["feature_mechanisms"].mech.name == mechanism
    assert alice.call(lambda: alice.xmpp.plugin["xep_0199"].ping(server.domain)) is not None


def test_login_over_direct_tls(server, xmpp_client):
    assert xmpp_client(server, "bob", direct_tls=True).jid == "bob@example.org/test"


def test_wrong_password_fails_and_others_still_log_in(server, xmpp_client):
    with pytest.raises(ConnectionError):
        xmpp_client(server, "alice", password="wrong", timeout=5)
    assert xmpp_client(server, "alice").jid == "alice@example.org/test"
