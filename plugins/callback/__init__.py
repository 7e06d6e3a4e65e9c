"""The callback forwarder plugin: the HTTP user answers with what ``[http] callback_url`` says.

While ``[http] callback_url`` is set, this plugin claims the HTTP user (``[http] user``) ahead of
the HTTP plugin's echo, and POSTs each message for it to that URL as JSON (``forwarder.py``); the
``[callback]`` table sets timeout, retries, back-off, queue size and workers. With the URL empty
it does nothing. It is a plugin of its own, so ``disabled_plugins = ["callback"]`` leaves it out
(the HTTP plugin then refuses to start with a callback URL set). See docs/http.md.
"""
from urllib.parse import urlsplit
from weakref import WeakKeyDictionary

from convergence import hookimpl
from convergence.config import Option, Section, positive_int, positive_number
from convergence.plugins.http.expose import http_user

from .forwarder import Forwarder

FORWARDERS: WeakKeyDictionary = WeakKeyDictionary()  # core -> its Forwarder while callback_url is set


def non_negative_int(value) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError("expected an integer >= 0")
    return value


def http_url(url: str) -> bool:
    """Whether ``url`` is an absolute http(s) URL urllib can send to."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname) and url.isascii()


@hookimpl
def add_config_section():
    return Section("callback", {
        "timeout": Option(5.0, "seconds one POST to the callback may take in all", positive_number),
        "retries": Option(2, "further tries after a timeout, refused connection or 5xx", non_negative_int),
        "backoff": Option(0.5, "seconds before the first retry, doubling for each next one",
                          positive_number),
        "queue_size": Option(1000, "messages waiting for a worker; beyond it they are refused",
                             positive_int),
        "workers": Option(4, "POSTs in flight at once", positive_int),
    }, "the callback forwarder for the HTTP user")


@hookimpl
def on_startup(core):
    url = core.config.values.get("http", {}).get("callback_url")  # no [http]: the plugin is off
    if not url:
        return
    if not http_url(url):
        raise core.config.error(f"[http] callback_url: expected an http:// or https:// URL, got {url!r}")
    FORWARDERS[core] = Forwarder(core, http_user(core), url, core.config["callback"])


@hookimpl
def on_shutdown(core):
    forwarder = FORWARDERS.pop(core, None)
    if forwarder is not None:
        forwarder.stop()


@hookimpl(tryfirst=True)  # ahead of the HTTP plugin, whose route for the HTTP user echoes
def resolve_recipient(core, address):
    forwarder = FORWARDERS.get(core)
    if forwarder is not None and address.bare == forwarder.address:
        return forwarder
    return None
