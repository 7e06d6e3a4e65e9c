"""HTTP: one Flask application under gevent's WSGI server on ``[http] listen``.

Other plugins add routes with the ``add_blueprints`` hook. The ExposeURL endpoint, the REST API and
the callback forwarder arrive with the convergence issue.
"""
from gevent.pywsgi import WSGIServer

from convergence import hookimpl
from convergence.config import Option, Section, listen_address
from convergence.listeners import NoDelayWSGIHandler

from .app import create_app


@hookimpl
def add_config_section():
    return Section("http", {
        "listen": Option("0.0.0.0:8080", "address of the HTTP listener", listen_address),
    }, "the HTTP plugin")


@hookimpl
def add_listeners(core):
    return [WSGIServer(core.config["http"]["listen"], create_app(core),
                       handler_class=NoDelayWSGIHandler, log=None)]
