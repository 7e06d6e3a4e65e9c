"""Where a peer domain's XMPP server listens (RFC 6120 §3.2): ``[xmpp] s2s_hosts`` overrides,
IP literals, DNS SRV ``_xmpp-server._tcp.<domain>`` in RFC 2782 order, else the domain itself on
port 5269. Answers are cached for their TTL (at least ``MIN_TTL``, at most ``MAX_TTL``).

``order`` (the RFC 2782 sort) is pure; :class:`Peers` does the lookup through a ``query(name)``
function it is given (the transport runs dnspython in gevent's thread pool so a slow resolver
never blocks the server).
"""
from __future__ import annotations

import ipaddress
import random
import time
from dataclasses import dataclass

DEFAULT_PORT = 5269
MIN_TTL, MAX_TTL = 60.0, 3600.0
NEGATIVE_TTL = 30.0  # how long "no such domain" is remembered


class NoSuchDomain(Exception):
    """RFC 6120 §3.2.1: the domain has no SRV record, no address, or says "." (no service)."""


@dataclass(frozen=True, slots=True)
class Srv:
    priority: int
    weight: int
    port: int
    target: str


def order(records, rng: random.Random | None = None) -> list[tuple[str, int]]:
    """RFC 2782: by priority ascending; within a priority, a weighted random order (weight 0
    entries have a small chance, RFC 2782 "Usage rules")."""
    rng = rng or random.Random()
    result = []
    for priority in sorted({r.priority for r in records}):
        group = [r for r in records if r.priority == priority]
        group.sort(key=lambda r: r.weight)  # zero weights first, as RFC 2782 asks
        while group:
            total = sum(r.weight for r in group)
            pick = rng.uniform(0, total) if total else 0
            running = 0
            for index, record in enumerate(group):
                running += record.weight
                if running >= pick:
                    break
            record = group.pop(index)
            result.append((record.target.rstrip("."), record.port))
    return result


def parse_host(text: str) -> tuple[str, int]:
    """``"host:port"``, ``"[v6]:port"`` or ``"host"`` (port 5269)."""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else DEFAULT_PORT
    host, sep, port = text.rpartition(":")
    if sep and port.isdigit() and ":" not in host:
        return host, int(port)
    return text, DEFAULT_PORT


def _ip_literal(domain: str) -> bool:
    try:
        ipaddress.ip_address(domain.strip("[]"))
        return True
    except ValueError:
        return False


class Peers:
    """Addresses to try for a domain, cached (one per core: the XMPP plugin's federation)."""

    def __init__(self, overrides: dict[str, tuple[str, int]], query, clock=time.monotonic):
        self.overrides = overrides
        self.query = query  # name -> (list of Srv, ttl); raises NoSuchDomain / OSError
        self.clock = clock
        self._cache: dict[str, tuple[float, list | None]] = {}

    def targets(self, domain: str) -> list[tuple[str, int]]:
        """Where to connect for ``domain``, in order; NoSuchDomain when DNS says there is none."""
        if domain in self.overrides:
            return [self.overrides[domain]]
        if _ip_literal(domain):
            return [(domain.strip("[]"), DEFAULT_PORT)]
        now = self.clock()
        cached = self._cache.get(domain)
        if cached is None or cached[0] <= now:
            try:
                records, ttl = self.query(f"_xmpp-server._tcp.{domain}")
                cached = (now + min(MAX_TTL, max(MIN_TTL, ttl)), records)
            except NoSuchDomain:
                cached = (now + NEGATIVE_TTL, None)
            self._cache[domain] = cached
        records = cached[1]
        if records is None:
            return [(domain, DEFAULT_PORT)]  # no SRV: the domain's own A/AAAA (§3.2.2)
        if len(records) == 1 and records[0].target.rstrip(".") == "":
            raise NoSuchDomain(f"{domain} offers no XMPP server-to-server service (SRV target '.')")
        return order(records)


def dns_query(name: str) -> tuple[list[Srv], float]:
    """SRV records of ``name`` with dnspython: (records, ttl); NoSuchDomain if there are none."""
    import dns.exception
    import dns.resolver
    try:
        answer = dns.resolver.resolve(name, "SRV", lifetime=10.0)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer, dns.resolver.NoNameservers) as exc:
        raise NoSuchDomain(str(exc)) from None
    except dns.exception.DNSException as exc:
        raise OSError(f"DNS lookup of {name} failed: {exc}") from None
    records = [Srv(r.priority, r.weight, r.port, r.target.to_text()) for r in answer]
    return records, float(answer.rrset.ttl if answer.rrset is not None else MIN_TTL)
