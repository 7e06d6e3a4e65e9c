"""Transcripts for the XML stream core (RFC 6120 §4, §11): bytes in, events or a stream error out."""
import xml.etree.ElementTree as ET

import pytest

from convergence.plugins.xmpp.stream import (
    MAX_DEPTH, STREAM_CLOSE, Stanza, StreamClose, StreamError, StreamOpen, StreamParser, serialize,
    stream_error, stream_header,
)

DECLARATION = b"<?xml version='1.0'?>"
HEADER = (b"<stream:stream to='example.org' from='alice@example.org' version='1.0' xml:lang='en'"
          b" xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>")
HEADER_ATTRS = {"to": "example.org", "from": "alice@example.org", "version": "1.0", "xml:lang": "en",
                "xmlns": "jabber:client", "xmlns:stream": "http://etherx.jabber.org/streams"}
OPEN = DECLARATION + HEADER
ROSTER_GET = (b"<iq type='get' id='r1'><query xmlns='jabber:iq:roster'>"
              b"<item jid='bob@example.org'/></query></iq>")


def opened(**kwargs) -> StreamParser:
    parser = StreamParser(**kwargs)
    assert parser.feed(OPEN) == [StreamOpen(HEADER_ATTRS)]
    return parser


def feed_in_pieces(parser: StreamParser, data: bytes, size: int) -> list:
    return [event for i in range(0, len(data), size) for event in parser.feed(data[i:i + size])]


def parse_stanza(data: bytes) -> ET.Element:
    [event] = opened().feed(data)
    return event.element


def same(a: ET.Element, b: ET.Element) -> bool:
    def shape(e):
        return e.tag, e.attrib, e.text or "", e.tail or "", len(e)
    return shape(a) == shape(b) and all(same(x, y) for x, y in zip(a, b))


# ---- reading -------------------------------------------------------------------------------------

@pytest.mark.parametrize("prolog", [DECLARATION, b"", b"\xef\xbb\xbf" + DECLARATION + b"\n"],
                         ids=["declaration", "none", "BOM and newline"])
def test_header_opens_the_stream(prolog):
    assert StreamParser().feed(prolog + HEADER) == [StreamOpen(HEADER_ATTRS)]


def test_header_is_reported_once_complete():
    parser = StreamParser()
    assert parser.feed(OPEN[:-1]) == []
    assert parser.feed(b">") == [StreamOpen(HEADER_ATTRS)]


def test_stanzas_arrive_on_the_feed_that_completes_them():
    parser = opened()
    events = parser.feed(b"<presence/><message to='bob@example.org'><body>hi</body></message><iq type='get'")
    assert [e.element.tag for e in events] == ["{jabber:client}presence", "{jabber:client}message"]
    message = events[1].element
    assert message.get("to") == "bob@example.org" and message.findtext("{jabber:client}body") == "hi"
    assert parser.feed(b" id='1'/>")[0].element.attrib == {"type": "get", "id": "1"}


def test_byte_by_byte_with_multibyte_utf8_split_across_feeds():
    parser = StreamParser()
    body = "héllo ☃ 😀"
    data = OPEN + f"<message><body>{body}</body></message>".encode()
    events = [(i, event) for i in range(len(data)) for event in parser.feed(data[i:i + 1])]
    assert [(i, type(e)) for i, e in events] == [(len(OPEN) - 1, StreamOpen), (len(data) - 1, Stanza)]
    assert events[1][1].element.findtext("{jabber:client}body") == body


def test_whitespace_keepalives_produce_no_events_and_never_add_up():
    parser = opened(max_stanza_size=64)
    for _ in range(500):
        assert parser.feed(b" ") == []
    assert parser.feed(b"\n\r\n\t" * 100) == []
    [event] = parser.feed(b"<presence/>  \n")
    assert event.element.tail is None


def test_close():
    parser = opened()
    assert [type(e) for e in parser.feed(b"<presence/>" + STREAM_CLOSE)] == [Stanza, StreamClose]
    with pytest.raises(StreamError) as raised:
        parser.feed(b"<message/>")
    assert raised.value.condition == "not-well-formed"


def test_nested_namespaces_and_xml_lang():
    iq = parse_stanza(ROSTER_GET.replace(b"<iq ", b"<iq xml:lang='fr' "))
    assert iq.tag == "{jabber:client}iq"
    assert iq.attrib == {"{http://www.w3.org/XML/1998/namespace}lang": "fr", "type": "get", "id": "r1"}
    query = iq.find("{jabber:iq:roster}query")
    assert query.find("{jabber:iq:roster}item").get("jid") == "bob@example.org"


def test_only_the_header_namespace_declarations_are_kept():
    parser = opened()
    for i in range(100):
        parser.feed(f"<message xmlns:p{i}='urn:example:{i}'/>".encode())
    assert parser._namespaces.keys() == {"xmlns", "xmlns:stream"}


def test_predefined_entities_and_character_references_are_allowed():
    body = parse_stanza(b"<message><body>&lt;&amp;&gt;&quot;&apos;&#169;&#x1F600;</body></message>")[0]
    assert body.text == "<&>\"'©😀"


# Each case: all a peer sends, and the RFC 6120 §4.9.3 condition it earns.
BAD_INPUT = {
    "billion laughs": (DECLARATION + b"<!DOCTYPE lolz [<!ENTITY lol 'lol'><!ENTITY lol2 '&lol;&lol;&lol;'>]>"
                       + HEADER + b"<message><body>&lol2;</body></message>", "restricted-xml"),
    "internal entity": (b"<!DOCTYPE stream:stream [<!ENTITY x 'y'>]>" + HEADER, "restricted-xml"),
    "external entity": (b"<!DOCTYPE stream:stream SYSTEM 'file:///etc/passwd'>" + HEADER, "restricted-xml"),
    "undefined entity": (OPEN + b"<message><body>&lol;</body></message>", "not-well-formed"),
    "comment in stanza": (OPEN + b"<message><!-- hi --></message>", "restricted-xml"),
    "comment between stanzas": (OPEN + b"<!-- hi -->", "restricted-xml"),
    "processing instruction": (OPEN + b"<message><?php evil() ?></message>", "restricted-xml"),
    "xml-stylesheet": (DECLARATION + b"<?xml-stylesheet href='x.xsl' type='text/xsl'?>" + HEADER,
                       "restricted-xml"),
    "second XML declaration": (OPEN + DECLARATION, "not-well-formed"),
    "mismatched tag": (OPEN + b"<message><body></message>", "not-well-formed"),
    "duplicate attribute": (OPEN + b"<message to='a' to='b'/>", "not-well-formed"),
    "invalid UTF-8": (OPEN + b"<message><body>\xff</body></message>", "not-well-formed"),
    "truncated UTF-8": (OPEN + b"<message><body>\xe2\x98</body></message>", "not-well-formed"),
    "NUL character": (OPEN + b"<message><body>\x00</body></message>", "not-well-formed"),
    "NUL reference": (OPEN + b"<message><body>&#0;</body></message>", "not-well-formed"),
    "text between stanzas": (OPEN + b"<presence/>hello", "bad-format"),
    "wrong stream namespace": (OPEN.replace(b"http://etherx.jabber.org/streams", b"urn:wrong"),
                               "invalid-namespace"),
    "stream without namespace": (b"<stream xmlns='jabber:client'>", "invalid-namespace"),
    "unbound stream prefix": (b"<stream:stream xmlns='jabber:client' to='example.org' version='1.0'>",
                              "bad-namespace-prefix"),
    "latin-1": (b"<?xml version='1.0' encoding='ISO-8859-1'?>" + HEADER, "unsupported-encoding"),
    "deep nesting": (OPEN + b"<message>" + b"<a>" * MAX_DEPTH, "policy-violation"),
}


@pytest.mark.parametrize("data, condition", BAD_INPUT.values(), ids=BAD_INPUT.keys())
def test_bad_input_is_a_stream_error(data, condition):
    parser = StreamParser()
    with pytest.raises(StreamError) as raised:
        parser.feed(data)
    assert raised.value.condition == condition
    with pytest.raises(StreamError) as again:  # unrecoverable (§4.9.1.1), even for good input
        parser.feed(b"<presence/>")
    assert (again.value.condition, again.value.events) == (raised.value.condition, [])


def test_nesting_up_to_the_limit_is_fine():
    levels = MAX_DEPTH - 1
    element = parse_stanza(b"<message>" + b"<a>" * levels + b"</a>" * levels + b"</message>")
    assert len(list(element.iter())) == MAX_DEPTH


def test_oversized_stanza_fails_before_it_has_all_arrived():
    parser = opened(max_stanza_size=1000)
    stanza = b"<message><body>" + b"x" * 5000 + b"</body></message>"
    fed = 0
    with pytest.raises(StreamError) as raised:
        for i in range(0, len(stanza), 100):
            parser.feed(stanza[i:i + 100])
            fed += 100
    assert raised.value.condition == "policy-violation"
    assert fed == 1000  # the first piece that took it over the limit failed


def test_oversized_start_tag_fails_while_still_partial():
    parser = opened(max_stanza_size=1000)
    parser.feed(b"<presence/>" * 500)  # earlier stanzas do not count
    with pytest.raises(StreamError) as raised:
        feed_in_pieces(parser, b"<message to='" + b"x" * 5000, 100)
    assert raised.value.condition == "policy-violation"


def test_oversized_stanza_in_one_feed():
    parser = opened(max_stanza_size=1000)
    with pytest.raises(StreamError) as raised:
        parser.feed(b"<message><body>" + b"x" * 1000 + b"</body></message>")
    assert raised.value.condition == "policy-violation"


@pytest.mark.parametrize("piece", [1, 7, 100, 4096])
def test_stanzas_under_the_limit_pass_in_any_pieces(piece):
    stanza = b"<message><body>" + b"x" * 900 + b"</body></message> "
    assert len(feed_in_pieces(opened(max_stanza_size=1000), stanza * 20, piece)) == 20


def test_reset_expects_a_new_header():
    parser = opened()
    starttls = parser.feed(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")[0].element
    assert starttls.tag == "{urn:ietf:params:xml:ns:xmpp-tls}starttls"
    parser.reset()  # TLS is up (RFC 6120 §5.4.3.3): the client opens a new stream
    events = parser.feed(OPEN + b"<presence/>")
    assert events[0] == StreamOpen(HEADER_ATTRS) and events[1].element.tag == "{jabber:client}presence"


# ---- writing -------------------------------------------------------------------------------------

def test_stanza_is_written_in_the_default_namespace():
    message = ET.Element("{jabber:client}message", {"to": "bob@example.org", "type": "chat"})
    ET.SubElement(message, "{jabber:client}body").text = "hi"
    ET.SubElement(message, "{http://jabber.org/protocol/chatstates}active")
    assert serialize(message) == (b"<message to='bob@example.org' type='chat'><body>hi</body>"
                                  b"<active xmlns='http://jabber.org/protocol/chatstates'/></message>")


def test_namespaces_are_declared_once_per_change():
    assert serialize(parse_stanza(ROSTER_GET)) == ROSTER_GET


def test_stream_namespace_xml_lang_no_namespace_and_server_streams():
    features = ET.Element("{http://etherx.jabber.org/streams}features")
    ET.SubElement(features, "{urn:ietf:params:xml:ns:xmpp-bind}bind")
    assert serialize(features) == (b"<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>"
                                   b"</stream:features>")
    message = ET.Element("{jabber:client}message", {"{http://www.w3.org/XML/1998/namespace}lang": "de"})
    ET.SubElement(message, "plain")
    assert serialize(message) == b"<message xml:lang='de'><plain xmlns=''/></message>"
    assert serialize(ET.Element("{jabber:server}message"), ns="jabber:server") == b"<message/>"


def test_escaping():
    message = ET.Element("{jabber:client}message", {"id": "a'b\"c<d>&e\n\tf"})
    ET.SubElement(message, "{jabber:client}body").text = "1 < 2 && ]]> \r\n ok"
    written = serialize(message)
    assert written == (b"<message id='a&apos;b&quot;c&lt;d&gt;&amp;e&#10;&#9;f'>"
                       b"<body>1 &lt; 2 &amp;&amp; ]]&gt; &#13;\n ok</body></message>")
    assert same(parse_stanza(written), message)


@pytest.mark.parametrize("text", ["bell \x07", "nul \x00", "lone surrogate \ud800", "\ufffe"])
def test_characters_xml_cannot_carry_are_refused(text):
    message = ET.Element("{jabber:client}message", {"id": text})
    with pytest.raises(ValueError):
        serialize(message)
    del message.attrib["id"]
    message.text = text
    with pytest.raises(ValueError):
        serialize(message)


ROUND_TRIPS = {
    "roster": ROSTER_GET,
    "xhtml-im": b"<message type='chat' to='bob@example.org' xml:lang='en'>"
                b"<body>caf\xc3\xa9 &amp; \xe2\x98\x83</body>"
                b"<html xmlns='http://jabber.org/protocol/xhtml-im'>"
                b"<body xmlns='http://www.w3.org/1999/xhtml'><p>a <b>bold</b> move</p></body>"
                b"</html></message>",
    "caps": b"<presence><show>away</show>"
            b"<c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='n' ver='v'/></presence>",
    "prefixed element": b"<iq type='set' id='2'><x:query xmlns:x='jabber:iq:register'>"
                        b"<x:username>a</x:username></x:query></iq>",
    "prefixed attributes": b"<message xmlns:p='urn:example:p' p:flag='1'><p:thing p:other='2'/></message>",
    "sasl": b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-1'>biwsbj1hbGljZQ==</auth>",
}


@pytest.mark.parametrize("data", ROUND_TRIPS.values(), ids=ROUND_TRIPS.keys())
def test_round_trip(data):
    element = parse_stanza(data)
    written = serialize(element)
    assert b"ns0:" not in written and b"<x:" not in written
    assert same(parse_stanza(written), element)


def test_stream_header_round_trip():
    written = stream_header("example.org", "alice@example.org", "s1&2")
    assert written == (b"<?xml version='1.0'?><stream:stream from='example.org' to='alice@example.org'"
                       b" id='s1&amp;2' version='1.0' xml:lang='en' xmlns='jabber:client'"
                       b" xmlns:stream='http://etherx.jabber.org/streams'>")
    assert StreamParser().feed(written) == [StreamOpen({
        "from": "example.org", "to": "alice@example.org", "id": "s1&2", "version": "1.0", "xml:lang": "en",
        "xmlns": "jabber:client", "xmlns:stream": "http://etherx.jabber.org/streams"})]
    assert b" to=" not in stream_header("example.org", None, "s2")


def test_stream_error_closes_the_stream():
    written = stream_error("policy-violation", "too <big>")
    assert written == (b"<stream:error><policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"
                       b"<text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>too &lt;big&gt;</text>"
                       b"</stream:error></stream:stream>")
    events = StreamParser().feed(stream_header("example.org", None, "s1") + written)
    assert [type(e) for e in events] == [StreamOpen, Stanza, StreamClose]
    error = events[1].element
    assert error.tag == "{http://etherx.jabber.org/streams}error"
    assert [child.tag for child in error] == ["{urn:ietf:params:xml:ns:xmpp-streams}policy-violation",
                                              "{urn:ietf:params:xml:ns:xmpp-streams}text"]
    assert stream_error("not-well-formed") == (b"<stream:error><not-well-formed"
                                               b" xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"
                                               b"</stream:error></stream:stream>")


def test_unknown_stream_error_condition_is_refused():
    with pytest.raises(ValueError):
        stream_error("oops'/><evil/>")


def test_stanzas_before_an_error_in_the_same_feed_are_kept():
    parser = StreamParser()
    parser.feed(HEADER)
    with pytest.raises(StreamError) as raised:
        parser.feed(b"<message to='a@b'><body>kept</body></message><!-- no -->")
    assert raised.value.condition == "restricted-xml"
    (kept,) = raised.value.events
    assert kept.element.findtext("{jabber:client}body") == "kept"
