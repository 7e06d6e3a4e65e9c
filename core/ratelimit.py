"""Per-source failure limiting: many wrong passwords from one address get refused for a while.

Used by XMPP SASL (RFC 6120 §6.4.5 lets a server limit retries) and the SIP registrar, so that a
guessing client is slowed down while legitimate users from other addresses keep logging in. No I/O:
the caller passes its clock. Each failure is logged at ``info`` as one line naming the source
address (never the password), in one format for every protocol, for operators and fail2ban.
"""
from __future__ import annotations

import logging

log = logging.getLogger(__name__)


class FailureLimiter:
    """At most ``limit`` failures per key within ``window`` seconds; after that, ``blocked`` is true
    until the window that saw the first failure has passed. Memory stays bounded by ``max_keys``:
    when full, expired windows are dropped and, failing that, the oldest key."""

    def __init__(self, limit: int, window: float, max_keys: int = 100_000, what: str = "login"):
        self.what = what  # names the failures in the log: "XMPP login", "SIP digest", …
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        self._failures: dict[object, tuple[float, int]] = {}  # key -> (window start, count)
        self.failures = 0  # every failure counted since start (the metrics read it)

    def blocked(self, key, now: float) -> bool:
        entry = self._failures.get(key)
        if entry is None:
            return False
        start, count = entry
        if now - start >= self.window:
            del self._failures[key]
            return False
        return count >= self.limit

    def failed(self, key, now: float, account: str | None = None) -> None:
        """Count a failure from ``key`` (a source address) and log it, with the account it tried."""
        start, count = self._failures.get(key, (now, 0))
        if now - start >= self.window:
            start, count = now, 0
        elif key not in self._failures and len(self._failures) >= self.max_keys:
            self._prune(now)
        self._failures[key] = (start, count + 1)
        self.failures += 1
        log.info("%s failed from %s%s (%d in %g s%s)", self.what, key,
                 f" for {account!r}" if account else "", count + 1, self.window,
                 "; refusing this address for now" if count + 1 >= self.limit else "")

    def _prune(self, now: float) -> None:
        expired = [k for k, (start, _) in self._failures.items() if now - start >= self.window]
        for key in expired:
            del self._failures[key]
        if len(self._failures) >= self.max_keys:
            del self._failures[next(iter(self._failures))]
