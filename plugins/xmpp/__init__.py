"""XMPP: a client-to-server service (RFC 6120/6121) on the core's router and presence hub.

This module holds only the stateless hooks: the ``[xmpp]`` settings, and ``on_startup``, which
builds the plugin's object for that core (:class:`~.server.XmppServer`, owning its
:class:`~.service.C2SService`) and registers it on the core's plugin manager as ``xmpp:server``;
that object takes the other hooks. See docs/xmpp.md.
"""
from __future__ import annotations

from pathlib import Path
from types import MappingProxyType

from convergence import AddressError, hookimpl
from convergence.addresses import normalize_domain
from convergence.config import (Option, Section, listen_address, non_negative_number, one_of,
                                optional_listen_address, positive_int, positive_number)
from convergence.listeners import connection_limit_options, networks

from .contract import share_roster  # noqa: F401 - a hook of this plugin
from .peers import parse_host
from . import upload
from .component import components_setting
from .server import XmppServer


def host_map(value) -> MappingProxyType:
    """``s2s_hosts``: a table of domain -> "host:port" (peers.parse_host)."""
    if not isinstance(value, dict) or not all(isinstance(v, str) and v for v in value.values()):
        raise ValueError('expected a table of domain = "host:port"')
    try:
        return MappingProxyType({normalize_domain(k): parse_host(v) for k, v in value.items()})
    except (AddressError, ValueError) as exc:
        raise ValueError(f'expected a table of domain = "host:port" ({exc})') from None


def non_negative_int(value) -> int:
    """``0`` (off) or a positive integer."""
    return 0 if value == 0 and not isinstance(value, bool) else positive_int(value)


def media_types(value) -> tuple[str, ...]:
    """``upload_content_types``: a list of media types like ``"image/png"`` (lower-cased)."""
    if not isinstance(value, list) or not all(isinstance(v, str) and upload.MEDIA_TYPE.fullmatch(v)
                                              for v in value):
        raise ValueError('expected a list of media types, e.g. ["image/png", "image/jpeg"]')
    return tuple(v.lower() for v in value)


def muc_domain_setting(value) -> str:
    """``muc_domain``: "" or a domain name, ``{domain}`` standing for ``[server] domain``."""
    if not isinstance(value, str):
        raise ValueError('expected a domain name such as "conference.{domain}", or ""')
    try:
        value and normalize_domain(value.replace("{domain}", "example.org"))
    except AddressError as exc:
        raise ValueError(f'expected a domain name such as "conference.{{domain}}", or "" ({exc})') from None
    return value


@hookimpl
def add_config_section():
    return Section("xmpp", {
        "listen": Option("0.0.0.0:5222", "client-to-server listener (STARTTLS)", listen_address),
        "tls_listen": Option("", 'Direct TLS listener (XEP-0368), e.g. "0.0.0.0:5223"; "" is off',
                             optional_listen_address),
        "tls_cert": Option("", "PEM certificate file; empty: a self-signed one in data_dir/tls"),
        "tls_key": Option("", "PEM private key file of tls_cert"),
        # ---- federation (server-to-server, RFC 6120; docs/xmpp.md "Federation") ----
        "s2s_listen": Option("0.0.0.0:5269", 'server-to-server listener; "" turns federation '
                             "off (other domains: remote-server-not-found)",
                             optional_listen_address),
        "s2s_hosts": Option({}, 'where peer domains listen, overriding DNS SRV: '
                            '{ "b.example" = "host:port" }', host_map),
        "s2s_require_encryption": Option(True, "server-to-server streams must use STARTTLS"),
        "s2s_secure_auth": Option(False, "peers must present a certificate valid for their domain "
                                  "(against s2s_ca_file or the system store); dialback alone is "
                                  "not enough"),
        "s2s_ca_file": Option("", "PEM trust anchors for peer certificates; empty: the system store"),
        "s2s_max_queued": Option(1000, "stanzas waiting per peer domain while its stream is set up",
                                 positive_int),
        "s2s_max_streams": Option(1000, "inbound server-to-server streams in total", positive_int),
        "s2s_max_streams_per_address": Option(20, "inbound server-to-server streams per source "
                                              "address", positive_int),
        "s2s_connect_timeout": Option(10.0, "seconds to wait for a peer's TCP connection",
                                      positive_number),
        "s2s_retry_window": Option(30.0, "seconds to keep retrying an unreachable peer (doubling "
                                   "pauses) before queued stanzas bounce", positive_number),
        "s2s_idle_timeout": Option(600.0, "seconds without a stanza before a server-to-server "
                                   "stream is closed", positive_number),
        "s2s_keepalive": Option(60.0, "seconds of silence before a whitespace keep-alive",
                                positive_number),
        # ---- external components (XEP-0114; docs/xmpp.md "Components") ----
        "component_listen": Option("", 'component listener (XEP-0114, no TLS: bind to loopback or '
                                   'a private network), e.g. "127.0.0.1:5347"; "" is off',
                                   optional_listen_address),
        "components": Option({}, 'component domains and their shared secrets: '
                             '{ "gateway.example.org" = "secret" }', components_setting),
        "component_max_streams": Option(100, "component streams open at once, negotiating or not",
                                        positive_int),
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
        "pep_max_item_size": Option(131072, "bytes of one PEP item's payload (XEP-0163; avatars "
                                    "included)", positive_int),
        "pep_max_items": Option(256, "items kept per PEP node (what max_items 'max' means)", positive_int),
        "pep_max_nodes": Option(256, "PEP nodes per account", positive_int),
        "private_max_size": Option(65536, "bytes of one private XML storage element (XEP-0049)",
                                   positive_int),
        "private_max_elements": Option(64, "private XML storage elements per account (XEP-0049)",
                                       positive_int),
        "resume_timeout": Option(300.0, "seconds a stream with XEP-0198 resumption waits for its "
                                 "client to resume it after its connection died", positive_number),
        "sm_max_unacked": Option(1000, "stanzas sent and not acknowledged (XEP-0198) before the "
                                 "session ends with resource-constraint", positive_int),
        "csi_max_held": Option(256, "presence updates and chat states held back for an inactive "
                               "client (XEP-0352) before they are sent anyway", positive_int),
        "blocklist_max_items": Option(1000, "JIDs one account may block (XEP-0191)", positive_int),
        "caps_cache_size": Option(1000, "verified entity capabilities remembered (XEP-0115)",
                                  positive_int),
        "upload_max_size": Option(10485760, "bytes of one file sent with HTTP File Upload "
                                  "(XEP-0363; needs the http plugin)", positive_int),
        "upload_quota": Option(1073741824, "bytes of uploaded files (and open slots) one account "
                               "keeps; 0: no quota", non_negative_int),
        "upload_slot_timeout": Option(300.0, "seconds an upload slot can be used for its PUT",
                                      positive_number),
        "upload_expiry": Option(7, "days an uploaded file is kept; 0: until deleted",
                                non_negative_number),
        "upload_content_types": Option([], 'media types accepted for upload, e.g. ["image/png"]; '
                                       "empty: any", media_types),
        # ---- group chat (XEP-0045; docs/xmpp.md "Group chat") ----
        "muc_domain": Option("conference.{domain}", 'the Multi-User Chat service\'s domain '
                             '({domain} is [server] domain); "" turns group chat off',
                             muc_domain_setting),
        "muc_max_rooms_per_user": Option(10, "rooms one user may own", positive_int),
        "muc_max_occupants": Option(200, "occupants per room (the ceiling of a room's max users)",
                                    positive_int),
        "muc_history_default": Option(20, "messages of history sent on joining when the client "
                                      "does not ask for a number", positive_int),
        "muc_history_max": Option(100, "messages of history a room sends on joining at most (its archive "
                                   "keeps more)", positive_int),
        # ---- XMPP over WebSocket on the HTTP listener (RFC 7395; docs/xmpp.md "WebSocket") ----
        "websocket_secure_from": Option(["127.0.0.0/8", "::1"], "source addresses or networks "
                                        "whose WebSocket connections count as encrypted (a reverse "
                                        "proxy serving wss:// there); with require_tls only they "
                                        "may log in over WebSocket", networks),
        "websocket_url": Option("", "WebSocket URL XEP-0156 host-meta advertises, e.g. "
                                '"wss://chat.example.org/xmpp-websocket"; empty: ws:// (wss:// '
                                "over HTTPS) on the Host the request named"),
        "archive": Option(True, "archive 1:1 messages of every account and persistent rooms' messages "
                          "(XEP-0313 MAM)"),
        "archive_retention": Option(0.0, "days archived messages are kept; 0 keeps them forever",
                                    non_negative_number),
        "archive_write_delay": Option(0.05, "seconds archived messages are collected before they "
                                      "are written in one transaction (0: at once)",
                                      non_negative_number),
        "mam_max_page": Option(50, "messages per archive query page (XEP-0313, RSM max: the "
                               "default and the cap)", positive_int),
        **connection_limit_options("XMPP"),
    }, "the XMPP plugin")


@hookimpl
def add_migrations():
    """Its table ``vcards`` comes from the plugin's own Alembic branch ``xmpp``."""
    return Path(__file__).parent / "migrations"


@hookimpl
def on_startup(core):
    core.pm.register_plugin(XmppServer(core, core.config["xmpp"]), "xmpp:server")
