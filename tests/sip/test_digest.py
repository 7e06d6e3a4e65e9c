"""Digest authentication (RFC 7616 / RFC 8760) with a fake clock."""
import pytest

from convergence.credentials import derive, ha1, verify
from convergence.plugins.sip.digest import (DigestError, DigestServer, Rejected, Verified,
                                             parse_credentials, response)
from convergence.store import accounts

RFC7616 = dict(nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", nc="00000001", qop="auth",
               cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ", method="GET",
               uri="/dir/index.html")


@pytest.mark.parametrize("algorithm, hash_name, expected", [  # RFC 7616 §3.9.1
    ("SHA-256", "sha256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ("MD5", "md5", "8ca523f5e9506fed4657c9700eebdbec"),
])
def test_response_matches_rfc7616_example(algorithm, hash_name, expected):
    key = ha1(hash_name, "Mufasa", "http-auth@example.org", "Circle of Life")
    assert response(algorithm, key, **RFC7616) == expected


def test_parse_credentials():
    params = parse_credentials('Digest username="bob", realm="example.org", nonce="a\\"b", '
                               'uri="sip:example.org", response="00", algorithm=SHA-256, qop=auth, '
                               'nc=00000001, cnonce="x,y"')
    assert params["nonce"] == 'a"b' and params["cnonce"] == "x,y" and params["qop"] == "auth"
    assert parse_credentials('Digest a="x\\\\", b = "y"') == {"a": "x\\", "b": "y"}  # a = x\
    for bad in ('Basic Ym9iOnB3', 'Digest username="bob", username="eve"', 'Digest username="bob',
                'Digest a="x\\", b=c'):  # the escaped quote leaves the string open
        with pytest.raises(DigestError):
            parse_credentials(bad)


STORE = {"bob": {"MD5": ha1("md5", "bob", "example.org", "pw"),
                 "SHA-256": ha1("sha256", "bob", "example.org", "pw")}}


def ha1_of(username, algorithm):
    return STORE.get(username, {}).get(algorithm)


def answer(server, challenge, username="bob", password="pw", nc="00000001", method="REGISTER"):
    """What a user agent computes for one of our challenges."""
    params = parse_credentials(challenge)
    algorithm = params["algorithm"]
    key = ha1({"SHA-256": "sha256", "MD5": "md5"}[algorithm], username, params["realm"], password)
    creds = dict(username=username, realm=params["realm"], nonce=params["nonce"],
                 uri="sip:example.org", qop="auth", nc=nc, cnonce="c0ffee", algorithm=algorithm)
    creds["response"] = response(algorithm, key, creds["nonce"], nc, "c0ffee", "auth", method,
                                 creds["uri"])
    return creds


@pytest.mark.parametrize("which", [0, 1])
def test_challenge_answer_verifies_with_both_algorithms(which):
    server = DigestServer("example.org")
    challenges = server.challenges(now=1000.0)
    assert [c.split("algorithm=")[1].split(",")[0] for c in challenges] == ["SHA-256", "MD5"]
    assert server.verify(answer(server, challenges[which]), "REGISTER", ha1_of, 1001.0) == Verified("bob")


def test_wrong_password_unknown_user_and_wrong_method():
    server = DigestServer("example.org")
    challenge = server.challenges(now=0)[0]
    assert server.verify(answer(server, challenge, password="x"), "REGISTER", ha1_of, 1).reason == \
        "wrong username or password"
    assert not isinstance(server.verify(answer(server, challenge, "eve"), "REGISTER", ha1_of, 1), Verified)
    assert not isinstance(server.verify(answer(server, challenge), "INVITE", ha1_of, 1), Verified)


def test_replayed_nonce_count_is_refused_and_next_count_accepted():
    server = DigestServer("example.org")
    challenge = server.challenges(now=0)[0]
    assert server.verify(answer(server, challenge), "REGISTER", ha1_of, 1) == Verified("bob")
    assert server.verify(answer(server, challenge), "REGISTER", ha1_of, 2) == \
        Rejected("nonce count replayed", stale=True)
    assert server.verify(answer(server, challenge, nc="00000002"), "REGISTER", ha1_of, 3) == Verified("bob")


def test_expired_nonce_is_stale():
    server = DigestServer("example.org", lifetime=300)
    challenge = server.challenges(now=0)[0]
    assert server.verify(answer(server, challenge), "REGISTER", ha1_of, 301) == \
        Rejected("nonce expired", stale=True)


def test_nonces_issued_at_once_differ_and_each_verifies():
    secret = bytes(32)
    servers = [DigestServer("example.org", secret=secret), DigestServer("example.org", secret=secret)]
    nonces = {parse_credentials(server.challenges(now=0)[0])["nonce"]
              for server in servers for _ in range(3)}
    assert len(nonces) == 6
    challenge = servers[1].challenges(now=0)[0]
    assert servers[1].verify(answer(servers[1], challenge), "REGISTER", ha1_of, 1) == Verified("bob")


def test_foreign_or_forged_nonce_is_refused():
    ours, theirs = DigestServer("example.org"), DigestServer("example.org")
    forged = answer(theirs, theirs.challenges(now=0)[0])
    assert ours.verify(forged, "REGISTER", ha1_of, 1).reason == "nonce was not issued here"
    tampered = dict(forged, nonce="AAAA" + forged["nonce"][4:])
    assert ours.verify(tampered, "REGISTER", ha1_of, 1).reason == "nonce was not issued here"


@pytest.mark.parametrize("change, reason", [
    ({"qop": None}, "missing qop"), ({"realm": "other"}, "realm must be example.org"),
    ({"algorithm": "SHA-512-256"}, "unsupported algorithm"), ({"nc": "1"}, "8-digit hex nc"),
])
def test_malformed_credentials(change, reason):
    server = DigestServer("example.org")
    creds = answer(server, server.challenges(now=0)[0])
    creds.update(change)
    creds = {k: v for k, v in creds.items() if v is not None}
    assert reason in server.verify(creds, "REGISTER", ha1_of, 1).reason


# ---- over the wire: who may be challenged at all ----

def test_message_from_another_domain_is_refused_without_a_challenge(sip_server):
    """Nobody can authenticate here for a domain we do not serve: 403 at once, not 407."""
    server = sip_server()
    server.core.add_account("bob", "pw")
    client = server.client()
    request = client.request("MESSAGE", uri="sip:bob@example.com", body=b"x",
                             headers=[("Content-Type", "text/plain")])
    local = client.ask(request)
    assert local.status == 407  # a From of ours is challenged
    request = client.request("MESSAGE", uri="sip:bob@example.com", body=b"x",
                             headers=[("Content-Type", "text/plain")])
    request.headers.set("From", f"<sip:mallory@elsewhere.example>;tag={client.tag}")
    foreign = client.ask(request)
    assert foreign.status == 403 and foreign.reason == "From is not an address of this domain"
    assert "Proxy-Authenticate" not in foreign.headers


def test_derive_without_digest_stores_no_ha1():
    creds = derive("bob", "example.org", "pw", digest=False)
    assert creds.ha1_md5 == creds.ha1_sha256 == ""
    assert verify(creds, "pw")  # SCRAM, PLAIN and HTTP Basic are unaffected
    assert derive("bob", "example.org", "pw").ha1_md5 == ha1("md5", "bob", "example.org", "pw")


def test_digest_off_refuses_register_and_message_with_403(sip_server):
    server = sip_server(digest=False)
    server.core.add_account("alice", "secret")
    assert accounts.credentials(server.core.db, "alice").ha1_md5 == ""  # no HA1 kept to steal
    client = server.client()
    for request in (client.request("REGISTER", headers=[("Contact", "<sip:alice@192.0.2.1>")]),
                    client.request("MESSAGE", uri="sip:alice@example.com", body=b"x",
                                   headers=[("Content-Type", "text/plain")])):
        refused = client.ask(request)
        assert refused.status == 403, request.method
        assert refused.reason == "SIP digest authentication is disabled on this server"
        assert "WWW-Authenticate" not in refused.headers
        assert "Proxy-Authenticate" not in refused.headers
