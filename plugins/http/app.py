"""The Flask application factory: every plugin's blueprints, JSON errors for API clients."""
from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

from convergence import __version__


def create_app(core) -> Flask:
    app = Flask("convergence")
    app.extensions["convergence"] = core

    @app.get("/api/status")
    def status():
        """Liveness: the domain and the version; used by health checks and the tests."""
        return {"domain": core.domain, "version": __version__}

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        return jsonify(status=exc.code, message=exc.description), exc.code

    for blueprints in core.hook.add_blueprints(core=core):
        for blueprint in blueprints or ():
            app.register_blueprint(blueprint)
    return app
