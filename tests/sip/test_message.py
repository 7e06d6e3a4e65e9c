"""SIP message parsing and serialization: RFC 4475 torture messages, framing, typed values."""
from pathlib import Path
from urllib.parse import unquote

import pytest

from convergence.plugins.sip.message import (
    COMPACT_FORMS, CSeq, Headers, KeepAlive, NameAddr, ParseError, Request, Response, SipUri,
    StreamParser, Via, make_response, parse_datagram)

# CI runs in a fresh clone with a copy of shared/ beside it, so look beside the repository.
TORTURE = Path(__file__).resolve().parents[2].parent / "shared" / "rfc4475"


def torture(name: str) -> bytes:
    if not TORTURE.is_dir():
        pytest.fail(f"RFC 4475 messages not found: expected {TORTURE} (shared/ beside the repo)")
    return (TORTURE / f"{name}.dat").read_bytes()


# RFC 4475 §3.1.1: valid messages, must parse.
VALID = ["wsinv", "intmeth", "esc01", "escnull", "esc02", "lwsdisp", "longreq", "dblreq",
         "semiuri", "transports", "mpart01", "unreason", "noreason"]

# Well-formed messages whose answer belongs to a later layer (the parser must accept them).
LATER_LAYER = {
    "baddate": "§3.1.2.12: rejecting is allowed only if Date matters; nobody here reads Date",
    "badbranch": "§3.2.1: transaction layer matches it RFC 2543-style (no magic cookie)",
    "unksm2": "§3.3.4: unknown schemes in To/From/Contact must be accepted",
    "bext01": "§3.3.5: UA/proxy answers 420 with Unsupported",
    "invut": "§3.3.6: UA answers 415 with Accept",
    "regaut01": "§3.3.7: registrar answers 401 with a scheme it supports",
    "bcast": "§3.3.10: transport drops a response whose top Via is not ours",
    "zeromf": "§3.3.11: proxy answers 483 (or the element answers OPTIONS itself)",
    "cparam01": "§3.3.12: registrar binds sip:+19725552222@gw1.example.net",
    "cparam02": "§3.3.13: registrar binds the URI with ;unknownparam",
    "regescrt": "§3.3.14: registrar stores the Contact with its escaped Route as-is",
    "sdp01": "§3.3.15: UA answers 406",
    "inv2543": "§3.4.1: RFC 2543 syntax must be accepted",
}

# RFC 4475 §3.1.2 (invalid) and the §3.3 cases the parser itself answers:
# (name, status, words the reason must contain, silently dropped?)
REJECTED = [
    ("badinv01", 400, "Bad Via header field", False),  # §3.1.2.1
    ("clerr", 400, "Content-Length larger", False),  # §3.1.2.2
    ("ncl", 400, "Negative Content-Length", False),  # §3.1.2.3
    ("scalar02", 400, "CSeq", False),  # §3.1.2.4
    ("scalarlg", 400, "CSeq", True),  # §3.1.2.5: a response, dropped
    ("quotbal", 400, "unterminated quoted string", False),  # §3.1.2.6
    ("ltgtruri", 400, "Malformed Request-URI", False),  # §3.1.2.7
    ("lwsruri", 400, "Whitespace in Request-URI", False),  # §3.1.2.8
    ("lwsstart", 400, "Multiple spaces in Request-Line", False),  # §3.1.2.9
    ("trws", 400, "Trailing whitespace in Request-Line", False),  # §3.1.2.10
    ("escruri", 400, "Headers are not allowed in the Request-URI", False),  # §3.1.2.11
    ("regbadct", 400, "must be enclosed in <>", False),  # §3.1.2.13
    ("badaspec", 400, "spaces within addr-spec", False),  # §3.1.2.14
    ("baddn", 400, "display name", False),  # §3.1.2.15
    ("badvers", 505, "Version Not Supported", False),  # §3.1.2.16
    ("mismatch01", 400, "CSeq method does not match", False),  # §3.1.2.17
    ("mismatch02", 501, "CSeq method does not match", False),  # §3.1.2.18: 501 preferred
    ("bigcode", 400, "Status code out of range", True),  # §3.1.2.19: a response, dropped
    ("insuf", 400, "Missing To, From, Call-ID header fields", False),  # §3.3.1
    ("unkscm", 416, "Unsupported URI Scheme", False),  # §3.3.2
    ("novelsc", 416, "Unsupported URI Scheme", False),  # §3.3.3
    ("multi01", 400, "Multiple To, From, CSeq, Call-ID, Max-Forwards values", False),  # §3.3.8
    ("mcl01", 400, "Multiple Content-Length values", False),  # §3.3.9
]

PARSEABLE = VALID + list(LATER_LAYER)

REGISTER = (b"REGISTER sip:example.org SIP/2.0\r\n"
            b"Via: SIP/2.0/UDP 192.0.2.7:5062;branch=z9hG4bK1;rport, SIP/2.0/TCP p.example.org\r\n"
            b"Max-Forwards: 70\r\n"
            b"From: Alice <sip:alice@example.org>;tag=a1\r\n"
            b"To: <sip:alice@example.org>\r\n"
            b"Call-ID: reg-1@192.0.2.7\r\n"
            b"CSeq: 2 REGISTER\r\n"
            b"Timestamp: 54\r\n"
            b"Contact: <sip:alice@192.0.2.7:5062>;expires=300;q=0.7,"
            b' "A, B" <sip:a@[2001:db8::1]>\r\n'
            b"Content-Length: 0\r\n\r\n")


def parse(name):
    return parse_datagram(torture(name))


def test_every_torture_message_has_an_expectation():
    torture("wsinv")  # fails with a clear message when shared/ is missing
    expected = set(PARSEABLE) | {name for name, *_ in REJECTED}
    assert {path.stem for path in TORTURE.glob("*.dat")} == expected
    assert len(expected) == 49


# ---- RFC 4475 ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", PARSEABLE)
def test_well_formed_messages_parse_and_round_trip(name):
    message = parse(name)
    assert isinstance(message, (Request, Response))
    again = parse_datagram(bytes(message))
    if name == "inv2543":  # no Content-Length on the wire: serializing adds it (§20.14)
        assert again.headers.get("Content-Length") == str(len(message.body))
        again.headers.remove("Content-Length")
    assert again == message
    assert bytes(parse_datagram(bytes(again))) == bytes(again)


@pytest.mark.parametrize("name, status, words, drop", REJECTED)
def test_invalid_messages_are_rejected(name, status, words, drop):
    with pytest.raises(ParseError) as caught:
        parse(name)
    err = caught.value
    assert (err.status, err.drop) == (status, drop)
    assert words in err.reason and str(err).startswith(f"{status} ")
    if drop:
        with pytest.raises(ValueError):
            err.response()
    else:  # answered from what was read (§8.2.6.2), whatever broke the request
        response = err.response()
        assert (response.status, response.reason) == (status, err.reason)
        head = torture(name).split(b"\r\n\r\n")[0].decode()
        assert response.headers.get("Via") in head and response.headers.get("CSeq") in head
        assert bytes(response).startswith(f"SIP/2.0 {status} {err.reason}\r\n".encode())


def test_short_tortuous_invite():  # §3.1.1.1
    m = parse("wsinv")
    assert (m.method, m.uri) == ("INVITE", "sip:vivekg@chair-dnrc.example.com;unknownparam")
    assert (m.to.uri, m.to.tag) == ("sip:vivekg@chair-dnrc.example.com", "1918181833n")
    assert (m.from_.display_name, m.from_.uri, m.from_.tag) == (
        'J Rosenberg \\"', "sip:jdrosen@example.com", "98asjd8")
    assert m.max_forwards == 68 and m.cseq == CSeq(9, "INVITE")
    assert m.call_id == "wsinv.ndaksdj@192.0.2.1"
    assert [(v.transport, v.host, v.branch) for v in m.via] == [
        ("UDP", "192.0.2.2", "390skdjuw"), ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
        ("UDP", "192.168.255.111", "z9hG4bK30239")]
    assert m.headers.get("Subject") == ""
    assert m.headers.get("newfangledheader") == "newfangled value continued newfangled value"
    assert m.headers.get("UnknownHeaderWithUnusualValue") == ";;,,;;,;"  # not a list: kept whole
    assert m.headers.get("Route") == (
        "<sip:services.example.com;lr;unknownwith=value;unknown-no-value>")
    [contact] = m.contacts
    assert contact.display_name == 'Quoted string ""' and contact.q == 0.33
    assert contact.params == {"newparam": "newvalue", "secondparam": None, "q": "0.33"}
    assert m.content_type == "application/sdp" and len(m.body) == 150
    assert m.body.startswith(b"v=0\r\n") and m.body.endswith(b"a=rtpmap:31 LPC\r\n")


def test_wide_range_of_valid_characters():  # §3.1.1.2
    m = parse("intmeth")
    assert m.method == m.cseq.method == "!interesting-Method0123456789_*+`.%indeed'~"
    uri = SipUri.parse(m.uri)
    assert uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert (uri.host, uri.params, uri.headers) == ("example.com", {}, {})
    assert m.to.display_name == "BEL:\x07 NUL:\x00 DEL:\x7f"
    assert m.from_.display_name == "token1~` token2'+_ token3*%!.-"
    assert m.from_.params["fromparam''~+*_!.-%"] == '"работающий"'
    assert m.from_.tag == "_token~1'+`*%!-."
    assert m.call_id == "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
    assert m.headers.get("extensionHeader-!.%*+_`'~") == "\ufeff大停電"
    assert m.max_forwards == 255 and m.via[0].branch == "z9hG4bK-.!%66*_+`'~"


def test_escapes_are_kept_as_written():  # §3.1.1.3–§3.1.1.5
    m = parse("esc01")
    assert SipUri.parse(m.uri).user == "sips%3Auser%40example.com"
    assert unquote(SipUri.parse(m.uri).user) == "sips:user@example.com"
    assert unquote(SipUri.parse(m.to.uri).user) == "user"
    assert unquote(SipUri.parse(m.from_.uri).user) == "I have spaces"
    contact = SipUri.parse(m.contacts[0].uri)
    assert unquote(contact.user) == "caller" and "%6c%72" in contact.params
    assert unquote(contact.params["n%61me"]) == "value%41"  # unescaped once, never recursively
    assert (m.call_id, m.content_type) == ("esc01.239409asdfakjkn23onasd0-3234", "application/sdp")

    m = parse("escnull")
    assert m.to.uri == "sip:null-%00-null@example.com"
    assert [unquote(SipUri.parse(c.uri).user) for c in m.contacts] == ["\x00", "\x00\x00"]

    m = parse("esc02")
    assert m.method == m.cseq.method == "RE%47IST%45R"
    assert m.to.display_name == m.from_.display_name == "%Z%45"
    assert m.via[0].branch == "z9hG4bK209%fzsnel234"
    assert [c.uri for c in m.contacts] == ["sip:alias1@host1.example.com",
                                           "sip:alias3@host3.example.com"]
    assert m.headers.get("C%6Fntact") == "<sip:alias2@host2.example.com>"  # another field


def test_unusual_spacing_and_long_values():  # §3.1.1.6, §3.1.1.7
    m = parse("lwsdisp")
    assert (m.from_.display_name, m.from_.uri) == ("caller", "sip:caller@example.com")

    m = parse("longreq")
    assert len(m.via) == 34 and m.via[0].host == "sip33.example.com"
    assert m.via[-1].received == "192.0.2.5" and len(m.via[-1].branch) > 100
    assert m.to.display_name.startswith("I have a user name of extremeextreme")
    to = SipUri.parse(m.to.uri)
    assert to.port == 6000 and "unknownparam1" in to.params
    assert m.from_.tag.startswith("1298298298") and "unknownvaluelessparamnameparamnameparamname" \
        "paramnameparamnameparamnameparamnameparamnameparamnameparamname" in m.from_.params
    assert len(m.body) == 150


def test_datagram_trailing_octets_are_discarded():  # §3.1.1.8
    m = parse("dblreq")
    assert (m.method, m.body, m.call_id) == ("REGISTER", b"",
                                             "dblreq.0ha0isndaksdj99sdfafnl3lk233412")


def test_semicolons_in_user_part_and_folded_lists():  # §3.1.1.9
    m = parse("semiuri")
    uri = SipUri.parse(m.uri)
    assert (uri.user, uri.host, uri.params) == ("user;par=u%40example.net", "example.com", {})
    assert m.headers.get_all("Accept") == [
        "application/sdp", "application/pkcs7-mime", "multipart/mixed", "multipart/signed",
        "message/sip", "message/sipfrag"]


def test_transports_multipart_and_reason_phrases():  # §3.1.1.10–§3.1.1.13
    assert [v.transport for v in parse("transports").via] == ["UDP", "SCTP", "TLS", "UNKNOWN",
                                                              "TCP"]
    m = parse("mpart01")
    assert m.content_type == "multipart/mixed;boundary=7a9cbec02ceef655" and len(m.body) == 553
    assert m.body.endswith(b"--7a9cbec02ceef655--\r\n") and b"\n\x13" in m.body
    assert "rport" in m.via[0].params and m.via[0].rport is None and m.via[0].port == 5070
    m = parse("unreason")
    assert (m.status, m.reason) == (200, "= 2**3 * 5**2 но сто девяносто девять - простое")
    m = parse("noreason")
    assert (m.status, m.reason) == (100, "")


def test_contact_forms_for_the_registrar():  # §3.3.12–§3.3.14
    [bare] = parse("cparam01").contacts
    assert (bare.uri, bare.params) == ("sip:+19725552222@gw1.example.net", {"unknownparam": None})
    [enclosed] = parse("cparam02").contacts
    assert enclosed.params == {} and "unknownparam" in SipUri.parse(enclosed.uri).params
    [escaped] = parse("regescrt").contacts
    assert SipUri.parse(escaped.uri).headers == {"Route": "%3Csip:sip.example.com%3E"}


def test_values_later_layers_read():
    m = parse("unksm2")  # §3.3.4
    assert (m.to.uri, m.from_.uri, m.contacts[0].uri) == (
        "isbn:2983792873", "http://www.example.com", "name:John_Smith")
    assert parse("zeromf").max_forwards == 0  # §3.3.11
    assert parse("badbranch").via[0].branch == "z9hG4bK"  # §3.2.1
    m = parse("bext01")  # §3.3.5
    assert m.headers.get_all("Require") == ["nothingSupportsThis", "nothingSupportsThisEither"]
    assert parse("regaut01").headers.get("Authorization") == "NoOneKnowsThisScheme opaque-data=here"
    assert parse("bcast").via[1].host == "255.255.255.255"  # §3.3.10
    assert parse("baddate").headers.get("Date") == "Fri, 01 Jan 2010 16:00:00 EST"
    m = parse("inv2543")  # §3.4.1: no Max-Forwards, branch, tag or Content-Length
    assert (m.max_forwards, m.via[0].branch, m.from_.tag) == (None, None, None)
    assert m.body.startswith(b"v=0") and m.body.endswith(b"RTP/AVP 0\r\n")


# ---- header fields -----------------------------------------------------------------------------

@pytest.mark.parametrize("short, full", sorted(COMPACT_FORMS.items()))
def test_compact_forms_are_found_under_full_names(short, full):
    headers = Headers([(short.upper(), "x")])
    assert headers.get(full.upper()) == headers.get(short) == "x" and full in headers


def test_lists_split_outside_quotes_and_brackets_only():
    m = parse_datagram(REGISTER.replace(
        b"Content-Length: 0\r\n",
        b'WWW-Authenticate: Digest realm="a, b", nonce="1"\r\n'
        b"Date: Sat, 13 Nov 2010 23:29:00 GMT\r\nRoute: <sip:p1;lr>,<sip:p2;x=1,2>\r\n\r\n"))
    assert [c.display_name for c in m.contacts] == [None, "A, B"]
    assert m.contacts[1].uri == "sip:a@[2001:db8::1]"
    assert m.headers.get_all("WWW-Authenticate") == ['Digest realm="a, b", nonce="1"']
    assert m.headers.get_all("Date") == ["Sat, 13 Nov 2010 23:29:00 GMT"]
    assert m.headers.get_all("Route") == ["<sip:p1;lr>", "<sip:p2;x=1,2>"]
    assert [(v.transport, v.port, v.rport) for v in m.via] == [("UDP", 5062, None),
                                                               ("TCP", None, None)]
    with pytest.raises(ParseError, match="Bad Contact header field: unterminated quoted string"):
        parse_datagram(REGISTER.replace(b'"A, B"', b'"A, B'))


def test_headers_keep_order_and_names():
    headers = Headers([("v", "a"), ("To", "t"), ("Via", "b")])
    headers.prepend("VIA", "top")
    headers.add("via", "last")
    assert list(headers) == [("VIA", "top"), ("v", "a"), ("To", "t"), ("Via", "b"), ("via", "last")]
    assert headers.pop("Via") == "top" and headers.get_all("v") == ["a", "b", "last"]
    headers.set("Max-Forwards", "69")
    headers.set("via", "only")
    assert list(headers) == [("via", "only"), ("To", "t"), ("Max-Forwards", "69")]
    headers.remove("TO")
    assert "to" not in headers and len(headers) == 2 and headers.get("To", "-") == "-"
    with pytest.raises(KeyError):
        headers.pop("Contact")


def test_lookups_follow_every_edit():
    headers = Headers([("Via", "a"), ("To", "t"), ("v", "b")])
    values = headers.get_all("via")
    values.append("not stored")  # a copy: editing it changes nothing
    assert headers.get_all("Via") == ["a", "b"]
    headers.prepend("v", "top")
    assert headers.get_all("Via") == ["top", "a", "b"] and headers.get("VIA") == "top"
    assert headers.pop("via") == "top" and headers.get_all("v") == ["a", "b"]
    headers.set("Via", "only")
    assert headers.get_all("v") == ["only"] and list(headers) == [("Via", "only"), ("To", "t")]
    assert headers.pop("Via") == "only" and "Via" not in headers and headers.get("v") is None
    with pytest.raises(KeyError):
        headers.pop("Via")
    headers.remove("t")
    assert len(headers) == 0 and headers.get_all("To") == [] and "To" not in headers
    headers.prepend("m", "<sip:a@b>")
    assert headers.get_all("Contact") == ["<sip:a@b>"] and list(headers) == [("m", "<sip:a@b>")]


def test_contact_star():  # §10.2.2
    start = REGISTER.index(b"Contact:")
    m = parse_datagram(REGISTER[:start] + b"Contact: *\r\nExpires: 0"
                       + REGISTER[REGISTER.index(b"\r\n", start):])
    assert m.contacts == [NameAddr("*")] and str(m.contacts[0]) == "*" and m.expires == 0
    with pytest.raises(ParseError, match="Contact \\* must be the only Contact value"):
        parse_datagram(REGISTER.replace(b"Contact: ", b"Contact: *, "))


# ---- typed values ------------------------------------------------------------------------------

def test_typed_values_print_back():
    contact = NameAddr("sip:a@b", 'Al "the" \\ One', {"expires": "60", "lr": None})
    assert str(contact) == '"Al \\"the\\" \\\\ One" <sip:a@b>;expires=60;lr'
    assert NameAddr.parse(str(contact)) == contact and contact.expires == 60
    via = Via("UDP", "192.0.2.1", 5060, {"branch": "z9hG4bKx", "rport": "5061"})
    assert str(via) == "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKx;rport=5061"
    assert Via.parse(str(via)) == via and via.rport == 5061
    uri = SipUri.parse("SIPS:Bob:pw@Example.COM:5061;Transport=tcp;lr?Subject=hi&Priority=urgent")
    assert (uri.scheme, uri.user, uri.password, uri.host, uri.port) == (
        "sips", "Bob", "pw", "example.com", 5061)
    assert uri.params == {"transport": "tcp", "lr": None}
    assert SipUri.parse(str(uri)) == uri and str(SipUri("sip", "example.org")) == "sip:example.org"
    assert str(CSeq.parse(" 7   ACK ")) == "7 ACK"


@pytest.mark.parametrize("parse_value, text, words", [
    (NameAddr.parse, "<sip:a@b", "missing >"),
    (NameAddr.parse, '"x" sip:a@b', "display name without <URI>"),
    (NameAddr.parse, "sip:a@b;;", "malformed parameters"),
    (NameAddr.parse, "< sip:a@b>", "spaces within addr-spec"),
    (NameAddr.parse, "<sip:a b>", "malformed URI"),
    (NameAddr.parse, "no-scheme", "malformed URI"),
    (Via.parse, "SIP/2.0/UDP", "malformed sent-protocol or sent-by"),
    (Via.parse, "SIP/2.0/UDP host:70000", "port out of range"),
    (CSeq.parse, "4294967296 INVITE", "sequence number out of range"),
    (CSeq.parse, "-1 INVITE", "expected a number and a method"),
    (SipUri.parse, "sip:@example.org", "malformed SIP URI"),
    (SipUri.parse, "sip:example.org;;lr", "empty URI parameter"),
])
def test_malformed_values_say_why(parse_value, text, words):
    with pytest.raises(ParseError, match=words) as caught:
        parse_value(text)
    assert caught.value.status == 400


def test_contact_scalars_out_of_range():  # RFC 4475 §3.1.2.4: the registrar picks a default
    contact = NameAddr.parse("<sip:a@b>;expires=280297596632815;q=1.5")
    with pytest.raises(ParseError, match="expires out of range"):
        contact.expires
    with pytest.raises(ParseError, match="qvalue"):
        contact.q
    assert NameAddr.parse("<sip:a@b>").expires is None


def test_scalar_header_fields():
    assert parse_datagram(REGISTER.replace(b"Max-Forwards: 70", b"Max-Forwards: 0255")
                          ).max_forwards == 255
    for bad, words in [(b"Max-Forwards: 256", "Max-Forwards out of range"),
                       (b"Max-Forwards: seventy", "Max-Forwards is not a number"),
                       (b"CSeq: 2 INVITE", "CSeq method does not match"),
                       (b"Call-ID: a b", "Bad Call-ID header field"),
                       (b"Content-Length: 1e3", "Content-Length is not a number")]:
        field = bad.split(b":")[0]
        start = REGISTER.index(field + b":")
        data = REGISTER[:start] + bad + REGISTER[REGISTER.index(b"\r\n", start):]
        with pytest.raises(ParseError, match=words):
            parse_datagram(data)


# ---- serializing and answering -----------------------------------------------------------------

def test_serializer_sets_content_length_and_keeps_names():
    m = parse("esc01")
    m.body = "héllo".encode()
    wire = bytes(m)
    assert wire.startswith(b"INVITE sip:sips%3Auser%40example.com@example.net SIP/2.0\r\n"
                           b"To: sip:%75se%72@example.com\r\n")
    assert b"\r\ni: esc01.239409asdfakjkn23onasd0-3234\r\nCSeq:" in wire
    assert wire.endswith(b"\r\nContent-Length: 6\r\n\r\nh\xc3\xa9llo") and wire == m.serialize()
    built = Request("MESSAGE", "sip:bob@example.org", Headers([("l", "99"), ("L", "1")]), b"hi")
    assert bytes(built) == b"MESSAGE sip:bob@example.org SIP/2.0\r\nl: 2\r\n\r\nhi"
    assert bytes(Response(200, "OK")) == b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n"
    with pytest.raises(ValueError, match="CR or LF"):
        bytes(Request("MESSAGE", "sip:bob@example.org", Headers([("Subject", "a\r\nVia: x")])))


def test_make_response_copies_the_transaction_fields():  # §8.2.6
    request = parse_datagram(REGISTER)
    ok = make_response(request, 200, to_tag="srv1", headers=[("Expires", "300")])
    assert (ok.status, ok.reason) == (200, "OK")
    assert list(ok.headers) == [
        ("Via", "SIP/2.0/UDP 192.0.2.7:5062;branch=z9hG4bK1;rport"),
        ("Via", "SIP/2.0/TCP p.example.org"),
        ("From", "Alice <sip:alice@example.org>;tag=a1"),
        ("To", "<sip:alice@example.org>;tag=srv1"),
        ("Call-ID", "reg-1@192.0.2.7"), ("CSeq", "2 REGISTER"), ("Expires", "300")]
    assert list(parse_datagram(bytes(ok)).headers) == list(ok.headers) + [("Content-Length", "0")]
    trying = make_response(request, 100)
    assert trying.to.tag is None and trying.headers.get("Timestamp") == "54"
    tagged = make_response(make_response(request, 180, to_tag="x"), 486, "Busy", to_tag="y")
    assert tagged.to.tag == "x" and tagged.reason == "Busy"
    assert make_response(request, 299).reason == ""


def test_acks_and_responses_are_never_answered():  # §17.2.1, §18.1.2
    ack = REGISTER.replace(b"REGISTER sip:", b"ACK sip:").replace(b"2 REGISTER", b"2 INVITE")
    with pytest.raises(ParseError) as caught:
        parse_datagram(ack)
    assert caught.value.drop and caught.value.method == "ACK"


def test_line_feeds_alone_are_tolerated():
    assert parse_datagram(REGISTER.replace(b"\r\n", b"\n")) == parse_datagram(REGISTER)


@pytest.mark.parametrize("folded, value", [
    (b"Subject: a  \r\n  b", "a b"),  # LWS = [*WSP CRLF] 1*WSP reads as one SP (§7.3.1)
    (b"Subject: a\r\n\tb\r\n c", "a b c"),
    (b"Subject: a\n b", "a b"),  # a bare LF folds too
    (b"Subject:\r\n a", "a"),
    (b"Subject: a \t" + b" " * 10000 + b"\r\n b" + b" " * 10000, "a b"),
])
def test_folded_lines_are_unfolded(folded, value):
    m = parse_datagram(REGISTER.replace(b"Timestamp: 54", folded), max_line_size=1 << 16)
    assert m.headers.get("Subject") == value and m.headers.get("Timestamp") is None


def test_folded_list_values_are_split():
    m = parse_datagram(REGISTER.replace(b"Timestamp: 54", b"Route: <sip:p1;lr>,\r\n <sip:p2>"))
    assert m.headers.get_all("Route") == ["<sip:p1;lr>", "<sip:p2>"]


# ---- framing: datagrams and streams (§18.3, RFC 5626 §4.4.1) -----------------------------------

@pytest.mark.parametrize("empty_line", [b"\r\n\n", b"\n\r\n", b"\n\n"])
def test_mixed_line_endings_end_the_header_section(empty_line):
    head, body = REGISTER[:-4], b"hello\r\n\r\nworld"
    data = head.replace(b"Content-Length: 0", b"Content-Length: %d" % len(body)) + empty_line + body
    m = parse_datagram(data)
    assert m.body == body and m.call_id == "reg-1@192.0.2.7"
    stream = StreamParser()
    stream.feed(data + REGISTER)
    assert list(stream) == [m, parse_datagram(REGISTER)]


def test_keep_alive_datagram():
    assert parse_datagram(b"\r\n\r\n") == KeepAlive() and KeepAlive.PONG == b"\r\n"


def test_header_line_of_64_kib_is_refused():
    data = REGISTER.replace(b"Timestamp: 54", b"X-Long: " + b"a" * 65536)
    with pytest.raises(ParseError) as caught:
        parse_datagram(data)
    assert (caught.value.status, caught.value.reason) == (513, "Header line too long")
    assert caught.value.response().headers.get("Call-ID") == "reg-1@192.0.2.7"
    stream = StreamParser(max_message_size=1 << 20)
    stream.feed(data)
    with pytest.raises(ParseError, match="513 Header line too long"):
        stream.next_message()


@pytest.mark.parametrize("name", ["wsinv", "mpart01", "noreason"])
def test_stream_fed_byte_by_byte(name):
    data, stream = torture(name), StreamParser()
    events = []
    for i in range(len(data)):
        stream.feed(data[i:i + 1])
        events.extend(stream)
    assert events == [parse_datagram(data)]


def test_stream_with_keep_alives_and_two_messages_in_one_chunk():
    first, second = torture("zeromf"), torture("unreason")
    stream = StreamParser()
    stream.feed(b"\r\n\r\n" + first + second + b"\r\n" + first + b"\r\n\r\n")
    assert list(stream) == [KeepAlive(), parse_datagram(first), parse_datagram(second),
                            parse_datagram(first), KeepAlive()]
    stream.feed(b"\r\n")
    assert stream.next_message() is None  # a ping may be on its way
    stream.feed(b"\r\n")
    assert stream.next_message() == KeepAlive()


def test_stream_waits_for_the_whole_message():
    data = torture("invut")
    head_end = data.index(b"\r\n\r\n")
    stream, fed = StreamParser(), 0
    for end in (10, head_end + 2, head_end + 4, len(data) - 1, len(data)):
        stream.feed(data[fed:end])
        fed = end
        event = stream.next_message()
        assert (event is None) == (end < len(data))
    assert event.body.endswith(b"</audio>\r\n") and stream.next_message() is None


@pytest.mark.parametrize("data, status, reason", [
    (REGISTER.replace(b"Content-Length: 0\r\n", b""), 400, "Missing Content-Length"),
    (REGISTER.replace(b"Content-Length: 0", b"Content-Length: -1"), 400, "Negative Content-Length"),
    (REGISTER.replace(b"Content-Length: 0", b"Content-Length: 0\r\nl: 0"), 400,
     "Multiple Content-Length values"),
    (REGISTER.replace(b"Content-Length: 0", b"Content-Length: 4000"), 413,
     "Message body too large"),
    (b"INVITE sip:a@b SIP/2.0\r\n" + b"X: y\r\n" * 1000, 513, "Header section too large"),
])
def test_stream_framing_errors_are_fatal(data, status, reason):
    stream = StreamParser(max_message_size=4096)
    stream.feed(data)
    with pytest.raises(ParseError, match=f"{status} {reason}") as caught:
        stream.next_message()
    assert caught.value.fatal
    stream.feed(REGISTER)
    with pytest.raises(ParseError) as again:
        stream.next_message()
    assert again.value is caught.value


def test_stream_survives_a_bad_message_it_could_frame():
    stream = StreamParser()
    stream.feed(torture("mismatch01") + REGISTER)
    with pytest.raises(ParseError) as caught:
        stream.next_message()
    assert caught.value.status == 400 and not caught.value.fatal
    assert stream.next_message() == parse_datagram(REGISTER)
