"""SIP: registrar, MESSAGE, presence (SUBSCRIBE/NOTIFY, PUBLISH) and a stateful proxy for calls
over UDP, TCP and TLS (RFC 3261, 3428, 3856, 3903, 6665).

The ``[sip]`` table configures it (docs/sip.md). Module level: the settings, and the secrets
digest needs at password-set time (``password_secrets``), both read from the configuration only.
``on_startup`` builds the element for that core, a :class:`~.server.SipServer` registered on the
core's plugin manager as ``sip:server``; it takes the other hooks (listeners, account changes,
shutdown).
"""
from __future__ import annotations

from pathlib import Path

from convergence import hookimpl
from convergence.config import (Option, Section, listen_address, optional_listen_address, positive_int,
                                positive_number)
from convergence.listeners import connection_limit_options

from .digest import ALGORITHMS
from .server import SipServer
from .transaction import Timing
from .transport import Clock


def digest_algorithms(value) -> list[str]:
    if (not isinstance(value, list) or not value
            or not all(isinstance(v, str) and v.upper() in ALGORITHMS for v in value)):
        raise ValueError(f"expected a list of {' and '.join(ALGORITHMS)}")
    return [v.upper() for v in dict.fromkeys(value)]


@hookimpl
def add_config_section():
    return Section("sip", {
        "listen": Option("0.0.0.0:5060", "UDP and TCP address of the SIP listener", listen_address),
        "tls_listen": Option("", "TLS address of the SIP listener (off when empty)",
                             optional_listen_address),
        "tls_cert": Option("", "TLS certificate file (PEM); empty: the shared generated one"),
        "tls_key": Option("", "TLS private key file (PEM)"),
        "aliases": Option([], "other host names and addresses that mean this domain in SIP URIs"),
        "advertised_host": Option("", "host put in Via and Record-Route (default: the listen "
                                      "address, or the domain when listening on all addresses)"),
        "max_message_size": Option(65535, "largest SIP message accepted, in bytes (else 513)",
                                   positive_int),
        "min_expires": Option(60, "shortest registration accepted, in seconds (else 423)",
                              positive_int),
        "max_expires": Option(3600, "longest registration granted, in seconds", positive_int),
        "default_expires": Option(3600, "registration time when the client names none",
                                  positive_int),
        "digest_algorithms": Option(["MD5"], "digest algorithms offered, in order (RFC 8760); "
                                    "MD5 alone by default: stock phones fail on any SHA-256 "
                                    "challenge (docs/sip.md)", digest_algorithms),
        "digest": Option(True, "SIP digest authentication; false: refused with 403, and no "
                               "password-equivalent HA1 is stored when a password is set"),
        "nonce_lifetime": Option(300, "seconds a digest nonce stays valid", positive_int),
        "auth_failures": Option(10, "wrong credentials accepted per source address per window "
                                    "before it is refused with 403", positive_int),
        "auth_failure_window": Option(60, "seconds of that window", positive_int),
        "message_timeout": Option(32.0, "seconds a TCP/TLS peer may take to finish a message it "
                                        "started (64*T1)", positive_number),
        "idle_timeout": Option(3600.0, "seconds a silent TCP/TLS connection is kept",
                               positive_number),
        "t1": Option(Timing.t1, "RFC 3261 timer T1 in seconds (round-trip estimate)",
                     positive_number),
        "t2": Option(Timing.t2, "RFC 3261 timer T2 in seconds (longest retransmission "
                                         "interval)",
                     positive_number),
        "presence_min_expires": Option(60, "shortest SUBSCRIBE or PUBLISH accepted, in seconds "
                                           "(else 423)", positive_int),
        "presence_max_expires": Option(3600, "longest SUBSCRIBE or PUBLISH granted, in seconds",
                                       positive_int),
        "max_subscriptions_per_account": Option(200, "presence subscriptions one account may "
                                                     "hold (else 403)", positive_int),
        "max_subscriptions_per_address": Option(2000, "presence subscriptions from one source "
                                                      "address (else 403)", positive_int),
        "max_publish_size": Option(8192, "largest PIDF body a PUBLISH may carry, in bytes "
                                         "(else 413)", positive_int),
        **connection_limit_options("SIP TCP/TLS"),
    }, "the SIP plugin: registrar, MESSAGE, presence and call proxy")


@hookimpl
def add_migrations():
    """Its table ``sip_bindings`` comes from the plugin's own Alembic branch ``sip``."""
    return Path(__file__).parent / "migrations"


@hookimpl
def on_startup(core):
    core.pm.register_plugin(SipServer(core, core.config["sip"], Clock()), "sip:server")


@hookimpl
def password_secrets(core):
    """The digest HA1 (RFC 3261 §22.4), unless ``[sip] digest = false``."""
    return ["digest"] if core.config["sip"]["digest"] else None
