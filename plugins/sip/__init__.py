"""SIP: registrar, MESSAGE and a stateful proxy for calls over UDP, TCP and TLS (RFC 3261, 3428).

The ``[sip]`` table configures it (docs/sip.md). ``on_startup`` builds the element (dispatcher,
registrar, messaging, proxy) and restores the stored bindings; ``add_listeners`` returns the UDP,
TCP and optional TLS listeners; account changes drop cached digest secrets and deleted accounts'
bindings.
"""
from __future__ import annotations

import time

from convergence import hookimpl
from convergence.certificates import files, server_context
from convergence.config import (Option, Section, listen_address, optional_listen_address, positive_int,
                                positive_number)
from convergence.listeners import connection_limit_options

from . import transaction
from .digest import ALGORITHMS
from .dispatcher import Dispatcher
from .transport import Timers, Transport

_running: dict[int, Dispatcher] = {}  # id(core) → its SIP element
_DEFAULT_TIMERS = transaction.T1, transaction.T2  # the transaction module reads its globals


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
        "t1": Option(_DEFAULT_TIMERS[0], "RFC 3261 timer T1 in seconds (round-trip estimate)",
                     positive_number),
        "t2": Option(_DEFAULT_TIMERS[1], "RFC 3261 timer T2 in seconds (longest retransmission "
                                         "interval)",
                     positive_number),
        **connection_limit_options("SIP TCP/TLS"),
    }, "the SIP plugin: registrar, MESSAGE and call proxy")


@hookimpl
def on_startup(core):
    settings = core.config["sip"]
    transaction.T1, transaction.T2 = settings["t1"], settings["t2"]
    context = None
    if settings["tls_listen"]:
        context = server_context(*files(core.domain, core.config.data_dir, settings["tls_cert"],
                                        settings["tls_key"]))
    timers = Timers(time.monotonic)
    dispatcher = Dispatcher(core, settings, Transport(settings, context), timers, time.monotonic)
    _running[id(core)] = dispatcher
    dispatcher.registrar.restore()
    timers.start()


@hookimpl
def add_listeners(core):
    return _running[id(core)].transport.listeners()


@hookimpl
def password_secrets(core):
    """The digest HA1 (RFC 3261 §22.4), unless ``[sip] digest = false``."""
    return ["digest"] if core.config["sip"]["digest"] else None


@hookimpl
def on_account(core, account, change):
    dispatcher = _running.get(id(core))
    if dispatcher is not None:
        dispatcher.auth.forget(account.local)
        if change == "deleted":
            dispatcher.registrar.forget_account(account.local)


@hookimpl
def on_shutdown(core):
    dispatcher = _running.pop(id(core), None)
    if dispatcher is not None:
        dispatcher.registrar.flush()  # refreshes still waiting for their write and 200
        dispatcher.timers.stop()
    transaction.T1, transaction.T2 = _DEFAULT_TIMERS
