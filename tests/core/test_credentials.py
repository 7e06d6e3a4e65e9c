import base64
import hashlib
import hmac

import pytest

from convergence.credentials import PasswordError, derive, ha1, saslprep, verify


def server_signature(keys, hash_name, auth_message):
    return base64.b64encode(hmac.digest(keys.server_key, auth_message.encode(), hash_name)).decode()


def test_scram_sha1_matches_rfc5802_example():  # RFC 5802 §5
    creds = derive("user", "x", "pencil", 4096, base64.b64decode("QSXCR+Q6sek8bf92"))
    auth = ("n=user,r=fyko+d2lbbFgONRv9qkxdawL,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,"
            "s=QSXCR+Q6sek8bf92,i=4096,c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j")
    assert server_signature(creds.sha1, "sha1", auth) == "rmF9pqV8S7suAoZWja4dJRkFsKQ="


def test_scram_sha256_matches_rfc7677_example():  # RFC 7677 §3
    creds = derive("user", "x", "pencil", 4096, base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ=="))
    auth = ("n=user,r=rOprNGfwEbeRWgbNEkqO,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
            "s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,c=biws,"
            "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0")
    assert server_signature(creds.sha256, "sha256", auth) == "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="


def test_digest_ha1_matches_rfc2617_example():  # RFC 2617 §3.5
    assert ha1("md5", "Mufasa", "testrealm@host.com", "Circle Of Life") == "939e7578ed9e3c518a452acee763bce9"
    creds = derive("Mufasa", "testrealm@host.com", "Circle Of Life")
    assert creds.ha1_md5 == "939e7578ed9e3c518a452acee763bce9"
    assert creds.ha1_sha256 == hashlib.sha256(b"Mufasa:testrealm@host.com:Circle Of Life").hexdigest()


def test_plain_password_verifies_against_scram_keys():
    creds = derive("bob", "localhost", "s3cret")
    assert verify(creds, "s3cret")
    assert not verify(creds, "s3cret ")
    assert not verify(creds, "")


def test_no_derived_value_contains_the_password():
    creds = derive("bob", "localhost", "hunter2hunter2")
    for value in vars(creds).values():
        assert b"hunter2" not in (value if isinstance(value, bytes) else str(value).encode())


def test_saslprep():  # RFC 4013 §3 examples
    assert saslprep("I\u00adX") == "IX"
    assert saslprep("\u00aa") == "a"
    assert saslprep("\u2168") == "IX"
    for bad in ("", "\u0007", "\u0627\u0031"):
        with pytest.raises(PasswordError):
            saslprep(bad)
