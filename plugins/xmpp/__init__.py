"""XMPP: client-to-server streams (RFC 6120/6121).

Skeleton: only the ``[xmpp]`` table is declared so far; the stream core, SASL, roster and presence
arrive with the XMPP issue. See docs/plugins.md for how it will use the core's hooks.
"""
from convergence import hookimpl
from convergence.config import Option, Section, listen_address


@hookimpl
def add_config_section():
    return Section("xmpp", {
        "listen": Option("0.0.0.0:5222", "address of the client-to-server listener", listen_address),
    }, "the XMPP plugin (not yet listening)")
