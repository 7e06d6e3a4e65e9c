"""Reading a SIP message costs time linear in its size, whatever its shape (issue 11 part 1).

One datagram of 64 KB, valid or not, must not be able to hold the server's CPU: a reader that
backtracks (a regular expression with nested or adjacent quantifiers over the same characters)
costs time quadratic in the length of what it reads. Each shape below is the worst case found for
one reader; it is parsed at 8 KB and at 64 KB and the costs compared as a ratio, never against an
absolute time: linear is a ratio near 8, quadratic near 64.

The header line limit (``max_line_size``, 8 KB) would hide a quadratic reader of one line behind a
large constant (eight lines of 8 KB at 8 KB² each), so the shapes are parsed with the limit out of
the way: what is measured is each reader, over the whole size.
"""
import time

import pytest

from convergence.plugins.sip import message as sipmessage
from convergence.plugins.sip.digest import DigestError, parse_credentials
from convergence.plugins.sip.message import ParseError, StreamParser

SMALL, LARGE = 8 * 1024, 64 * 1024
LINEAR = 8 * 3  # LARGE/SMALL, with room for noise; a quadratic reader shows 64
REPEATS = 3  # the best of these is taken: noise only ever adds time
PARSES = 4  # per measurement, each on empty caches (a new message's cost)

REQUEST_LINE = b"OPTIONS sip:example.com SIP/2.0\r\n"
FIELDS = {  # a valid OPTIONS, field by field; a shape replaces or adds one
    b"Via": b"SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1",
    b"Max-Forwards": b"70",
    b"From": b"<sip:alice@example.com>;tag=1",
    b"To": b"<sip:example.com>",
    b"Call-ID": b"cost@192.0.2.1",
    b"CSeq": b"1 OPTIONS",
}


def message(fields: dict[bytes, bytes] = {}, request_line: bytes = REQUEST_LINE,
            extra: bytes = b"") -> bytes:
    """The OPTIONS with some field values replaced and ``extra`` raw lines appended."""
    head = b"".join(b"%s: %s\r\n" % item for item in {**FIELDS, **fields}.items())
    return request_line + head + extra + b"Content-Length: 0\r\n\r\n"


def fill(unit: bytes, size: int) -> bytes:
    """``unit`` repeated to about ``size`` bytes."""
    return unit * (size // len(unit))


#: name → size → message of about that size. The comments say which reader each one attacks.
SHAPES = {
    # header unfolding (§7.3.1): a folded line, then a long run of spaces (the 20 s datagram)
    "folded line then spaces": lambda n: message(extra=b"Subject: a\r\n b" + fill(b" ", n)
                                                 + b"c\r\n"),
    "spaces then a fold": lambda n: message(extra=b"Subject: a" + fill(b" ", n) + b"\r\n b\r\n"),
    "tabs and spaces, folded": lambda n: message(extra=b"Subject: a\r\n\t" + fill(b" \t", n)
                                                 + b"\r\n"),
    "many folds": lambda n: message(extra=b"Subject: a" + fill(b"\r\n b", n) + b"\r\n"),
    "many header lines": lambda n: message(extra=fill(b"X: y\r\n", n)),
    # list splitting (§7.3.1): commas, quotes and brackets
    "commas in a list": lambda n: message(extra=b"Route: " + fill(b",", n) + b"\r\n"),
    "brackets never closed": lambda n: message(extra=b"Route: " + fill(b"<,", n) + b"\r\n"),
    "quotes never closed": lambda n: message(extra=b"Contact: " + fill(b'a,"', n) + b"\r\n"),
    "escapes in a listed quote": lambda n: message(extra=b'Contact: "' + fill(b'\\",', n)
                                                   + b"\r\n"),
    "words then a quote": lambda n: message(extra=b"Contact: " + fill(b"a ", n) + b'"\r\n'),
    # name-addr (§20.10, §25.1): display names, quoted strings, parameters
    "escaped quotes in a display name": lambda n: message({b"From": b'"' + fill(b'\\"', n)
                                                           + b'" <sip:a@b>;tag=1'}),
    "display name never closed": lambda n: message({b"From": b'"' + fill(b'\\"', n)}),
    "display tokens without <>": lambda n: message({b"From": fill(b"a ", n) + b"b"}),
    "display tokens, bad end": lambda n: message({b"From": fill(b"a ", n) + b"@ <sip:a@b>"}),
    "spaces in display tokens": lambda n: message({b"From": b"a" + fill(b" ", n) + b"\x01<sip:a@b>"}),
    "many parameters": lambda n: message({b"To": b"<sip:a@b>" + fill(b";a=b", n)}),
    "parameter, spaces, junk": lambda n: message({b"To": b"<sip:a@b>;a" + fill(b" ", n) + b"@"}),
    "parameter value never closed": lambda n: message({b"To": b'<sip:a@b>;a="' + fill(b"\\\"", n)}),
    "parameter value of brackets": lambda n: message({b"To": b"<sip:a@b>;a=" + fill(b"[:", n)
                                                      + b"@"}),
    "uri never closed": lambda n: message({b"To": b"<sip:" + fill(b"a", n)}),
    "addr-spec with semicolons": lambda n: message({b"To": b"sip:a@b" + fill(b";", n) + b"?"}),
    # Via (§20.42), CSeq (§20.16), Call-ID (§20.8)
    "Via host then junk": lambda n: message({b"Via": b"SIP/2.0/UDP " + fill(b"a", n) + b"/"}),
    "Via spaces then junk": lambda n: message({b"Via": b"SIP/2.0/UDP" + fill(b" ", n) + b"/"}),
    "Via protocol spaces": lambda n: message({b"Via": b"SIP" + fill(b" ", n) + b"!"}),
    "many Via parameters": lambda n: message({b"Via": b"SIP/2.0/UDP h" + fill(b";a=b", n)}),
    "many Vias": lambda n: message({b"Via": fill(b"SIP/2.0/UDP h,", n) + b"SIP/2.0/UDP h"}),
    "CSeq spaces then junk": lambda n: message({b"CSeq": b"1" + fill(b" ", n) + b"\x01"}),
    "long CSeq number": lambda n: message({b"CSeq": fill(b"1", n) + b" OPTIONS"}),
    "Call-ID of many @": lambda n: message({b"Call-ID": fill(b"a@", n)}),
    # start line (§7.1, §7.2) and Request-URI (§19.1)
    "Request-URI user, no host": lambda n: message(
        request_line=b"OPTIONS sip:" + fill(b"a", n) + b"@ SIP/2.0\r\n"),
    "Request-URI parameters": lambda n: message(
        request_line=b"OPTIONS sip:a@b" + fill(b";x", n) + b"/ SIP/2.0\r\n"),
    "Request-URI host then junk": lambda n: message(
        request_line=b"OPTIONS sip:" + fill(b"a", n) + b"/ SIP/2.0\r\n"),
    "Request-Line spaces": lambda n: message(
        request_line=b"OPTIONS" + fill(b" ", n) + b"sip:a@b SIP/2.0\r\n"),
    "Status-Line reason": lambda n: message(request_line=b"SIP/2.0 200 " + fill(b"a ", n) + b"\r\n"),
    # forbidden characters (§25.1): bare CRs, NULs
    "bare CRs": lambda n: message(extra=b"Subject: " + fill(b"a\r", n) + b"\r\n"),
    "NULs": lambda n: message(extra=b"Subject: " + fill(b"\x00", n) + b"\r\n"),
}


def clear_caches(module) -> None:
    """Empty the module's caches of parsed values, so that a parse costs what a new one does."""
    for value in vars(module).values():
        for item in vars(value).values() if isinstance(value, type) else (value,):
            item = getattr(item, "__func__", item)
            if hasattr(item, "cache_clear"):
                item.cache_clear()


def datagram_cost(module, data: bytes) -> float:
    """CPU seconds of ``PARSES`` datagram parses, the best of ``REPEATS``."""
    best = float("inf")
    for _ in range(REPEATS):
        spent = 0.0
        for _ in range(PARSES):
            clear_caches(module)
            started = time.process_time()
            try:
                module.parse_datagram(data, max_line_size=len(data))
            except module.ParseError:
                pass
            spent += time.process_time() - started
        best = min(best, spent)
    return best


def growth(cost, shape) -> float:
    """How many times more a LARGE message of ``shape`` costs than a SMALL one."""
    return cost(shape(LARGE)) / max(cost(shape(SMALL)), 1e-9)


@pytest.mark.parametrize("name", SHAPES)
def test_datagram_parse_cost_is_linear(name):
    shape = SHAPES[name]
    assert abs(len(shape(LARGE)) - LARGE) < 1024  # the shape grows with the size asked for
    ratio = growth(lambda data: datagram_cost(sipmessage, data), shape)
    assert ratio < LINEAR, f"{name}: 8 KB -> 64 KB costs {ratio:.0f}x (linear: 8x)"


def stream_cost(data: bytes, chunk: int = 64) -> float:
    """CPU seconds of framing ``data`` fed in small chunks, asking after each chunk what a
    transport asks (a message yet? bytes pending?), the best of ``REPEATS``."""
    best = float("inf")
    for _ in range(REPEATS):
        clear_caches(sipmessage)
        stream = StreamParser(max_message_size=2 * len(data), max_line_size=len(data))
        started = time.process_time()
        for at in range(0, len(data), chunk):
            stream.feed(data[at:at + chunk])
            try:
                stream.next_message()
            except ParseError:
                pass
            stream.pending
        best = min(best, time.process_time() - started)
    return best


@pytest.mark.parametrize("name", ["folded line then spaces", "many header lines", "bare CRs"])
def test_stream_framing_cost_is_linear(name):
    """A message trickling in over TCP is searched for its end once, not once per chunk."""
    ratio = growth(stream_cost, SHAPES[name])
    assert ratio < LINEAR, f"{name}: 8 KB -> 64 KB costs {ratio:.0f}x (linear: 8x)"


#: Authorization / Proxy-Authorization values (§25.1 credentials), read before anyone is known.
CREDENTIALS = {
    "junk after the scheme": lambda n: "Digest " + fill("a", n),
    "escapes never closed": lambda n: 'Digest a="' + fill("\\x", n),
    "names without values": lambda n: "Digest " + fill("a=b ", n),
    "spaces then junk": lambda n: "Digest a=b," + fill(" ", n) + "!",
}


@pytest.mark.parametrize("name", CREDENTIALS)
def test_credentials_parse_cost_is_linear(name):
    """Digest credentials (a finditer scan cost 409 ms for one 8 KB header) grow linearly too."""
    def cost(value: str) -> float:
        best = float("inf")
        for _ in range(REPEATS):
            started = time.process_time()
            for _ in range(PARSES):
                try:
                    parse_credentials(value)
                except DigestError:
                    pass
            best = min(best, time.process_time() - started)
        return best
    ratio = growth(cost, CREDENTIALS[name])
    assert ratio < LINEAR, f"{name}: 8 KB -> 64 KB costs {ratio:.0f}x (linear: 8x)"
