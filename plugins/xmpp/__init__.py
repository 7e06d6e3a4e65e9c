"""XMPP: a client-to-server service (RFC 6120/6121) on the core's router and presence hub.

``on_startup`` creates the :class:`~.service.C2SService`; ``add_listeners`` returns the STARTTLS
listener (``[xmpp] listen``) and the optional Direct TLS one (``tls_listen``). The core's
``on_presence`` hook, and ``on_register``/``on_login``/``on_logout`` for non-XMPP endpoints, go to
``presence.py``; ``on_account`` to ``roster.py`` (roster pushes) after ending the sessions of a
deleted account or a changed password (``ENDED_BY``); ``on_shutdown`` ends every session with a
``system-shutdown`` stream error. See docs/xmpp.md.
"""
from __future__ import annotations

from weakref import WeakKeyDictionary

from convergence import hookimpl
from convergence.config import (Option, Section, listen_address, one_of, optional_listen_address,
                                positive_int, positive_number)
from convergence.listeners import connection_limit_options

# Handler modules register their IQ payloads with iq.handler on import.
from . import discovery, messages, registration, roster, transport, vcard  # noqa: F401
from . import presence as xmpp_presence  # the on_presence hook's argument is called presence
from .service import C2SService

#: The service of each running core (tests run several cores in one process).
SERVICES: WeakKeyDictionary = WeakKeyDictionary()


@hookimpl
def add_config_section():
    return Section("xmpp", {
        "listen": Option("0.0.0.0:5222", "client-to-server listener (STARTTLS)", listen_address),
        "tls_listen": Option("", 'Direct TLS listener (XEP-0368), e.g. "0.0.0.0:5223"; "" is off',
                             optional_listen_address),
        "tls_cert": Option("", "PEM certificate file; empty: a self-signed one in data_dir/tls"),
        "tls_key": Option("", "PEM private key file of tls_cert"),
        "require_tls": Option(True, "refuse authentication before STARTTLS"),
        "max_stanza_size": Option(262144, "bytes per stanza; more is a policy-violation", positive_int),
        "max_queued": Option(1048576, "bytes waiting for a client that does not read before it is "
                             "disconnected", positive_int),
        "negotiation_timeout": Option(60.0, "seconds a connection may take from connect to bound "
                                      "resource", positive_number),
        "ping_interval": Option(300.0, "seconds of silence before the server pings a client "
                                "(XEP-0199)", positive_number),
        "ping_timeout": Option(60.0, "seconds to wait for the ping's answer before closing",
                               positive_number),
        "login_failures": Option(5, "failed logins per source address within login_failure_window "
                                 "before it is refused", positive_int),
        "login_failure_window": Option(60.0, "seconds over which login_failures count", positive_number),
        "resource_conflict": Option("replace", 'a resource already bound: "replace" ends the old '
                                    'session, "rename" gives the new one another resource',
                                    one_of("replace", "rename")),
        "shared_roster": Option(True, "every roster shows the domain's accounts and service users"),
        "allow_registration": Option(False, "in-band registration (XEP-0077)"),
        **connection_limit_options("XMPP"),
    }, "the XMPP plugin")


@hookimpl
def on_startup(core):
    SERVICES[core] = C2SService(core, core.config["xmpp"])


@hookimpl
def add_listeners(core):
    return transport.listeners(SERVICES[core])


@hookimpl
def on_presence(core, account, presence):
    service = SERVICES.get(core)
    if service is not None:
        xmpp_presence.account_changed(service, account, presence)


@hookimpl
def on_register(core, account, endpoint, expires):
    _endpoint_changed(core, account, endpoint)


@hookimpl
def on_login(core, account, endpoint):
    _endpoint_changed(core, account, endpoint)


@hookimpl
def on_logout(core, account, endpoint):
    _endpoint_changed(core, account, endpoint)


def _endpoint_changed(core, account, endpoint):
    """A SIP binding or HTTP stream came or went: XMPP watchers see it as a resource."""
    service = SERVICES.get(core)
    if service is not None and endpoint.protocol != "xmpp":
        xmpp_presence.account_changed(service, account)


#: RFC 6120 §4.9.3 stream errors for the sessions of a changed account: a deleted account is no
#: longer authorized (§4.9.3.12); a new password revokes the authentication of every stream, which
#: must negotiate again (§4.9.3.16 ``reset``), as Prosody does.
ENDED_BY = {"deleted": ("not-authorized", "the account was deleted"),
            "changed": ("reset", "the password was changed; log in again")}


@hookimpl
def on_account(core, account, change, endpoint):
    service = SERVICES.get(core)
    if service is None:
        return
    if change in ENDED_BY:  # the session that asked (in-band registration) is its handler's business
        for session in service.sessions(account):
            if session is not endpoint:
                session.close(*ENDED_BY[change])
    roster.account_changed(service, account, change)


@hookimpl
def on_shutdown(core):
    service = SERVICES.pop(core, None)
    if service is not None:
        service.shutdown()
