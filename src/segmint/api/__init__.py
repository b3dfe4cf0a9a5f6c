"""The HTTP API (FastAPI): a thin layer over :class:`segmint.realtime.service.RealtimeService`."""

from segmint.api.main import create_app

__all__ = ["create_app"]
