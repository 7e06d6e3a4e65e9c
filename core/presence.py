"""The presence hub: live endpoints per account and the account's combined availability.

Protocol plugins report endpoints coming and going (``login``/``logout`` for sessions,
``register``/``unregister`` for SIP bindings) and presence changes (``update``). The hub keeps the
endpoint table the router delivers to, fires ``on_login``/``on_logout``/``on_register``, and fires
``on_presence`` whenever an account's combined presence changes — the best of its endpoints, in
the RFC 6121 §4.7.2.1 ``show`` order. Service users (echo, the HTTP user) set theirs with
``set_service``. No I/O.
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from typing import Protocol

from .addresses import Address

log = logging.getLogger(__name__)

#: RFC 6121 §4.7.2.1 ``show`` values, most available first; None is plain "available".
SHOW_ORDER = ("chat", None, "away", "xa", "dnd")


@dataclass(frozen=True, slots=True)
class Presence:
    """Availability as RFC 6121 §4.7 describes it."""

    available: bool = True
    show: str | None = None
    status: str | None = None
    priority: int = 0

    def rank(self) -> tuple:
        return (self.available, self.priority >= 0, -SHOW_ORDER.index(self.show))


UNAVAILABLE = Presence(available=False)


class Endpoint(Protocol):
    """What a protocol plugin implements for each way an account is reachable.

    ``address`` is the account's address with a resource naming this endpoint (the XMPP resource,
    a tag per SIP binding or HTTP stream), unique within the account. ``protocol`` names the
    plugin's protocol (the bundled ones say xmpp, sip and http). ``deliver(message)`` hands a message to the peer
    and returns without waiting for it; it raises :class:`convergence.message.RoutingError` when
    the endpoint cannot take it right now. An endpoint may also have ``peer``, where it connects
    from (``(host, port)`` or text), which the hub names in its login and registration log lines.
    """

    address: Address
    protocol: str
    presence: Presence

    def deliver(self, message) -> None: ...

    # Optional (the router uses it when present; without it a message counts as handed on when
    # ``deliver`` returns): ``flush(timeout) -> bool`` waits until everything ``deliver`` took has
    # been handed to the transport (written to the socket), and is False when the connection went
    # away first or ``timeout`` seconds passed. The router waits on it between the messages of a
    # stored backlog and deletes a stored message only after it returned True (flow control), so
    # it must not wait on the greenlet that does the writing. An endpoint whose connection goes
    # away holding messages it took but did not write gives each to ``core.router.returned``
    # (after ``logout``), which stores it: a message is never acknowledged and then lost.


def _source(endpoint) -> str:
    """`` from <peer>`` for the log, when the endpoint says where it connects from (an optional
    ``peer`` attribute: ``(host, port)`` or a string such as a SIP flow)."""
    peer = getattr(endpoint, "peer", None)
    if isinstance(peer, tuple):
        peer = f"{peer[0]}:{peer[1]}"
    return f" from {peer}" if peer else ""


class PresenceHub:
    def __init__(self, core):
        self._core = core
        self._hook = core.hook
        self._endpoints: dict[Address, dict[str, Endpoint]] = {}
        self._services: dict[Address, Presence] = {}
        self._combined: dict[Address, Presence] = {}
        #: endpoints that came online since start, by protocol: logins and new SIP bindings
        #: (refreshes are not counted); read by the metrics (core/metrics.py)
        self.logins: Counter = Counter()
        #: the cluster (core/cluster.py), told of every change of this process's own endpoints
        #: (``changed(endpoint, present)``); None in a single process
        self.mirror = None

    # -- endpoints reported by protocol plugins --
    def login(self, endpoint: Endpoint) -> None:
        """A session endpoint came online (fires ``on_login``)."""
        log.info("login %s (%s)%s", endpoint.address, endpoint.protocol, _source(endpoint))
        self._add(endpoint)
        self._mirror(endpoint, True)
        self.logins[endpoint.protocol] += 1
        self._hook.on_login(core=self._core, account=endpoint.address.bare, endpoint=endpoint)
        self._recompute(endpoint.address.bare)

    def logout(self, endpoint: Endpoint) -> None:
        """A session endpoint went away (fires ``on_logout``); unknown endpoints are ignored."""
        if self._remove(endpoint):
            self._mirror(endpoint, False)
            log.info("logout %s (%s)", endpoint.address, endpoint.protocol)
            self._hook.on_logout(core=self._core, account=endpoint.address.bare, endpoint=endpoint)
            self._recompute(endpoint.address.bare)

    def register(self, endpoint: Endpoint, expires: int) -> None:
        """A SIP binding was added or refreshed for ``expires`` seconds (fires ``on_register``)."""
        if expires <= 0:
            return self.unregister(endpoint)
        if self.endpoint(endpoint.address) is not endpoint:  # new, not a refresh
            if not getattr(endpoint, "remote", False):  # another node counted it
                self.logins[endpoint.protocol] += 1
            log.info("registered %s (%s)%s for %d s", endpoint.address, endpoint.protocol,
                     _source(endpoint), expires)
        self._add(endpoint)
        self._mirror(endpoint, True)
        self._hook.on_register(core=self._core, account=endpoint.address.bare, endpoint=endpoint,
                               expires=expires)
        self._recompute(endpoint.address.bare)

    def unregister(self, endpoint: Endpoint) -> None:
        """A SIP binding was removed or expired (fires ``on_register`` with ``expires=0``)."""
        if self._remove(endpoint):
            self._mirror(endpoint, False)
            log.info("unregistered %s (%s)", endpoint.address, endpoint.protocol)
            self._hook.on_register(core=self._core, account=endpoint.address.bare,
                                   endpoint=endpoint, expires=0)
            self._recompute(endpoint.address.bare)

    def replace(self, endpoint: Endpoint, other: Endpoint) -> None:
        """``other``, with the same address, stands for ``endpoint`` from now on (a session that
        moved to another cluster node, core/cluster.py ``moved``): no ``on_logout`` nor
        ``on_login``, and ``on_presence`` only if the combined presence changed."""
        if self._remove(endpoint):
            self._add(other)
            self._recompute(other.address.bare)

    def update(self, endpoint: Endpoint) -> None:
        """``endpoint.presence`` changed (e.g. an XMPP client went ``away``)."""
        if self.endpoint(endpoint.address) is endpoint:
            self._mirror(endpoint, True)
        self._recompute(endpoint.address.bare)

    def set_service(self, address: Address, presence: Presence | None) -> None:
        """Set (or with None, clear) the presence of an account-less service user such as echo."""
        if presence is None:
            self._services.pop(address, None)
        else:
            self._services[address] = presence
        self._recompute(address)

    # -- queries --
    def endpoints(self, address: Address) -> list[Endpoint]:
        """The live endpoints of the account ``address.bare``, in the order they came."""
        return list(self._endpoints.get(address.bare, {}).values())

    def endpoint(self, address: Address) -> Endpoint | None:
        """The endpoint named by a full address, or None."""
        return self._endpoints.get(address.bare, {}).get(address.resource)

    def presence(self, address: Address) -> Presence:
        """The combined presence of an account or service user."""
        return self._combined.get(address.bare, UNAVAILABLE)

    def counts(self) -> dict[str, int]:
        """This process's live endpoints by protocol (for the metrics and ``convergence status``;
        not another cluster node's, which that node counts)."""
        return dict(Counter(e.protocol for e in self.own()))

    def own(self) -> list[Endpoint]:
        """Every live endpoint of this process (not another cluster node's)."""
        return [e for table in self._endpoints.values() for e in table.values()
                if not getattr(e, "remote", False)]

    def online(self) -> list[Address]:
        """Every account or service user that is available now."""
        return list(self._combined)

    # -- internals --
    def _mirror(self, endpoint: Endpoint, present: bool) -> None:
        """Tell the cluster of a change of this process's own endpoint (not of another node's:
        those come from the cluster, as endpoints with ``remote`` set)."""
        if self.mirror is not None and not getattr(endpoint, "remote", False):
            self.mirror.changed(endpoint, present)

    def _add(self, endpoint: Endpoint) -> None:
        self._endpoints.setdefault(endpoint.address.bare, {})[endpoint.address.resource] = endpoint

    def _remove(self, endpoint: Endpoint) -> bool:
        table = self._endpoints.get(endpoint.address.bare, {})
        if table.get(endpoint.address.resource) is not endpoint:
            return False
        del table[endpoint.address.resource]
        if not table:
            del self._endpoints[endpoint.address.bare]
        return True

    def _recompute(self, account: Address) -> None:
        candidates = [e.presence for e in self._endpoints.get(account, {}).values()]
        if account in self._services:
            candidates.append(self._services[account])
        best = max(candidates, key=Presence.rank, default=UNAVAILABLE)
        if not best.available:
            best = UNAVAILABLE
        if self._combined.get(account, UNAVAILABLE) == best:
            return
        if best.available:
            self._combined[account] = best
        else:
            self._combined.pop(account, None)
        self._hook.on_presence(core=self._core, account=account, presence=best)
