"""The echo user: the reference plugin, and the one to copy when you write your own.

``echo@<domain>`` (the name is ``[echo] user``) is always available and answers every message with
the same body, subject, thread and type. It has no account and no protocol code: it claims its
address through ``resolve_recipient`` and replies through the router, so the answer goes back to
the very endpoint (XMPP resource, SIP phone, HTTP stream) the message came from.
"""
from convergence import Presence, hookimpl
from convergence.config import Option, Section
from convergence.services import EchoRoute


@hookimpl
def add_config_section():
    # Our table in the config file is [echo]; users may rename the service user.
    return Section("echo", {"user": Option("echo", "localpart of the echo service user")},
                   "the echo service user")


def echo_address(core):
    return core.address(core.config["echo"]["user"])


@hookimpl
def on_startup(core):
    # Always online: rosters show echo as available from the start.
    core.presence.set_service(echo_address(core), Presence())


@hookimpl
def on_shutdown(core):
    core.presence.set_service(echo_address(core), None)


@hookimpl(tryfirst=True)
def resolve_recipient(core, address):
    # Claim echo@<domain> (any resource); None lets the next plugin decide for other addresses.
    # A route is anything with deliver(message): EchoRoute (convergence.services, shared with the
    # HTTP user) answers through the router instead of delivering, and never answers an error.
    if address.bare == echo_address(core):
        return EchoRoute(core)
    return None
