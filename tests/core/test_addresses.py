import pytest

from convergence.addresses import Address, AddressError, normalize_localpart


def test_jid_parts_are_normalized():
    a = Address.parse("Alice@Example.ORG/Phone")
    assert (a.local, a.domain, a.resource) == ("alice", "example.org", "Phone")
    assert a.bare == Address("alice", "example.org")
    assert a.jid == "alice@example.org/Phone"


def test_fullwidth_and_case_are_mapped():  # RFC 7622 §3.3.2 width and case mapping
    assert normalize_localpart("ＡＬＩＣＥ") == "alice"


@pytest.mark.parametrize("text", ["a b@x", "a@b@c", "@example.org", "a\"b@x", "a:b@x",
                                  "x" * 1024 + "@x", "alice@", "alice@exa mple.org", "alice@x/"])
def test_invalid_jids_are_refused(text):
    with pytest.raises(AddressError):
        Address.parse(text)


def test_sip_uri_maps_to_the_same_account():  # RFC 7247 §5.2
    a = Address.parse("<sip:Alice@Example.org:5060;transport=tcp>")
    assert a == Address("alice", "example.org")
    assert Address.parse("sips:alice:secret@example.org") == a


def test_sip_escapes_round_trip():  # RFC 7247 §5.1: characters outside user-unreserved are escaped
    a = Address("ren%e9 x".replace(" ", "_").replace("%e9", "é"), "example.org")
    uri = a.sip_uri
    assert uri == "sip:ren%C3%A9_x@example.org"
    assert Address.parse(uri) == a


def test_xmpp_uri_and_domain_only():
    assert Address.parse("xmpp:bob@example.org") == Address("bob", "example.org")
    assert Address.parse("example.org").local is None
    assert Address("bob", "example.org", "r1").sip_uri == "sip:bob@example.org"


def test_slash_starts_the_resource():  # RFC 7622 §3.1: "a/b@x" is domain a, resource b@x
    assert Address.parse("a/b@x") == Address(None, "a", "b@x")
