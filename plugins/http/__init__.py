"""HTTP: one Flask application under gevent's WSGI server on ``[http] listen``.

It serves the ExposeURL page (``expose.py``), the JSON API for HTTP clients (``api.py``) and the
blueprints other plugins add with ``add_blueprints``. The HTTP user (``[http] user``) is a service
user: ExposeURL speaks as it, and messages to it are echoed back unless the callback forwarder
plugin (``convergence.plugins.callback``) sends them to ``[http] callback_url``.
"""
from convergence import hookimpl
from convergence.config import Option, Section, listen_address, positive_int, positive_number
from convergence.listeners import AddressLimit, GuardedWSGIServer, connection_limit_options
from convergence.services import EchoRoute

from . import events
from .api import blueprint as api_blueprint
from .app import create_app
from .cli import token
from .expose import blueprint as expose_page
from .expose import http_user

DEFAULT_TEXT = "hello, this is XMPP servlet client."


@hookimpl
def add_config_section():
    return Section("http", {
        "listen": Option("0.0.0.0:8080", "address of the HTTP listener", listen_address),
        "user": Option("httpuser", "localpart of the HTTP service user (ExposeURL sender, callback bot)"),
        "expose_text": Option(DEFAULT_TEXT, "chat message ExposeURL sends to every online account"),
        "callback_url": Option("", "URL the callback forwarder plugin POSTs messages for the HTTP "
                                   "user to; empty: the HTTP user echoes"),
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
        **connection_limit_options("HTTP"),
    }, "the HTTP plugin")


@hookimpl(tryfirst=True)  # before any other plugin starts anything
def on_startup(core):
    if core.config["http"]["callback_url"] and not core.pm.has_plugin("callback"):
        raise core.config.error("[http] callback_url is set, but the callback plugin is not loaded "
                                "(remove it from [server] disabled_plugins, or empty callback_url)")


@hookimpl
def on_shutdown(core):
    core.presence.set_service(http_user(core), None)  # ExposeURL made it available


@hookimpl
def add_blueprints(core):
    return [expose_page, api_blueprint]


@hookimpl
def add_cli_commands(cli):
    cli.add_command(token)


@hookimpl
def on_account(core, account, change):
    events.account_changed(core, account, change)  # streams of a deleted account or old password end


@hookimpl
def on_presence(core, account, presence):
    events.presence_changed(core, account, presence)  # to the API event streams that see it


@hookimpl
def resolve_recipient(core, address):
    # The HTTP user echoes; the callback forwarder plugin (tryfirst) claims it when callback_url is set.
    if address.bare == http_user(core):
        return EchoRoute(core)
    return None


@hookimpl
def add_listeners(core):
    settings = core.config["http"]
    return [GuardedWSGIServer(settings["listen"], create_app(core),
                              AddressLimit.from_settings("HTTP", settings),
                              settings["header_timeout"], settings["body_timeout"])]
