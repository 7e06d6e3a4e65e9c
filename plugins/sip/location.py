"""The location service (RFC 3261 §10.2, §16.5): which local account an address-of-record names,
the live bindings of each account, and the flow that reaches a binding.

The registrar writes the bindings (``add``/``remove``); messaging and the proxy only read them.
Each binding is a :class:`BindingEndpoint`: an endpoint of ``core.presence`` that the router hands
messages to, through the ``send`` function it was made with (messaging's). Where to reach a
binding: over TCP/TLS the connection it registered on while that is up (a phone behind NAT cannot
accept connections; RFC 5626 §5.3 in spirit); else, and always over UDP, the host, port and
transport of its contact URI (§19.1.1, no DNS SRV). Decisions only: flows come from ``flows``
(the :class:`~convergence.plugins.sip.transport.Transport`).
"""
from __future__ import annotations

import hashlib
from functools import lru_cache
from urllib.parse import unquote

from convergence import AddressError, Presence

from .message import ParseError, SipUri


class BindingEndpoint:
    """One registered contact of an account: an endpoint the router hands messages to."""

    protocol = "sip"

    def __init__(self, send, address, uri: str, params: str, flow_key: str, q: float | None,
                 call_id: str, cseq: int, expires: float, user_agent: str | None):
        self.send, self.address, self.uri, self.params = send, address, uri, params
        self.flow_key, self.q, self.call_id, self.cseq = flow_key, q, call_id, cseq
        self.expires, self.user_agent = expires, user_agent  # expires: monotonic deadline
        self.timer_at: float | None = None  # when its expiry timer fires
        self.presence = Presence()

    @property
    def peer(self) -> str:
        """Where the phone registered from (``udp:host:port``…), for the hub's log lines."""
        return self.flow_key

    def deliver(self, message) -> None:
        """RFC 3428 MESSAGE to the contact, in a client transaction (does not wait for it)."""
        self.send(self, message)

    def __repr__(self) -> str:
        return f"BindingEndpoint({self.address}, {self.uri})"


def resource(uri: str) -> str:
    """The endpoint resource of a contact: stable across restarts, distinct per contact."""
    return "sip-" + hashlib.blake2s(uri.encode(), digest_size=5).hexdigest()


class Location:
    """The live bindings of one server's accounts, and the flows that reach them."""

    def __init__(self, core, hosts: frozenset[str], flows):
        self.core, self.hosts, self.flows = core, hosts, flows
        self.aors: dict[str, dict[str, BindingEndpoint]] = {}  # account → contact URI → binding
        self.by_uri: dict[str, BindingEndpoint] = {}  # contact URI → binding (in-dialog routing)
        self.account_of = lru_cache(maxsize=1024)(self._account_of)  # each MESSAGE's From

    # -- addresses-of-record --
    def _account_of(self, uri: str) -> str | None:
        """The local account an AOR names, or None (``account_of``: cached by URI, as the answer
        depends on nothing else that changes)."""
        try:
            parsed = SipUri.parse(uri)
        except ParseError:
            return None
        if parsed.user is None or parsed.host not in self.hosts:
            return None
        try:
            return self.core.address(unquote(parsed.user)).local
        except AddressError:
            return None

    # -- bindings --
    def bindings(self, name: str) -> dict[str, BindingEndpoint]:
        """The bindings of an account by contact URI (read only; empty when it has none)."""
        return self.aors.get(name, {})

    def contacts(self, name: str) -> list[BindingEndpoint]:
        """The current bindings of an account, highest q first (§16.6 forking order)."""
        return sorted(self.aors.get(name, {}).values(), key=lambda ep: -(ep.q or 0.0))

    def binding_on(self, name: str, flow) -> BindingEndpoint | None:
        """The binding of ``name`` registered over ``flow``, if any (who sent a MESSAGE)."""
        key = flow.key
        return next((ep for ep in self.aors.get(name, {}).values() if ep.flow_key == key), None)

    def holds(self, name: str, endpoint: BindingEndpoint) -> bool:
        """Whether ``endpoint`` is still the account's binding for its contact URI."""
        return self.aors.get(name, {}).get(endpoint.uri) is endpoint

    def add(self, name: str, endpoint: BindingEndpoint) -> None:
        self.aors.setdefault(name, {})[endpoint.uri] = endpoint
        self.by_uri[endpoint.uri] = endpoint

    def remove(self, name: str, endpoint: BindingEndpoint) -> bool:
        """Remove the binding if it is still the account's one for its URI; whether it was."""
        if not self.holds(name, endpoint):
            return False
        table = self.aors[name]
        del table[endpoint.uri]
        if self.by_uri.get(endpoint.uri) is endpoint:
            del self.by_uri[endpoint.uri]
        if not table:
            del self.aors[name]
        return True

    # -- flows --
    def flow_for(self, endpoint: BindingEndpoint):
        """Where to reach a binding: the connection it registered on, else its contact URI."""
        if not endpoint.flow_key.startswith("udp:"):
            flow = self.flows.flow_of(endpoint.flow_key)
            if flow is not None:
                return flow
        return self.target_flow(endpoint.uri)

    def target_flow(self, uri: str):
        """A flow to the host, port and transport a SIP URI names (§19.1.1, no DNS SRV)."""
        try:
            parsed = SipUri.parse(uri)
        except ParseError:
            return None
        name = (parsed.params.get("transport") or ("tls" if parsed.scheme == "sips" else "udp"))
        return self.flows.flow(name.upper(), parsed.host.strip("[]"), parsed.port)
