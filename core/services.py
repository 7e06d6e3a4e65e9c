"""Service users: account-less addresses that answer messages (echo, the HTTP user, bots).

A plugin declares the address with the ``service_users`` hook, claims it through
``resolve_recipient`` and returns a route (the echo plugin's ``EchoRoute`` is the example to copy);
the route answers with :func:`answer`, which goes back through the router, so the answer reaches
the very endpoint (XMPP resource, SIP phone, HTTP stream) the message came from, or the sender's
offline store. A route never answers an ``error`` message (RFC 6120 §8.3.1): two services would
loop forever.
"""
from __future__ import annotations

import logging

from .message import Message, RoutingError

log = logging.getLogger(__name__)


def answer(core, message: Message) -> None:
    """Route a service user's answer (``reply()`` or ``failed()`` of what it received).

    A sender that cannot be reached for good is logged, not raised: their message did arrive.
    """
    try:
        core.send(message, "service")
    except RoutingError as exc:
        log.info("%s could not answer %s: %s", message.sender, message.recipient, exc)
