"""One account, one address: JIDs (RFC 7622) and SIP AORs (RFC 3261 §19.1) mapped per RFC 7247 §5.

``alice@example.org`` is the JID ``alice@example.org`` and the SIP AOR ``sip:alice@example.org``.
An optional resource names one endpoint of the account (an XMPP resource, a SIP binding, an HTTP
stream). Pure functions, no I/O.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from functools import lru_cache
from urllib.parse import quote, unquote

#: RFC 7622 §3.3.1: characters a localpart never contains (besides controls and spaces).
_LOCALPART_FORBIDDEN = frozenset("\"&'/:<>@")
#: RFC 3261 §25.1 user part: unreserved / user-unreserved; everything else is %-escaped (RFC 7247 §5.1).
_SIP_USER_SAFE = "-_.!~*'()&=+$,;?/"
_DOMAIN_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_SIP_URI = re.compile(r"^<?(sips?|xmpp|im|pres):([^;>?]*)", re.IGNORECASE)


class AddressError(ValueError):
    """The text is not a valid address; the message says why."""


@lru_cache(maxsize=4096)  # every message names the same few accounts and service users
def normalize_localpart(text: str) -> str:
    """RFC 7622 §3.3 (PRECIS UsernameCaseMapped, simplified): width/case map, NFC, forbidden chars."""
    if not text:
        raise AddressError("localpart is empty")
    local = unicodedata.normalize("NFC", unicodedata.normalize("NFKC", text).casefold())
    for ch in local:
        if ch in _LOCALPART_FORBIDDEN:
            raise AddressError(f"localpart {text!r} contains forbidden character {ch!r}")
        category = unicodedata.category(ch)
        if category[0] in "CZ":  # controls, format, unassigned, spaces, separators
            raise AddressError(f"localpart {text!r} contains a space or control character")
    if len(local.encode()) > 1023:
        raise AddressError("localpart is longer than 1023 bytes")
    return local


@lru_cache(maxsize=256)  # the same few domains
def normalize_domain(text: str) -> str:
    """RFC 7622 §3.2: a DNS domain name (lower-cased, IDNA) or an IP literal; no trailing dot."""
    domain = text.rstrip(".").lower()
    if domain.startswith("[") and domain.endswith("]"):
        return domain
    try:
        domain = domain.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise AddressError(f"domain {text!r} is not a valid domain name") from exc
    if not domain or len(domain) > 253 or not all(_DOMAIN_LABEL.match(p) for p in domain.split(".")):
        raise AddressError(f"domain {text!r} is not a valid domain name")
    return domain


@dataclass(frozen=True, slots=True)
class Address:
    """A normalized ``local@domain/resource`` address; ``local`` and ``resource`` are optional."""

    local: str | None
    domain: str
    resource: str | None = None
    #: ``bare``, made once: the router asks a message's addresses for it several times
    _bare: Address | None = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def parse(cls, text: str) -> Address:
        """Parse a JID, or a ``sip:``/``sips:``/``xmpp:``/``im:``/``pres:`` URI (RFC 7247 §5.2)."""
        text = text.strip()
        uri = _SIP_URI.match(text)
        if uri:
            scheme, rest = uri.group(1).lower(), uri.group(2)
            if scheme in ("sip", "sips"):
                return cls.from_sip(rest)
            text = rest
        return cls.from_jid(text)

    @classmethod
    def from_jid(cls, text: str) -> Address:
        """RFC 7622 §3.1: ``[localpart@]domainpart[/resourcepart]``."""
        bare, slash, resource = text.partition("/")
        local, at, domain = bare.rpartition("@")
        if slash and not resource:
            raise AddressError(f"{text!r}: empty resourcepart")
        if resource and len(resource.encode()) > 1023:
            raise AddressError(f"{text!r}: resourcepart is longer than 1023 bytes")
        if at and "@" in local:
            raise AddressError(f"{text!r}: more than one '@'")
        return cls(normalize_localpart(local) if at else None, normalize_domain(domain),
                   unicodedata.normalize("NFC", resource) if resource else None)

    @classmethod
    def from_sip(cls, userinfo_host: str) -> Address:
        """RFC 7247 §5.2: a SIP ``user@host`` (no scheme); %-escapes decoded, password and port dropped."""
        user, at, host = userinfo_host.rpartition("@")
        host = host.split(":", 1)[0] if not host.startswith("[") else host.split("]", 1)[0] + "]"
        user = user.split(":", 1)[0]
        return cls(normalize_localpart(unquote(user)) if at else None, normalize_domain(host))

    @property
    def bare(self) -> Address:
        """The account (RFC 6120 §1.4 bare JID): this address without its resource."""
        if not self.resource:
            return self
        if self._bare is None:
            object.__setattr__(self, "_bare", Address(self.local, self.domain))  # frozen: a cache only
        return self._bare

    def with_resource(self, resource: str | None) -> Address:
        return Address(self.local, self.domain, resource)

    @property
    def jid(self) -> str:
        """The JID as a string."""
        text = f"{self.local}@{self.domain}" if self.local else self.domain
        return f"{text}/{self.resource}" if self.resource else text

    @property
    def sip_uri(self) -> str:
        """RFC 7247 §5.1: ``sip:`` + %-escaped localpart + ``@`` + domain (the resource is dropped)."""
        if self.local is None:
            return f"sip:{self.domain}"
        return f"sip:{quote(self.local, safe=_SIP_USER_SAFE)}@{self.domain}"

    def __str__(self) -> str:
        return self.jid
