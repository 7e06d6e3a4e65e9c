"""PIDF/RPID documents (plugins/sip/pidf.py): the RFC 8048 mapping both ways, what phones send,
refusals of unsafe or malformed XML, a seeded fuzz, and the module's sans-IO imports."""
import ast
import random
from pathlib import Path

import pytest

from convergence import Presence
from convergence.plugins.sip import pidf

HEAD = ('<?xml version="1.0" encoding="UTF-8"?>\n<presence xmlns="urn:ietf:params:xml:ns:pidf" '
        'xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" '
        'xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" entity="sip:alice@example.com">')


def doc(inner: str) -> bytes:
    return (HEAD + inner + "</presence>").encode()


@pytest.mark.parametrize("presence", [
    Presence(), Presence(available=False), Presence(show="chat"), Presence(show="away"),
    Presence(show="xa", status="gone fishing"), Presence(show="dnd", status="<meeting> & co"),
    Presence(available=False, status="bye"), Presence(status="ünïcode ✓"),
])
def test_build_then_parse_gives_the_same_presence(presence):
    assert pidf.parse(pidf.build("sip:bob@example.com", presence)) == presence


@pytest.mark.parametrize("inner, expected", [
    ('<tuple id="a"><status><basic>open</basic></status></tuple>', Presence()),
    ('<tuple id="a"><status><basic>closed</basic></status></tuple>', Presence(available=False)),
    ("", Presence()),  # no tuple: nothing known, the phone stays as registered
    ('<tuple id="a"><status><basic>unknown</basic></status></tuple>', Presence()),  # baresip 1.0
    ('<tuple id="a"><status><basic>closed</basic></status></tuple>'
     '<tuple id="b"><status><basic>open</basic></status></tuple>', Presence()),
    # baresip 1.0's own document, with its empty activities
    ('<dm:person id="p4159"><rpid:activities/></dm:person><tuple id="t4109"><status>'
     '<basic>open</basic></status><contact>sip:alice@example.com</contact></tuple>', Presence()),
    ('<tuple id="a"><status><basic>open</basic></status></tuple><dm:person id="p">'
     '<rpid:activities><rpid:on-the-phone/></rpid:activities></dm:person>', Presence(show="dnd")),
    ('<tuple id="a"><status><basic>open</basic></status></tuple><dm:person id="p">'
     '<rpid:activities><rpid:lunch/><rpid:busy/></rpid:activities></dm:person>',
     Presence(show="dnd")),  # the least available activity wins
    ('<tuple id="a"><status><basic>open</basic></status><note>tuple note</note></tuple>'
     '<note>document note</note>', Presence(status="document note")),
    ('<tuple id="a"><status><basic>open</basic></status><note>t</note></tuple>'
     '<dm:person id="p"><dm:note>person note</dm:note></dm:person>', Presence(status="person note")),
    ('<tuple id="a"><status><basic>open</basic></status></tuple><dm:person id="p">'
     '<rpid:activities><rpid:vacation/></rpid:activities></dm:person>', Presence(show="xa")),
    ('<tuple id="a"><status><basic>open</basic></status></tuple><dm:person id="p">'
     '<rpid:activities><rpid:unknown/></rpid:activities></dm:person>', Presence()),
])
def test_what_phones_publish(inner, expected):
    assert pidf.parse(doc(inner)) == expected


@pytest.mark.parametrize("body", [
    b"",
    b"<presence/>",  # no PIDF namespace
    b'<presence xmlns="urn:ietf:params:xml:ns:pidf"><tuple>',  # unfinished
    b'<!DOCTYPE presence [<!ENTITY a "x">]><presence xmlns="urn:ietf:params:xml:ns:pidf"/>',
    b'<!DOCTYPE presence SYSTEM "http://example.com/x.dtd"><presence/>',
    b'<presence xmlns="urn:ietf:params:xml:ns:pidf">&undefined;</presence>',
    b'<presence xmlns="urn:ietf:params:xml:ns:pidf"><x:y/></presence>',  # unbound prefix
    doc("<a>" * 20 + "</a>" * 20),  # too deep
    doc("<a/>" * 600),  # too many elements
    b"x" * (pidf.MAX_SIZE + 1),
])
def test_refused(body):
    with pytest.raises(pidf.PidfError):
        pidf.parse(body)


def test_billion_laughs_is_refused_before_any_expansion():
    lol = (b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
           + b"".join(b'<!ENTITY lol%d "%s">' % (i, (b"&lol%d;" % (i - 1) if i > 1 else b"&lol;") * 10)
                      for i in range(1, 10))
           + b']><presence xmlns="urn:ietf:params:xml:ns:pidf">&lol9;</presence>')
    with pytest.raises(pidf.PidfError, match="DOCTYPE"):
        pidf.parse(lol)


def test_the_written_document_escapes_and_drops_what_xml_cannot_hold():
    body = pidf.build('sip:"x"@example.com', Presence(status='a\x00b<c>&"'))
    assert b"\x00" not in body and b"&lt;c&gt;&amp;&quot;" in body
    assert pidf.parse(body).status == 'ab<c>&"'


def test_fuzz_never_raises_anything_but_pidf_error():
    """Seeded mutations of valid documents: each is read or refused with PidfError."""
    rng = random.Random(16)
    seeds = [pidf.build("sip:bob@example.com", p) for p in
             (Presence(), Presence(show="away", status="x"), Presence(available=False))]
    for _ in range(3000):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 8)):
            at = rng.randrange(len(data))
            action = rng.random()
            if action < 0.4:
                data[at] = rng.randrange(256)
            elif action < 0.7:
                del data[at:at + rng.randint(1, 20)]
            else:
                data[at:at] = rng.choice([b"<", b">", b"&", b"<!DOCTYPE x>", b"<rpid:busy/>",
                                          b"</tuple>", b"\x00", b"&#0;", b"]]>"])
        try:
            result = pidf.parse(bytes(data))
        except pidf.PidfError:
            continue
        assert isinstance(result, Presence)


def test_pidf_is_sans_io():
    tree = ast.parse(Path(pidf.__file__).read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and not node.level}
    assert imported <= {"__future__", "types", "xml", "convergence"}, imported
