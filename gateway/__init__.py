"""The HTTP gateway: a Falcon app answering over the bus, served by gunicorn."""
