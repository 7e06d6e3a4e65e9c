"""IQ handlers by payload (RFC 6120 §8.2.3): one registry that the c2s session dispatches through.

A handler module declares what it answers with the ``handler`` decorator::

    @handler("{jabber:iq:roster}query", features=("jabber:iq:roster",))
    def roster(service, session, iq):  # -> reply element, or None when it answered itself
        ...

``features`` are the service discovery (XEP-0030) features the handler provides; ``before_auth``
handlers (in-band registration, XEP-0077) are also reached before SASL. A handler raises
``stanzas.StanzaError`` to answer with an error. An IQ nobody handles gets ``service-unavailable``
(RFC 6120 §8.4). No I/O here: handlers call the core.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Handler:
    func: Callable
    features: tuple[str, ...] = ()
    before_auth: bool = False
    to_server: bool = True    # answers IQs addressed to the server (to absent or the domain)
    to_account: bool = False  # answers IQs addressed to a bare account JID (vcard of a contact, …)


HANDLERS: dict[str, Handler] = {}


def handler(payload: str, *, features=(), before_auth=False, to_server=True, to_account=False):
    """Register the decorated function for IQs whose child is ``payload`` (``{ns}local``)."""
    def register(func):
        HANDLERS[payload] = Handler(func, tuple(features), before_auth, to_server, to_account)
        return func
    return register


def features() -> list[str]:
    """Every registered feature, for disco#info."""
    return sorted({f for h in HANDLERS.values() for f in h.features})
