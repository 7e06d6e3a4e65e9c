"""SIP: registrar, MESSAGE and proxy over UDP/TCP (RFC 3261, RFC 3428).

Skeleton: only the ``[sip]`` table is declared so far; the listener, parser, transactions and
registrar arrive with the SIP issue. See docs/plugins.md for how it will use the core's hooks.
"""
from convergence import hookimpl
from convergence.config import Option, Section, listen_address


@hookimpl
def add_config_section():
    return Section("sip", {
        "listen": Option("0.0.0.0:5060", "UDP and TCP address of the SIP listener", listen_address),
    }, "the SIP plugin (not yet listening)")
