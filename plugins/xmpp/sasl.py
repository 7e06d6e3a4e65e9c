"""Sans-IO SASL server for XMPP (RFC 6120 §6): SCRAM-SHA-256, SCRAM-SHA-1 and PLAIN.

Rules: no I/O; payloads are the decoded bytes of ``<auth/>``/``<response/>`` (the stream layer does
base64). Each step returns a :class:`Challenge`, :class:`Success` or :class:`Failure` whose
``condition`` is an RFC 6120 §6.5 SASL failure. Credentials come from a lookup function (localpart →
:class:`convergence.credentials.Credentials` or None); nothing here sees a stored password.

SCRAM follows RFC 5802 §5 (RFC 7677 for SHA-256); unlike scramp we accept a GS2 authzid equal to
the authenticating account's own JID (some clients send one). Unknown users get a simulated
exchange (§5.1: a salt derived from a server secret) and fail only at the end, so accounts cannot be
enumerated. Channel binding (-PLUS) is not offered: CPython 3.11 has no tls-exporter (RFC 9266).
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import os
from dataclasses import dataclass
from types import MappingProxyType
from typing import Callable

from convergence.addresses import AddressError, normalize_localpart
from convergence.credentials import Credentials, verify

SCRAM_HASHES = MappingProxyType({"SCRAM-SHA-256": "sha256", "SCRAM-SHA-1": "sha1"})


@dataclass(frozen=True)
class Challenge:
    data: bytes


@dataclass(frozen=True)
class Success:
    username: str  # the normalized localpart that authenticated
    data: bytes = b""  # additional data with success (SCRAM server-final-message)


@dataclass(frozen=True)
class Failure:
    condition: str  # RFC 6120 §6.5: not-authorized, malformed-request, invalid-authzid, …
    text: str = ""


Step = Challenge | Success | Failure
Lookup = Callable[[str], Credentials | None]


def mechanisms(encrypted: bool, plain_without_tls: bool = False) -> list[str]:
    """Mechanisms to offer, strongest first; PLAIN only on an encrypted stream (RFC 6120 §13.8)."""
    return [*SCRAM_HASHES, *(["PLAIN"] if encrypted or plain_without_tls else [])]


def server(mechanism: str, lookup: Lookup, domain: str, secret: bytes = b""):
    """A server for ``mechanism``, or None if it is not one we implement (→ invalid-mechanism)."""
    if mechanism in SCRAM_HASHES:
        return ScramServer(SCRAM_HASHES[mechanism], lookup, domain, secret)
    if mechanism == "PLAIN":
        return PlainServer(lookup, domain)
    return None


def _authzid_ok(authzid: str, username: str, domain: str) -> bool:
    """An authzid may only name the account itself (RFC 6120 §6.3.8)."""
    return not authzid or authzid.lower() in (username, f"{username}@{domain}")


def _localpart(text: str) -> str | None:
    try:
        return normalize_localpart(text)
    except AddressError:
        return None


class PlainServer:
    """RFC 4616: ``[authzid] NUL authcid NUL passwd`` in one message."""

    def __init__(self, lookup: Lookup, domain: str):
        self.lookup, self.domain = lookup, domain

    def step(self, data: bytes | None) -> Step:
        if not data:
            return Challenge(b"")  # RFC 6120 §6.4.2: no initial response → empty challenge
        try:
            authzid, authcid, password = data.decode("utf-8").split("\0")
        except (UnicodeDecodeError, ValueError):
            return Failure("malformed-request", "PLAIN needs authzid NUL authcid NUL password")
        username = _localpart(authcid)
        creds = self.lookup(username) if username else None
        if creds is None or not verify(creds, password):
            return Failure("not-authorized", "wrong username or password")
        if not _authzid_ok(authzid, username, self.domain):
            return Failure("invalid-authzid", "you may only act as yourself")
        return Success(username)


def _attributes(message: str) -> list[tuple[str, str]]:
    pairs = []
    for part in message.split(","):
        if len(part) < 2 or part[1] != "=":
            raise ValueError(f"bad attribute {part[:10]!r}")
        pairs.append((part[0], part[2:]))
    return pairs


def _saslname(value: str) -> str:
    """RFC 5802 §5.1: ``=2C`` is ',' and ``=3D`` is '='; any other '=' is malformed."""
    if "=" in value.replace("=2C", "").replace("=3D", ""):
        raise ValueError("bad escape in saslname")
    return value.replace("=2C", ",").replace("=3D", "=")


class ScramServer:
    """RFC 5802 §5 server: client-first → server-first → client-final → server-final."""

    def __init__(self, hash_name: str, lookup: Lookup, domain: str, secret: bytes = b""):
        self.hash_name, self.lookup, self.domain = hash_name, lookup, domain
        self.secret = secret or os.urandom(32)
        self.state = "start"

    def step(self, data: bytes | None) -> Step:
        try:
            text = (data or b"").decode("utf-8")
        except UnicodeDecodeError:
            return Failure("incorrect-encoding", "SCRAM messages are UTF-8")
        try:
            if self.state == "start":
                return self._client_first(text) if text else Challenge(b"")
            if self.state == "sent-first":
                return self._client_final(text)
        except ValueError as exc:
            return Failure("malformed-request", str(exc))
        return Failure("malformed-request", "the SCRAM exchange is over")

    def _client_first(self, text: str) -> Step:
        cbind, _, rest = text.partition(",")
        authzid, _, bare = rest.partition(",")
        if cbind.startswith("p="):
            return Failure("malformed-request", "channel binding is not offered")
        if cbind not in ("n", "y") or (authzid and not authzid.startswith("a=")):
            raise ValueError("bad GS2 header")
        attrs = _attributes(bare)
        if len(attrs) < 2 or attrs[0][0] != "n" or attrs[1][0] != "r":
            raise ValueError("client-first-message needs n= then r=")
        self.gs2_header = f"{cbind},{authzid},"
        self.authzid = _saslname(authzid[2:]) if authzid else ""
        self.username = _localpart(_saslname(attrs[0][1]))
        self.creds = self.lookup(self.username) if self.username else None
        if self.creds is not None:
            salt, iterations = self.creds.salt, self.creds.iterations
        else:  # simulate a user (RFC 5802 §5.1) and fail at the end
            salt = hmac.digest(self.secret, attrs[0][1].encode(), "sha256")[:16]
            iterations = 4096
        self.nonce = attrs[1][1] + base64.b64encode(os.urandom(18)).decode()
        self.client_first_bare = bare
        self.server_first = f"r={self.nonce},s={base64.b64encode(salt).decode()},i={iterations}"
        self.state = "sent-first"
        return Challenge(self.server_first.encode())

    def _client_final(self, text: str) -> Step:
        self.state = "done"
        without_proof, _, proof_attr = text.rpartition(",")
        attrs = dict(_attributes(without_proof))
        if not proof_attr.startswith("p=") or "c" not in attrs or "r" not in attrs:
            raise ValueError("client-final-message needs c=, r= and p=")
        if base64.b64decode(attrs["c"], validate=True) != self.gs2_header.encode():
            return Failure("malformed-request", "channel binding data does not match the GS2 header")
        if attrs["r"] != self.nonce:
            return Failure("malformed-request", "nonce does not match")
        if self.creds is None:
            return Failure("not-authorized", "wrong username or password")
        keys = self.creds.sha256 if self.hash_name == "sha256" else self.creds.sha1
        auth_message = f"{self.client_first_bare},{self.server_first},{without_proof}".encode()
        signature = hmac.digest(keys.stored_key, auth_message, self.hash_name)
        proof = base64.b64decode(proof_attr[2:], validate=True)
        client_key = bytes(a ^ b for a, b in zip(proof, signature))
        if len(proof) != len(signature) or not hmac.compare_digest(
                hashlib.new(self.hash_name, client_key).digest(), keys.stored_key):
            return Failure("not-authorized", "wrong username or password")
        if not _authzid_ok(self.authzid, self.username, self.domain):
            return Failure("invalid-authzid", "you may only act as yourself")
        server_signature = hmac.digest(keys.server_key, auth_message, self.hash_name)
        return Success(self.username, b"v=" + base64.b64encode(server_signature))
