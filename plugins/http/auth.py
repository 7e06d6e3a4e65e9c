"""Who is calling the API: HTTP Basic (RFC 7617) with the account's password, or a bearer token
(RFC 6750 §2.1) made with ``convergence token create``.

The Basic user name is the account's localpart or its bare JID. Failures answer 401 with a
challenge for both schemes (RFC 7235 §4.1); failed attempts count per source address
(``[http] login_failures`` within ``login_failure_window`` seconds, as XMPP SASL and the SIP
registrar count theirs) and past the limit the source gets 429 until the window ends.
"""
from __future__ import annotations

import math
import time

from werkzeug.datastructures import Authorization

from convergence import Address, AddressError
from convergence.ratelimit import FailureLimiter

from . import tokens
from .errors import ApiError


class Authenticator:
    def __init__(self, core):
        self.core = core
        settings = core.config["http"]
        self.limiter = FailureLimiter(settings["login_failures"], settings["login_failure_window"],
                                      what="HTTP login")
        self.now = time.monotonic

    def account(self, authorization: Authorization | None, source: str) -> Address:
        """The account ``authorization`` proves, or ApiError 401 (429 for a throttled source)."""
        if self.limiter.blocked(source, self.now()):
            raise ApiError(429, "too many failed logins from this address; try again later",
                           {"Retry-After": str(math.ceil(self.limiter.window))})
        if authorization is None:
            raise self._refused("authentication required (HTTP Basic or a bearer token)")
        account = self._verify(authorization)
        if account is None:
            self.limiter.failed(source, self.now(), authorization.username)
            raise self._refused("wrong credentials", authorization.type == "bearer")
        return account

    def _verify(self, authorization: Authorization) -> Address | None:
        if authorization.type == "bearer":
            name = tokens.owner(self.core.db, authorization.token or "")
            return self.core.address(name) if name else None
        if authorization.type != "basic":
            return None
        username = authorization.username or ""
        try:
            account = Address.from_jid(username) if "@" in username else self.core.address(username)
        except AddressError:
            return None
        if account.domain != self.core.domain or account.resource or not account.local:
            return None
        return account if self.core.check_password(account.local, authorization.password or "") else None

    def _refused(self, message: str, bad_token: bool = False) -> ApiError:
        realm = f'realm="{self.core.domain}"'
        bearer = f'Bearer {realm}' + (', error="invalid_token"' if bad_token else "")
        return ApiError(401, message, {"WWW-Authenticate": f"Basic {realm}, {bearer}"})
