"""The Flask application factory: every plugin's blueprints, JSON errors for API clients."""
import logging

from flask import Flask, jsonify, request
from werkzeug.exceptions import HTTPException

from convergence import __version__

log = logging.getLogger(__name__)


def create_app(core) -> Flask:
    app = Flask("convergence")
    app.extensions["convergence"] = core

    @app.get("/api/status")
    def status():
        """Liveness: the domain and the version; used by health checks and the tests."""
        return {"domain": core.domain, "version": __version__}

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        """The body becomes JSON; the exception's own headers stay (a 405 carries ``Allow``, as
        RFC 9110 §15.5.6 requires)."""
        headers = [(k, v) for k, v in exc.get_headers() if k.lower() != "content-type"]
        return jsonify(status=exc.code, message=exc.description), exc.code, headers

    @app.errorhandler(Exception)
    def server_error(exc: Exception):
        log.exception("unhandled error in %s", request.path)
        return jsonify(status=500, message="internal server error (logged)"), 500

    for blueprints in core.hook.add_blueprints(core=core):
        for blueprint in blueprints or ():
            app.register_blueprint(blueprint)
    return app
