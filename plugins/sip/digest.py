"""Sans-IO SIP digest authentication (RFC 3261 §22, RFC 7616 §3, RFC 8760).

Rules: no I/O; time comes in as an argument. The server offers one challenge per configured
algorithm, in the configured order (RFC 8760 §2.4), with ``qop="auth"``; it checks responses against the HA1 values stored at password-set
time (:mod:`convergence.credentials`), never a password. Nonces are stateless and signed
(HMAC-SHA-256 over issue time, a random per-server tag and a counter, so a forged or foreign nonce
is refused); they expire after ``lifetime`` seconds (answered with ``stale=true``, RFC 7616
§3.3); each (nonce, nc) pair is accepted once, so a captured request cannot be replayed (RFC 7616
§3.4 nonce-count).
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import os
import re
import struct
from dataclasses import dataclass
from functools import lru_cache
from types import MappingProxyType

#: RFC 8760 §2.1 algorithm names → hashlib names, in the order challenges are offered.
ALGORITHMS = MappingProxyType({"SHA-256": "sha256", "MD5": "md5"})

_ESCAPE = re.compile(r"\\(.)")  # quoted-pair
# Possessive repeats, matched only where the previous one ended: linear in the header's length (a
# finditer scan retried from every position and cost 409 ms for one 8 KB header).
_PARAM = re.compile(r'\s*+([A-Za-z0-9_-]++)\s*+=\s*+("[^"\\]*+(?:\\.[^"\\]*+)*+"|[^\s,"]++)\s*+(?:,|$)')
_NC = re.compile(r"[0-9a-fA-F]{8}")
_NEEDED_ORDER = ("username", "realm", "nonce", "uri", "response", "qop", "nc", "cnonce")
_NEEDED = frozenset(_NEEDED_ORDER)
_BODY = struct.Struct(">d4sQ")  # a nonce's signed body: issue time, instance tag, counter


class DigestError(ValueError):
    """The Authorization header cannot be parsed; the message says why."""


def parse_credentials(value: str) -> dict[str, str]:
    """RFC 3261 §25.1 ``credentials``: ``Digest`` followed by comma-separated auth-params.

    Names are lower-cased; quoted values are unquoted (``\\"`` escapes undone).
    """
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest":
        raise DigestError(f"unsupported authentication scheme {scheme!r}")
    params, pos = {}, 0
    rest = rest.strip()
    while pos < len(rest) and (match := _PARAM.match(rest, pos)):  # each where the last one ended
        name, raw = match.groups()
        name = name.lower()
        if name in params:
            raise DigestError(f"duplicate auth-param {name!r}")
        if raw[0] == '"':
            raw = raw[1:-1]
            raw = _ESCAPE.sub(r"\1", raw) if "\\" in raw else raw
        params[name] = raw
        pos = match.end()
    if pos < len(rest):
        raise DigestError(f"malformed auth-param at {rest[pos:pos + 20]!r}")
    return params


def response(algorithm: str, ha1: str, nonce: str, nc: str, cnonce: str, qop: str, method: str,
             uri: str) -> str:
    """RFC 7616 §3.4.1 with qop=auth: KD(HA1, nonce:nc:cnonce:qop:H(method:uri))."""
    h = ALGORITHMS[algorithm]
    return hashlib.new(h, f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{_ha2(h, method, uri)}".encode()
                       ).hexdigest()


@lru_cache(maxsize=256)  # a phone signs the same few method:uri pairs again and again
def _ha2(h: str, method: str, uri: str) -> str:
    """RFC 7616 §3.4.3 A2 for qop=auth, hashed: H(method:uri)."""
    return hashlib.new(h, f"{method}:{uri}".encode()).hexdigest()


@dataclass(frozen=True)
class Verified:
    username: str


@dataclass(frozen=True)
class Rejected:
    """Answer with a new challenge; ``stale`` means only the nonce was old (RFC 7616 §3.3)."""

    reason: str
    stale: bool = False


class DigestServer:
    """Issues challenges and verifies responses for one realm."""

    def __init__(self, realm: str, lifetime: float = 300.0, secret: bytes | None = None):
        self.realm = realm
        self.lifetime = lifetime
        self.secret = secret or os.urandom(32)
        self._seen: dict[str, tuple[float, set[str]]] = {}  # nonce -> (issued, nc values used)
        self._pruned = float("-inf")  # when expired nonces were last dropped
        self._signed = realm.encode()  # what the MAC covers besides the nonce body
        self._instance = os.urandom(4)  # with the issue time and a counter: unique nonces
        self._count = itertools.count()

    def nonce(self, now: float) -> str:
        """Issue time, this server's random instance tag and a counter (unique without a
        ``getrandom`` call per nonce), then their MAC: unforgeable without ``secret``."""
        body = _BODY.pack(now, self._instance, next(self._count))
        mac = hmac.digest(self.secret, body + self._signed, "sha256")[:16]
        return base64.urlsafe_b64encode(body + mac).decode().rstrip("=")

    def challenges(self, now: float, stale: bool = False,
                   algorithms: tuple[str, ...] | list[str] = tuple(ALGORITHMS)) -> list[str]:
        """``WWW-Authenticate``/``Proxy-Authenticate`` values, one per algorithm in the order
        given (by default SHA-256 first, RFC 8760 §2.4), sharing one nonce."""
        nonce = self.nonce(now)
        extra = ", stale=true" if stale else ""
        return [f'Digest realm="{self.realm}", nonce="{nonce}", algorithm={name}, qop="auth"{extra}'
                for name in algorithms]

    def _issued(self, nonce: str) -> float | None:
        """The issue time of a nonce we signed, or None. A nonce that already verified a request
        is in ``_seen`` with its time (its MAC was checked then): no base64 nor MAC again."""
        seen = self._seen.get(nonce)
        if seen is not None:
            return seen[0]
        try:
            raw = base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4))
        except ValueError:
            return None
        body, mac = raw[:-16], raw[-16:]
        expected = hmac.digest(self.secret, body + self._signed, "sha256")[:16]
        if len(body) != _BODY.size or not hmac.compare_digest(mac, expected):
            return None
        return _BODY.unpack(body)[0]

    def verify(self, params: dict[str, str], method: str, ha1_of, now: float) -> Verified | Rejected:
        """Check parsed credentials for a request with ``method``.

        ``ha1_of(username, algorithm)`` returns the stored HA1 hex string or None.
        """
        if not params.keys() >= _NEEDED:
            missing = [p for p in _NEEDED_ORDER if p not in params]
            return Rejected(f"missing {', '.join(missing)} (qop=auth is required)")
        algorithm = params.get("algorithm", "MD5").upper()
        if algorithm not in ALGORITHMS:
            return Rejected(f"unsupported algorithm {algorithm}")
        if params["realm"] != self.realm:
            return Rejected(f"realm must be {self.realm}")
        if params["qop"] != "auth" or not _NC.fullmatch(params["nc"]):
            return Rejected("qop must be auth with an 8-digit hex nc")
        issued = self._issued(params["nonce"])
        if issued is None:
            return Rejected("nonce was not issued here")
        self._forget_expired(now)
        ha1 = ha1_of(params["username"], algorithm)
        expected = ha1 and response(algorithm, ha1, params["nonce"], params["nc"], params["cnonce"],
                                    params["qop"], method, params["uri"])
        if not expected or not hmac.compare_digest(expected, params["response"].lower()):
            return Rejected("wrong username or password")
        if now - issued > self.lifetime:
            return Rejected("nonce expired", stale=True)
        used = self._seen.setdefault(params["nonce"], (issued, set()))[1]
        if params["nc"].lower() in used:
            return Rejected("nonce count replayed", stale=True)
        used.add(params["nc"].lower())
        return Verified(params["username"])

    def _forget_expired(self, now: float) -> None:
        """Drop the records of expired nonces; a scan at most every tenth of a lifetime, not on
        every request (thousands of nonces are alive under load)."""
        if now - self._pruned < self.lifetime / 10:
            return
        self._pruned = now
        for nonce in [n for n, (issued, _) in self._seen.items() if now - issued > self.lifetime]:
            del self._seen[nonce]
