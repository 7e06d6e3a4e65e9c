"""Digest authentication of requests against the account database (RFC 3261 §22, RFC 8760).

The registrar challenges with ``401``/``WWW-Authenticate``, a proxy-like element (MESSAGE, calls)
with ``407``/``Proxy-Authenticate`` (§22.3), one challenge per algorithm of
``digest_algorithms`` in that order (RFC 8760 §2.4). The default is MD5 alone, as in Kamailio,
Asterisk and FreeSWITCH: baresip 1.0 gives up on any 401/407 that carries a SHA-256 challenge, and
sipsak 0.9.8 and SIPp 3.6 refuse one that comes first (measured: docs/sip.md). The realm is the
domain; the HA1 values stored at
password-set time are the secrets (:mod:`convergence.credentials`) and are cached until the account
changes. A source address that sends ``failures`` wrong credentials within ``window`` seconds is
answered ``403`` without verification until the window ends (no SIP status means "too many
requests" here: RFC 6585's 429 is HTTP's, SIP's 429 is RFC 3892's Referrer error), so a password
guesser is stopped cheaply while users elsewhere keep authenticating. With ``digest = false``
every request that needs authentication gets ``403`` (no HA1 is stored to check it against).
"""
from __future__ import annotations

from functools import lru_cache

from convergence import AddressError
from convergence.ratelimit import FailureLimiter
from convergence.store import accounts

from .digest import DigestError, DigestServer, Rejected, parse_credentials

WRONG_PASSWORD = "wrong username or password"  # digest.DigestServer.verify's reason


class Authenticator:
    def __init__(self, core, settings: dict, clock):
        self.core, self.now = core, clock.monotonic
        self.digest = DigestServer(core.domain, settings["nonce_lifetime"])
        self.limiter = FailureLimiter(settings["auth_failures"], settings["auth_failure_window"],
                                      what="SIP digest")
        self.algorithms = settings["digest_algorithms"]  # offered in this order
        self.enabled = settings["digest"]
        self._ha1: dict[str, tuple[str, str] | None] = {}  # account → (MD5, SHA-256) HA1
        self._account = lru_cache(maxsize=1024)(self._normalized)  # the same few usernames

    def _normalized(self, username: str) -> str | None:
        """The account name a digest username means (RFC 7622 localpart), or None."""
        try:
            return self.core.address(username).local
        except AddressError:
            return None

    def forget(self, name: str) -> None:
        """The account changed (password, deletion): read its HA1 again next time."""
        self._ha1.pop(name, None)

    def _ha1_of(self, username: str, algorithm: str) -> str | None:
        name = self._account(username)
        if name is None:
            return None
        if name not in self._ha1:
            creds = accounts.credentials(self.core.db, name)
            self._ha1[name] = creds and (creds.ha1_md5, creds.ha1_sha256)
        known = self._ha1[name]
        return known and known[algorithm == "SHA-256"]

    def authenticate(self, st, proxy: bool) -> str | None:
        """The account name the request's credentials prove, or None once it has been answered
        (challenge, or 403 for a blocked source). ``proxy`` picks 407 over 401 (§22.3)."""
        if not self.enabled:
            st.respond(403, "SIP digest authentication is disabled on this server")
            return None
        request, now = st.request, self.now()
        source = st.flow.peer[0]
        if self.limiter.blocked(source, now):
            st.respond(403, "Too many failed authentication attempts")
            return None
        value = request.headers.get("Proxy-Authorization" if proxy else "Authorization")
        stale = False
        if value is not None:
            try:
                params = parse_credentials(value)
            except DigestError:
                params = None  # another scheme (RFC 4475 §3.3.7): challenge with ours
            if params is not None and params.get("algorithm", "MD5").upper() not in self.algorithms:
                params = None  # not one we offer: challenge again
            if params is not None:
                result = self.digest.verify(params, request.method, self._ha1_of, now)
                if not isinstance(result, Rejected):
                    return self._account(result.username)  # known: it had an HA1
                stale = result.stale
                if result.reason == WRONG_PASSWORD:  # not stale nonces, nor ones from before a
                    # restart: only what guesses a password counts
                    self.limiter.failed(source, now, params.get("username"))
        name = "Proxy-Authenticate" if proxy else "WWW-Authenticate"
        st.respond(407 if proxy else 401, headers=[
            (name, challenge) for challenge in self.digest.challenges(now, stale, self.algorithms)])
        return None
