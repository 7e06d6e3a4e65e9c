"""The API's error: a JSON body ``{"status": N, "message": "..."}`` (plus ``condition`` for a
refused message), the shape every HTTP failure of the listener has (see ``app.py``)."""
from flask import jsonify


class ApiError(Exception):
    """Raised by API views; rendered by :func:`render` with its status and extra headers."""

    def __init__(self, status: int, message: str, headers: dict | None = None, **extra):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}
        self.extra = extra


def render(error: ApiError):
    return jsonify(status=error.status, message=error.message, **error.extra), error.status, error.headers
