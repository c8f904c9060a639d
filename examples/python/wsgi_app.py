"""A minimal WSGI app, for config/servers/gunicorn.toml: `gunicorn wsgi_app:app`."""
import os


def app(environ, start_response):
    body = f"handled by gunicorn worker pid {os.getpid()}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
