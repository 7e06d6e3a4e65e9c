"""The echo user: the reference plugin, and the one to copy when you write your own.

``echo@<domain>`` (the name is ``[echo] user``) is always available and answers every message with
the same body, subject, thread and type. It has no account and no protocol code: it declares itself
a service user (``service_users``), claims its address through ``resolve_recipient`` with a route
(:class:`EchoRoute`) and replies through the router, so the answer goes back to the very endpoint
(XMPP resource, SIP phone, HTTP stream) the message came from.
"""
from convergence import Presence, hookimpl
from convergence.config import Option, Section
from convergence.router import DELIVERED
from convergence.services import answer


@hookimpl
def add_config_section():
    # Our table in the config file is [echo]; users may rename the service user.
    return Section("echo", {"user": Option("echo", "localpart of the echo service user")},
                   "the echo service user")


def echo_address(core):
    return core.address(core.config["echo"]["user"])


@hookimpl
def service_users(core):
    # Every account's shared roster lists echo, and echo approves every subscription request.
    return [echo_address(core)]


@hookimpl
def on_startup(core):
    # Always online: rosters show echo as available from the start.
    core.presence.set_service(echo_address(core), Presence())


@hookimpl
def on_shutdown(core):
    core.presence.set_service(echo_address(core), None)


class EchoRoute:
    """A route: anything with ``deliver(message)`` that returns ``"delivered"``, ``"stored"`` or
    ``"discarded"`` (or raises RoutingError). Echo answers instead of delivering."""

    def __init__(self, core):
        self.core = core

    def deliver(self, message):
        # Never answer an error (RFC 6120 §8.3.1): two services would answer each other forever.
        if message.type != "error":
            # answer() routes the reply and logs (never raises) when the sender is gone for good.
            answer(self.core, message.reply())
        return DELIVERED


@hookimpl(tryfirst=True)
def resolve_recipient(core, address):
    # Claim echo@<domain> (any resource); None lets the next plugin decide for other addresses.
    if address.bare == echo_address(core):
        return EchoRoute(core)
    return None
