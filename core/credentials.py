"""Password-derived secrets; the password itself is never stored.

- SCRAM-SHA-1 and SCRAM-SHA-256 (RFC 5802 §3, RFC 7677): one salt and iteration count,
  ``StoredKey``/``ServerKey`` per hash. PLAIN and HTTP Basic verify against the SHA-256 set.
- SIP digest HA1 = H(username:realm:password) for MD5 and SHA-256 (RFC 8760 §2, RFC 7616 §3.4.2),
  unless ``digest=False``: HA1 is password-equivalent for digest and a fast hash to guess
  passwords from, so it is left empty (``""``) where no digest client needs it.
Passwords are SASLprep'ed (RFC 4013) first, as SCRAM clients do. Pure functions, no I/O.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import stringprep
import unicodedata
from dataclasses import dataclass

DEFAULT_ITERATIONS = 4096  # RFC 7677 §4 minimum for SCRAM-SHA-256


class PasswordError(ValueError):
    """The password cannot be used; the message says why."""


def saslprep(password: str) -> str:
    """RFC 4013 §2: map, NFKC-normalize, refuse prohibited and mixed-direction text."""
    mapped = "".join(" " if stringprep.in_table_c12(ch) else ch
                     for ch in password if not stringprep.in_table_b1(ch))
    text = unicodedata.normalize("NFKC", mapped)
    if not text:
        raise PasswordError("password is empty")
    prohibited = (stringprep.in_table_c12, stringprep.in_table_c21_c22, stringprep.in_table_c3,
                  stringprep.in_table_c4, stringprep.in_table_c5, stringprep.in_table_c6,
                  stringprep.in_table_c7, stringprep.in_table_c8, stringprep.in_table_c9)
    for ch in text:
        if any(table(ch) for table in prohibited):
            raise PasswordError(f"password contains prohibited character U+{ord(ch):04X}")
    if any(stringprep.in_table_d1(ch) for ch in text):
        if any(stringprep.in_table_d2(ch) for ch in text) or not (
                stringprep.in_table_d1(text[0]) and stringprep.in_table_d1(text[-1])):
            raise PasswordError("password mixes right-to-left and left-to-right text")
    return text


@dataclass(frozen=True)
class ScramKeys:
    stored_key: bytes
    server_key: bytes


@dataclass(frozen=True)
class Credentials:
    """Everything the server keeps about a password."""

    salt: bytes
    iterations: int
    sha1: ScramKeys
    sha256: ScramKeys
    realm: str
    ha1_md5: str
    ha1_sha256: str


def scram_keys(hash_name: str, password: str, salt: bytes, iterations: int) -> ScramKeys:
    """RFC 5802 §3: SaltedPassword = Hi(password, salt, i); StoredKey = H(HMAC(SP, "Client Key"))."""
    salted = hashlib.pbkdf2_hmac(hash_name, password.encode(), salt, iterations)
    client_key = hmac.digest(salted, b"Client Key", hash_name)
    return ScramKeys(hashlib.new(hash_name, client_key).digest(),
                     hmac.digest(salted, b"Server Key", hash_name))


def ha1(hash_name: str, username: str, realm: str, password: str) -> str:
    """RFC 7616 §3.4.2: HA1 = H(username ":" realm ":" password), hex."""
    return hashlib.new(hash_name, f"{username}:{realm}:{password}".encode()).hexdigest()


def derive(username: str, realm: str, password: str, iterations: int = DEFAULT_ITERATIONS,
           salt: bytes | None = None, digest: bool = True) -> Credentials:
    """Derive every stored secret for ``username`` in ``realm`` (CPU: two PBKDF2 runs); the
    digest HA1 values only with ``digest``."""
    prepared = saslprep(password)
    salt = salt or os.urandom(16)
    return Credentials(salt, iterations,
                       scram_keys("sha1", prepared, salt, iterations),
                       scram_keys("sha256", prepared, salt, iterations),
                       realm, ha1("md5", username, realm, password) if digest else "",
                       ha1("sha256", username, realm, password) if digest else "")


def verify(credentials: Credentials, password: str) -> bool:
    """Check a plaintext password (SASL PLAIN, HTTP Basic) against the SCRAM-SHA-256 keys, or the
    SCRAM-SHA-1 keys of an account imported with those alone (Prosody stores only SHA-1)."""
    try:
        prepared = saslprep(password)
    except PasswordError:
        return False
    name, stored = (("sha256", credentials.sha256) if credentials.sha256.stored_key
                    else ("sha1", credentials.sha1))
    if not stored.stored_key:
        return False
    keys = scram_keys(name, prepared, credentials.salt, credentials.iterations)
    return hmac.compare_digest(keys.stored_key, stored.stored_key)
