"""HTTP: one Flask application under gevent's WSGI server on ``[http] listen``.

It serves the ExposeURL page (``expose.py``), the JSON API for HTTP clients (``api.py``) and the
blueprints other plugins add with ``add_blueprints``. The HTTP user (``[http] user``) is a service
user: ExposeURL speaks as it, and messages to it are echoed back unless another plugin claims it
(the callback forwarder plugin does when ``[callback] url`` is set).

This module holds the stateless hooks; ``on_startup`` builds the plugin's object for that core
(:class:`~.server.HttpServer`) and registers it as ``http:server``: it takes the other hooks.
"""
import logging
from pathlib import Path
from urllib.parse import urlsplit

from convergence import hookimpl
from convergence.config import Option, Section, listen_address, positive_int, positive_number
from convergence.listeners import connection_limit_options

from .api import blueprint as api_blueprint
from .cli import token
from .expose import blueprint as expose_page
from .expose import http_user
from .metrics import metrics_options
from .server import HttpServer
from .uploads import blueprint as uploads_blueprint

log = logging.getLogger(__name__)

DEFAULT_TEXT = "hello, this is XMPP servlet client."


def public_url(value) -> str:
    """``[http] public_url``: empty, or an http:// or https:// URL without query or fragment."""
    if value == "":
        return value
    parts = urlsplit(value) if isinstance(value, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.netloc \
            or parts.query or parts.fragment:
        raise ValueError("expected an http:// or https:// URL without query or fragment")
    return value.rstrip("/")


@hookimpl
def add_config_section():
    return Section("http", {
        "listen": Option("0.0.0.0:8080", "address of the HTTP listener", listen_address),
        "user": Option("httpuser", "localpart of the HTTP service user (ExposeURL sender, callback bot)"),
        "expose_text": Option(DEFAULT_TEXT, "chat message ExposeURL sends to every online account"),
        "callback_url": Option("", "deprecated: set [callback] url instead (read as it while "
                                   "that is empty)"),
        "max_body": Option(65536, "bytes of an API request body; more is 413", positive_int),
        "sse_keepalive": Option(15.0, "seconds between keep-alive comments on an idle API event "
                                "stream (a client that has gone is noticed then)", positive_number),
        "sse_queue": Option(1000, "events waiting for an API event stream that does not read "
                            "before it is ended (further messages are stored)", positive_int),
        "login_failures": Option(5, "failed API logins per source address within "
                                 "login_failure_window before it gets 429", positive_int),
        "login_failure_window": Option(60.0, "seconds over which login_failures count",
                                       positive_number),
        "header_timeout": Option(10.0, "seconds a client may take to send a request's line and "
                                 "header fields, counted from when the server waits for them (also "
                                 "the longest an idle keep-alive connection is kept); then the "
                                 "connection is closed, with 408 if a request had begun",
                                 positive_number),
        "body_timeout": Option(30.0, "seconds a client may take to send a request body",
                               positive_number),
        "public_url": Option("", "base URL clients reach this listener at (e.g. "
                             '"https://chat.example.org"), used in HTTP File Upload URLs; empty: '
                             "http://<listen host, or the domain when it is 0.0.0.0 or ::>:<port>",
                             public_url),
        "upload_purge_interval": Option(3600.0, "seconds between purges of lapsed upload slots "
                                        "and expired uploaded files (XEP-0363)", positive_number),
        "upload_min_rate": Option(8192, "bytes per second an HTTP File Upload PUT may be as slow "
                                  "as: its body may take body_timeout plus size / this",
                                  positive_int),
        **connection_limit_options("HTTP"),
        **metrics_options(),
    }, "the HTTP plugin")


@hookimpl
def add_migrations():
    """Its tables ``api_tokens`` and ``uploads`` come from the plugin's own Alembic branch ``http``."""
    return Path(__file__).parent / "migrations"


@hookimpl
def on_startup(core):
    settings = core.config["http"]
    if settings["callback_url"]:
        log.warning("[http] callback_url is deprecated: set [callback] url instead")
    core.pm.register_plugin(HttpServer(core, settings), "http:server")


@hookimpl
def service_users(core):
    return [http_user(core)]


@hookimpl
def add_blueprints(core):
    return [expose_page, api_blueprint, uploads_blueprint]


@hookimpl
def add_cli_commands(cli):
    cli.add_command(token)

