"""The FastAPI application: routers, error handlers, metrics and the service's lifespan."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.types import ASGIApp, Receive, Scope, Send

from segmint import __version__
from segmint.api.responses import FastJSONResponse
from segmint.api.routes import health, intake, profiles, segments
from segmint.errors import SegmintError, UserInputError
from segmint.governance.throttle import AuthThrottle
from segmint.realtime.service import RealtimeService
from segmint.realtime.spec import RequestRejected

__all__ = ["create_app"]

logger = logging.getLogger(__name__)


class RequestTiming:
    """Observes every HTTP request's duration per route template.

    A plain ASGI middleware: ``@app.middleware("http")`` would run each request
    through an extra task and memory streams (a fraction of a millisecond each).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        try:
            await self.app(scope, receive, send)
        finally:
            # The router records the matched route in the (shared) scope.
            running = scope["app"].state.service
            if running is not None:
                path = getattr(scope.get("route"), "path", "unmatched")
                running.metrics.requests.labels(path).observe(time.perf_counter() - started)


def create_app(
    service: RealtimeService | None = None, *, project: str | Path | None = None
) -> FastAPI:
    """The app over ``service`` (started and stopped with the app unless already running).

    Without ``service`` the project file (``project``, else ``SEGMINT_PROJECT``) is
    opened when the app starts.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = app.state.service is None
        if owned:
            from segmint.config import get_settings

            app.state.service = RealtimeService.open(project or get_settings().project)
        running: RealtimeService = app.state.service
        started_here = not running.started
        if started_here:
            running.start()
        try:
            yield
        finally:
            if owned:
                running.close()
            elif started_here:
                running.stop()

    app = FastAPI(
        title="segmint",
        version=__version__,
        description="Segment-compatible event intake and the segment read API.",
        default_response_class=FastJSONResponse,
        lifespan=lifespan,
    )
    app.state.service = service
    app.state.throttle = AuthThrottle()
    for module in (intake, profiles, segments, health):
        app.include_router(module.router)

    app.add_middleware(RequestTiming)

    @app.exception_handler(RequestRejected)
    async def rejected(request: Request, exc: RequestRejected) -> FastJSONResponse:
        return FastJSONResponse(
            {"success": False, "code": exc.code, "message": str(exc)}, status_code=exc.status
        )

    @app.exception_handler(UserInputError)
    async def user_error(request: Request, exc: UserInputError) -> FastJSONResponse:
        return FastJSONResponse(
            {"success": False, "code": "bad_request", "message": str(exc)}, status_code=400
        )

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> FastJSONResponse:
        errors = [
            {"loc": [str(x) for x in e.get("loc", ())], "message": e.get("msg", "")}
            for e in exc.errors()
        ]
        return FastJSONResponse(
            {"success": False, "code": "invalid_request", "errors": errors}, status_code=422
        )

    @app.exception_handler(SegmintError)
    async def engine_error(request: Request, exc: SegmintError) -> FastJSONResponse:
        logger.exception("request failed")
        return FastJSONResponse(
            {
                "success": False,
                "code": "unavailable",
                "message": "the request could not be completed; retry",
            },
            status_code=503,
        )

    return app
