"""The callback forwarder plugin: the HTTP user answers with what ``[callback] url`` says.

While ``[callback] url`` is set, this plugin claims the HTTP user ahead of the HTTP plugin's echo,
and POSTs each message for it to that URL as JSON (``forwarder.py``); the ``[callback]`` table also
sets timeout, retries, back-off, queue size and workers. With the URL empty it does nothing. It is
a plugin of its own, so ``disabled_plugins = ["callback"]`` leaves it out. See docs/http.md.

It needs the HTTP plugin while a URL is set (``core.pm.require``: start-up stops when ``http`` is
disabled) and takes the HTTP user's address from the HTTP plugin's object for the core
(``http:server``), whose ``callback_url`` is also where the URL's deprecated old name,
``[http] callback_url``, is read from while ``[callback] url`` is empty.
"""
from urllib.parse import urlsplit

from convergence import hookimpl
from convergence.config import Option, Section, positive_int, positive_number

from .forwarder import Forwarder


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
        "url": Option("", "http:// or https:// URL that messages for the HTTP user are POSTed to; "
                          "empty: the HTTP user echoes"),
        "timeout": Option(5.0, "seconds one POST to the callback may take in all", positive_number),
        "retries": Option(2, "further tries after a timeout, refused connection or 5xx", non_negative_int),
        "backoff": Option(0.5, "seconds before the first retry, doubling for each next one",
                          positive_number),
        "queue_size": Option(1000, "messages waiting for a worker; beyond it they are refused",
                             positive_int),
        "workers": Option(4, "POSTs in flight at once", positive_int),
    }, "the callback forwarder for the HTTP user")


@hookimpl(trylast=True)  # after the HTTP plugin has registered its object for this core
def on_startup(core):
    settings = core.config["callback"]
    http = core.pm.get_plugin("http:server")
    url, key = settings["url"], "[callback] url"
    if not url and http is not None and http.callback_url:
        url, key = http.callback_url, "[http] callback_url"
    if not url:
        return
    core.pm.require(core, "callback", "http", f"{key} is set")
    if not http_url(url):
        raise core.config.error(f"{key}: expected an http:// or https:// URL, got {url!r}")
    core.pm.register_plugin(Forwarder(core, http.user, url, settings), "callback:server")
