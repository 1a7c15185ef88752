"""The ingest ceiling: the same gunicorn configuration serving a bare Flask endpoint.

It reads the body (as any receiver must, to keep the connection usable) and answers 200,
with no signature check, no JSON parse and no database.
"""

from __future__ import annotations

from flask import Flask, Response, request

# What gunicorn is given to serve it (the last word of the Procfile's web line).
GUNICORN_APP = "bench.bare_app:create_app()"


def create_app() -> Flask:
    app = Flask("bare")

    @app.post("/webhooks/<provider>")
    def receive(provider: str) -> Response:
        request.get_data(cache=False)
        return Response(b'{"received": true}', status=200, mimetype="application/json")

    @app.get("/healthz")
    def healthz() -> Response:
        return Response(b'{"status": "ok"}', mimetype="application/json")

    return app
