"""The sans-IO server-to-server streams (plugins/xmpp/s2s.py), dialback keys (dialback.py) and
peer lookup (peers.py), driven as transcripts on recording links: RFC 6120 §4-§5, §8, §13.7,
XEP-0220, XEP-0185, XEP-0178, RFC 2782; and a seeded, bounded fuzz of the inbound state machine."""
import random
import xml.etree.ElementTree as ET

import pytest

from convergence.plugins.xmpp import dialback, peers, s2s
from convergence.plugins.xmpp.stream import Stanza, StreamClose, StreamOpen, StreamParser

from .test_c2s import Link, names, stream_error
from .test_sans_io_cores import closure

OURS, THEIRS = "a.example", "b.example"
SECRET = b"x" * 32
DB = "{jabber:server:dialback}"
SETTINGS = {"max_stanza_size": 65536, "negotiation_timeout": 30.0, "s2s_require_encryption": True,
            "s2s_secure_auth": False, "s2s_idle_timeout": 600.0, "s2s_keepalive": 60.0}


class TlsLink(Link):
    def start_tls(self, context, server_side=True, server_hostname=None):
        self.tls = (server_side, server_hostname)

    def close_after_flush(self, reason, timeout=2.0):
        self.closed = reason

    close_reason = None


class Federation:
    """What a stream asks of its federation, recorded."""

    def __init__(self, **settings):
        self.domain = OURS
        self.settings = {**SETTINGS, **settings}
        self.secret = SECRET
        self.server_tls = self.client_tls = object()
        self.clock = 1000.0
        self.calls = []
        self.certificate_valid = False

    def now(self):
        return self.clock

    def certificate_ok(self, link, domain):
        return self.certificate_valid

    def __getattr__(self, name):  # verify_dialback, inbound, outbound_ready, ...: recorded
        return lambda *args: self.calls.append((name, *args))


class Peer:
    """The other server, scripted: ``say`` returns what our stream wrote back."""

    def __init__(self, stream):
        self.stream = stream
        self.reader = StreamParser(10 ** 7)

    def say(self, data: bytes = b"") -> list:
        if data:
            self.stream.receive(data)
        out, self.stream.link.out = bytes(self.stream.link.out), bytearray()
        return [e.element if isinstance(e, Stanza) else e for e in self.reader.feed(out)]


def header(to=OURS, from_=THEIRS, ns="jabber:server", version="1.0") -> bytes:
    attrs = "".join(f" {k}='{v}'" for k, v in (("to", to), ("from", from_), ("version", version)) if v)
    return (f"<stream:stream xmlns='{ns}' xmlns:stream='http://etherx.jabber.org/streams' "
            f"xmlns:db='jabber:server:dialback'{attrs}>").encode()


def inbound(encrypted=True, **settings):
    federation = Federation(**settings)
    stream = s2s.InboundStream(federation, TlsLink(), ("192.0.2.9", 5000), encrypted=encrypted)
    return federation, stream, Peer(stream)


def authenticated(**settings):
    federation, stream, peer = inbound(**settings)
    peer.say(header())
    peer.say(f"<db:result from='{THEIRS}' to='{OURS}'>k</db:result>".encode())
    stream.dialback_result(THEIRS, True)
    [result] = peer.say()
    assert (result.tag, result.get("type")) == (DB + "result", "valid")
    return federation, stream, peer


# ---- dialback keys (XEP-0185 §3 and XEP-0220 §2.1.1 examples) ----

def test_dialback_keys_match_the_xep_examples():
    secret = b"s3cr3tf0rd14lb4ck"
    assert dialback.key(secret, "xmpp.example.com", "example.org", "D60000229F") == \
        "37c69b1cf07a3f67c04a5ef5902fa5114f2c76fe4a2686482ba5b89323075643"
    assert dialback.key(secret, "montague.example", "capulet.example", "D60000229F") == \
        "b4835385f37fe2895af6c196b59097b16862406db80559900d96bf6fa7d23df3"
    good = dialback.key(secret, "r.example", "o.example", "id1")
    assert dialback.valid(secret, "r.example", "o.example", "id1", f"  {good}\n")
    for wrong in ("", good[:-1] + "0", good + "0" * 300, "ünïcode"):
        assert not dialback.valid(secret, "r.example", "o.example", "id1", wrong)
    assert not dialback.valid(secret, "r.example", "o.example", "", good)


def test_protocol_modules_do_no_io():
    for module in ("s2s", "dialback", "peers"):
        assert closure(module) == {}, module


# ---- inbound: header and features ----

@pytest.mark.parametrize("head, condition", [
    (header(ns="jabber:client"), "invalid-namespace"),
    (header(version="0.9"), "unsupported-version"),
    (header(to="c.example"), "host-unknown"),
    (header(to=None), "host-unknown"),
    (header(from_="not a domain!"), "invalid-from"),
    (header(from_="user@b.example"), "invalid-from"),
])
def test_bad_headers(head, condition):
    _, stream, peer = inbound()
    events = peer.say(head)
    assert isinstance(events[0], StreamOpen) and events[0].attrs["xmlns"] == "jabber:server"
    assert stream_error(events) == condition and stream.closed


def test_starttls_is_required_first():
    federation, stream, peer = inbound(encrypted=False)
    opened, features = peer.say(header())
    assert opened.attrs["from"] == OURS and opened.attrs["xmlns:db"] == "jabber:server:dialback"
    assert [c.tag for c in features] == ["{urn:ietf:params:xml:ns:xmpp-tls}starttls"]
    assert features[0].find("{urn:ietf:params:xml:ns:xmpp-tls}required") is not None
    assert stream_error(peer.say(f"<db:result from='{THEIRS}' to='{OURS}'>k</db:result>".encode())) \
        == "policy-violation"
    assert federation.calls == [("stream_ended", stream, "policy-violation: STARTTLS is required "
                                                         "(s2s_require_encryption)")]


def test_starttls_then_dialback_feature():
    _, stream, peer = inbound(encrypted=False)
    peer.say(header())
    assert names(peer.say(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")) == [
        "{urn:ietf:params:xml:ns:xmpp-tls}proceed"]
    assert stream.link.tls == (True, None) and stream.encrypted
    peer.reader.reset()
    _, features = peer.say(header())
    assert [c.tag for c in features] == ["{urn:xmpp:features:dialback}dialback"]


def test_plain_streams_when_encryption_is_not_required():
    _, _, peer = inbound(encrypted=False, s2s_require_encryption=False)
    _, features = peer.say(header())
    assert [c.tag for c in features] == ["{urn:ietf:params:xml:ns:xmpp-tls}starttls",
                                          "{urn:xmpp:features:dialback}dialback"]


def test_inbound_sasl_external_for_a_peer_whose_certificate_validates():
    """XEP-0178 §3: offered only when the certificate validates for the header's 'from'; the
    authzid must be that domain (or '='); success authenticates it and a new stream follows."""
    federation, stream, peer = inbound()
    _, features = peer.say(header())
    assert [c.tag for c in features] == ["{urn:xmpp:features:dialback}dialback"]  # no valid cert
    [failure] = peer.say(b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>=</auth>")
    assert names([failure]) == ["{urn:ietf:params:xml:ns:xmpp-sasl}failure"] and not stream.authenticated
    assert failure[0].tag == "{urn:ietf:params:xml:ns:xmpp-sasl}invalid-mechanism"

    federation, stream, peer = inbound()
    federation.certificate_valid = True
    _, features = peer.say(header())
    assert [m.text for m in features.iter("{urn:ietf:params:xml:ns:xmpp-sasl}mechanism")] == ["EXTERNAL"]
    [failure] = peer.say(b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>"
                         b"Yy5leGFtcGxl</auth>")  # base64("c.example"): not the stream's domain
    assert failure[0].tag == "{urn:ietf:params:xml:ns:xmpp-sasl}not-authorized" and not stream.authenticated
    [success] = peer.say(b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>"
                         b"Yi5leGFtcGxl</auth>")  # base64("b.example")
    assert success.tag == "{urn:ietf:params:xml:ns:xmpp-sasl}success" and stream.authenticated == {THEIRS}
    peer.reader.reset()
    _, features = peer.say(header())  # the new stream: nothing left to negotiate but dialback
    assert [c.tag for c in features] == ["{urn:xmpp:features:dialback}dialback"]
    peer.say(f"<message from='x@{THEIRS}' to='y@{OURS}'><body>hi</body></message>".encode())
    assert federation.calls[-1][0] == "inbound" and not stream.closed


# ---- inbound: dialback and stanzas ----

def test_stanza_before_dialback_is_not_authorized():
    _, stream, peer = inbound()
    peer.say(header())
    events = peer.say(f"<message from='x@{THEIRS}' to='y@{OURS}'><body>hi</body></message>".encode())
    assert stream_error(events) == "not-authorized"


def test_dialback_result_is_checked_with_the_authoritative_server():
    federation, stream, peer = inbound()
    peer.say(header())
    assert peer.say(f"<db:result from='{THEIRS}' to='{OURS}'> key </db:result>".encode()) == []
    assert federation.calls == [("verify_dialback", stream, THEIRS, "key")]
    peer.say(f"<db:result from='{THEIRS}' to='{OURS}'>key</db:result>".encode())  # asked once
    assert len(federation.calls) == 1
    stream.dialback_result(THEIRS, True)
    [result] = peer.say()
    assert result.attrib == {"from": OURS, "to": THEIRS, "type": "valid"}


def test_a_refused_key_ends_the_stream():
    _, stream, peer = inbound()
    peer.say(header())
    peer.say(f"<db:result from='{THEIRS}' to='{OURS}'>bad</db:result>".encode())
    stream.dialback_result(THEIRS, False)
    events = peer.say()
    assert events[0].get("type") == "invalid" and stream_error(events) == "not-authorized"


@pytest.mark.parametrize("result, condition", [
    (f"<db:result from='{THEIRS}' to='c.example'>k</db:result>", "host-unknown"),
    (f"<db:result from='{OURS}' to='{OURS}'>k</db:result>", "invalid-from"),
    (f"<db:result from='c.example' to='{OURS}'>k</db:result>", "invalid-from"),  # not the header's
    ("<db:result to='a.example'>k</db:result>", "invalid-from"),
])
def test_bad_dialback_results(result, condition):
    _, _, peer = inbound()
    peer.say(header())
    assert stream_error(peer.say(result.encode())) == condition


def test_dialback_verify_answers_as_authoritative_server():
    _, _, peer = inbound()
    peer.say(header())
    good = dialback.key(SECRET, THEIRS, OURS, "sid1")
    [answer] = peer.say(f"<db:verify from='{THEIRS}' to='{OURS}' id='sid1'>{good}</db:verify>".encode())
    assert answer.attrib == {"from": OURS, "to": THEIRS, "id": "sid1", "type": "valid"}
    [answer] = peer.say(f"<db:verify from='{THEIRS}' to='{OURS}' id='sid2'>{good}</db:verify>".encode())
    assert answer.get("type") == "invalid"


def test_authenticated_stanzas_go_to_the_federation_in_client_names():
    federation, stream, peer = authenticated()
    peer.say(f"<message from='x@{THEIRS}/r' to='y@{OURS}' type='chat'><body>hi</body></message>".encode())
    [(name, _, element)] = [c for c in federation.calls if c[0] == "inbound"]
    assert element.tag == "{jabber:client}message" and element.findtext("{jabber:client}body") == "hi"


@pytest.mark.parametrize("stanza, condition", [
    (f"<message from='x@c.example' to='y@{OURS}'/>", "invalid-from"),
    (f"<message to='y@{OURS}'/>", "invalid-from"),
    (f"<message from='x@{THEIRS}' to='y@c.example'/>", "host-unknown"),
    (f"<message from='x@{THEIRS}'/>", "host-unknown"),
    (f"<foo xmlns='jabber:server' from='x@{THEIRS}' to='y@{OURS}'/>", "unsupported-stanza-type"),
    (f"<message xmlns='jabber:client' from='x@{THEIRS}' to='y@{OURS}'/>", "unsupported-stanza-type"),
])
def test_stanzas_with_bad_addresses_end_the_stream(stanza, condition):
    federation, stream, peer = authenticated()
    assert stream_error(peer.say(stanza.encode())) == condition
    assert not [c for c in federation.calls if c[0] == "inbound"]


def test_restricted_xml_and_size():
    _, _, peer = inbound()
    assert stream_error(peer.say(b"<?xml version='1.0'?><!DOCTYPE x [<!ENTITY a 'aaaa'>]>")) \
        == "restricted-xml"
    _, _, peer = authenticated()
    assert stream_error(peer.say(b"<?go away?>")) == "restricted-xml"
    _, _, peer = authenticated(max_stanza_size=1000)
    assert stream_error(peer.say(f"<message from='x@{THEIRS}' to='y@{OURS}'><body>".encode()
                                 + b"x" * 2000)) == "policy-violation"


def test_keepalives_and_idle_close():
    federation, stream, peer = authenticated()
    assert stream.idle_timeout() == 60.0
    stream.idle()
    assert stream.link.out == b" " and not stream.closed
    stream.link.out = bytearray()
    federation.clock += 600
    stream.idle()
    assert isinstance(peer.say()[-1], StreamClose) and stream.closed


def test_negotiation_deadline():
    federation, stream, peer = inbound()
    peer.say(header())
    federation.clock += 31
    stream.idle()
    assert stream_error(peer.say()) == "connection-timeout"


# ---- outbound ----

def outbound(**settings):
    federation = Federation(**settings)
    stream = s2s.OutboundStream(federation, TlsLink(), ("127.0.0.1", 5269), THEIRS)
    stream.start()
    return federation, stream, Peer(stream)


def features(*children: str) -> bytes:
    return ("<stream:features>" + "".join(children) + "</stream:features>").encode()


STARTTLS = "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls>"
DIALBACK = "<dialback xmlns='urn:xmpp:features:dialback'/>"
EXTERNAL = ("<mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>EXTERNAL</mechanism>"
            "</mechanisms>")


def their_header(id="sid9") -> bytes:
    return header(to=OURS, from_=THEIRS)[:-1] + f" id='{id}'>".encode()


def test_outbound_starttls_then_dialback():
    federation, stream, peer = outbound()
    [opened] = peer.say()
    assert opened.attrs["to"] == THEIRS and opened.attrs["from"] == OURS
    peer.say(their_header())
    assert names(peer.say(features(STARTTLS, DIALBACK))) == ["{urn:ietf:params:xml:ns:xmpp-tls}starttls"]
    peer.reader.reset()
    assert isinstance(peer.say(b"<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")[0], StreamOpen)
    assert stream.link.tls == (False, THEIRS)  # TLS as the client, then a new stream
    peer.say(their_header("sid10"))
    [result] = peer.say(features(DIALBACK))
    assert result.tag == DB + "result" and result.text == dialback.key(SECRET, THEIRS, OURS, "sid10")
    assert federation.calls == [("outbound_usable", stream)]
    peer.say(f"<db:result from='{THEIRS}' to='{OURS}' type='valid'/>".encode())
    assert federation.calls[-1] == ("outbound_ready", stream) and stream.ready
    stream.send_stanza(ET.Element("{jabber:client}message", to=f"x@{THEIRS}"))
    [message] = peer.say()
    assert message.tag == "{jabber:server}message"


def test_outbound_gives_back_what_its_closed_link_did_not_write():
    """Stanzas the socket took are done; those still queued (or cut short) when the link closed
    go back to the federation in order, with their bounce and their jabber:client names."""
    federation, stream, peer = outbound()
    stream.encrypted = True
    peer.say(their_header())
    peer.say(features(DIALBACK))
    peer.say(f"<db:result from='{THEIRS}' to='{OURS}' type='valid'/>".encode())
    message = lambda n: ET.Element("{jabber:client}message", to=f"x@{THEIRS}", id=str(n))
    assert stream.send_stanza(message(1), "bounce1")
    stream.link.hold()  # the peer stops reading
    assert stream.send_stanza(message(2), "bounce2") and stream.send_stanza(message(3))
    stream.link.written += 10  # part of the second stanza went out: it was cut short
    stream.link.close("write failed: broken pipe")
    refused = message(4)
    assert not stream.send_stanza(refused) and refused.tag == "{jabber:client}message"
    stream.link.close_reason = "write failed: broken pipe"
    stream.connection_lost()
    [ended, (name, _, back)] = federation.calls[-2:]
    assert ended[0] == "stream_ended" and name == "returned"
    assert [(e.tag, e.get("id"), bounce) for e, bounce in back] == [
        ("{jabber:client}message", "2", "bounce2"), ("{jabber:client}message", "3", None)]
    stream.connection_lost()  # once only
    assert federation.calls[-1] == (name, _, back)


def test_outbound_refuses_a_peer_without_starttls():
    _, stream, peer = outbound()
    peer.say(their_header())
    assert stream_error(peer.say(features(DIALBACK))) == "policy-violation" and not stream.ready


def test_outbound_dialback_refused():
    federation, stream, peer = outbound()
    stream.encrypted = True
    peer.say(their_header())
    peer.say(features(DIALBACK))
    peer.say(f"<db:result from='{THEIRS}' to='{OURS}' type='invalid'/>".encode())
    assert stream.closed and "refused our dialback key" in stream.reason


def test_outbound_sasl_external_then_fallback_to_dialback():
    federation, stream, peer = outbound()
    stream.encrypted = True
    peer.say(their_header())
    [auth] = peer.say(features(EXTERNAL, DIALBACK))
    assert auth.get("mechanism") == "EXTERNAL" and auth.text == "YS5leGFtcGxl"  # base64(a.example)
    [result] = peer.say(b"<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><not-authorized/></failure>")
    assert result.tag == DB + "result"


def test_outbound_sasl_external_success():
    federation, stream, peer = outbound()
    stream.encrypted = True
    peer.say(their_header())
    peer.say(features(EXTERNAL))
    peer.reader.reset()
    assert isinstance(peer.say(b"<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>")[0], StreamOpen)
    peer.say(their_header("sid2"))
    peer.say(features())
    assert stream.ready and federation.calls[-1] == ("outbound_ready", stream)


def test_outbound_secure_auth_needs_a_valid_certificate():
    federation, stream, peer = outbound(s2s_secure_auth=True)
    peer.say(their_header())
    peer.say(features(STARTTLS, DIALBACK))
    peer.reader.reset()
    assert stream_error(peer.say(b"<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")) == "policy-violation"


def test_verify_answers_go_to_the_federation():
    federation, stream, peer = outbound()
    stream.encrypted = True
    peer.say(their_header())
    peer.say(f"<db:verify from='{THEIRS}' to='{OURS}' id='s1' type='valid'/>".encode())
    assert federation.calls[-1] == ("verify_answer", stream, THEIRS, "s1", True)


# ---- two machines talking to each other ----

def test_two_state_machines_complete_a_handshake():
    """Our outbound stream against our inbound stream of another domain: dialback's key checked
    by the real XEP-0185 key of the originating side."""
    ours = Federation()
    theirs = Federation()
    theirs.domain = THEIRS
    out = s2s.OutboundStream(ours, TlsLink(), None, THEIRS)
    into = s2s.InboundStream(theirs, TlsLink(), None, encrypted=True)
    out.encrypted = True
    out.start()
    for _ in range(10):
        for source, sink in ((out, into), (into, out)):
            data, source.link.out = bytes(source.link.out), bytearray()
            if data:
                sink.receive(data)
        for call in [c for c in theirs.calls if c[0] == "verify_dialback"]:
            theirs.calls.remove(call)
            _, stream, domain, key = call
            stream.dialback_result(domain, dialback.valid(SECRET, THEIRS, domain, stream.stream_id, key))
    assert out.ready and into.authenticated == {OURS}
    out.send_stanza(ET.Element("{jabber:client}message", {"from": f"x@{OURS}", "to": f"y@{THEIRS}"}))
    into.receive(bytes(out.link.out))
    assert [c[0] for c in theirs.calls if c[0] == "inbound"] == ["inbound"]


# ---- fuzz ----

TRANSCRIPT = (header() + f"<db:result from='{THEIRS}' to='{OURS}'>k</db:result>".encode()
              + f"<db:verify from='{THEIRS}' to='{OURS}' id='s'>k</db:verify>".encode()
              + f"<message from='x@{THEIRS}' to='y@{OURS}' type='chat'><body>hi &amp; "
                "there</body></message>".encode()
              + f"<iq from='x@{THEIRS}' to='{OURS}' type='get' id='1'><ping xmlns='urn:xmpp:ping'/>"
                "</iq></stream:stream>".encode())
SPICE = [b"<", b">", b"'", b"&", b"\x00", b"\xff", b"<!DOCTYPE", b"<?pi?>", b"]]>", b"xmlns:x='y'",
         b"<db:result>", b"</stream:stream>", b"<stream:stream>", b"\xc3", b"=", b"&lt;", b"&#0;"]


def mutate(rng: random.Random, data: bytes) -> bytes:
    data = bytearray(data)
    for _ in range(rng.randrange(1, 6)):
        position = rng.randrange(len(data) + 1)
        choice = rng.random()
        if choice < 0.4:
            data[position:position] = rng.choice(SPICE)
        elif choice < 0.7 and data:
            del data[position:position + rng.randrange(1, 20)]
        else:
            data[position:position + 1] = bytes([rng.randrange(256)])
    return bytes(data)


def test_fuzz_inbound_stream():
    """Seeded and bounded: mutated transcripts in random chunks never raise out of the state
    machine; what it writes is always a well-formed stream; a closed stream writes nothing more."""
    rng = random.Random(13)
    for _ in range(400):
        federation, stream, peer = inbound(encrypted=rng.random() < 0.8, max_stanza_size=512)
        data = mutate(rng, TRANSCRIPT)
        while data:
            cut = rng.randrange(1, 64)
            peer.say(data[:cut])  # our output parses: a stream error or close ends it properly
            data = data[cut:]
            if stream.link.closed:
                assert stream.closed
        for name, *args in list(federation.calls):
            if name == "verify_dialback":
                stream.dialback_result(args[1], rng.random() < 0.5)
        peer.say()
        if stream.closed:
            stream.receive(b"<message/>")
            assert peer.say() == []


# ---- peers (RFC 6120 §3.2, RFC 2782) ----

def test_srv_order_priority_then_weight():
    records = [peers.Srv(20, 0, 5269, "c.example."), peers.Srv(10, 60, 5270, "a.example."),
               peers.Srv(10, 40, 5271, "b.example."), peers.Srv(10, 0, 5272, "z.example.")]
    seen = set()
    for seed in range(50):
        result = peers.order(records, random.Random(seed))
        assert result[-1] == ("c.example", 5269)
        assert {r[0] for r in result[:3]} == {"a.example", "b.example", "z.example"}
        seen.add(result[0][0])
    assert {"a.example", "b.example"} <= seen  # both weighted entries come first sometimes


def test_peer_lookup_overrides_literals_cache_and_fallback():
    asked = []
    now = [0.0]

    def query(name):
        asked.append(name)
        if name.endswith("none.example"):
            raise peers.NoSuchDomain(name)
        if name.endswith("dot.example"):
            return [peers.Srv(0, 0, 0, ".")], 300
        return [peers.Srv(5, 1, 5299, "xmpp.srv.example.")], 100

    found = peers.Peers({"local.example": ("127.0.0.1", 7000)}, query, clock=lambda: now[0])
    assert found.targets("local.example") == [("127.0.0.1", 7000)]
    assert found.targets("127.0.0.3") == [("127.0.0.3", 5269)]
    assert found.targets("[::1]") == [("::1", 5269)]
    assert asked == []
    assert found.targets("srv.example") == [("xmpp.srv.example", 5299)]
    assert found.targets("srv.example") == [("xmpp.srv.example", 5299)]
    assert asked == ["_xmpp-server._tcp.srv.example"]  # cached for the TTL (at least MIN_TTL)
    now[0] += peers.MIN_TTL + 101
    found.targets("srv.example")
    assert len(asked) == 2
    assert found.targets("none.example") == [("none.example", 5269)]  # A/AAAA of the domain
    with pytest.raises(peers.NoSuchDomain):
        found.targets("dot.example")
    assert peers.parse_host("h.example:7") == ("h.example", 7)
    assert peers.parse_host("[::1]:8") == ("::1", 8)
    assert peers.parse_host("h.example") == ("h.example", 5269)
