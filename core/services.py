"""Service users: account-less addresses that answer messages (echo, the HTTP user, bots).

A plugin claims the address through ``resolve_recipient`` and returns a route; the route answers
with :func:`answer`, which goes back through the router, so the answer reaches the very endpoint
(XMPP resource, SIP phone, HTTP stream) the message came from, or the sender's offline store.
An ``error`` message is never answered (RFC 6120 §8.3.1): two services would loop forever.
"""
from __future__ import annotations

import logging

from .message import Message, RoutingError
from .router import DELIVERED

log = logging.getLogger(__name__)


def answer(core, message: Message) -> None:
    """Route a service user's answer (``reply()`` or ``failed()`` of what it received).

    A sender that cannot be reached for good is logged, not raised: their message did arrive.
    """
    try:
        core.send(message)
    except RoutingError as exc:
        log.info("%s could not answer %s: %s", message.sender, message.recipient, exc)


class EchoRoute:
    """Answer every message with the same body, subject, thread and type."""

    def __init__(self, core):
        self.core = core

    def deliver(self, message: Message) -> str:
        if message.type != "error":
            answer(self.core, message.reply())
        return DELIVERED
