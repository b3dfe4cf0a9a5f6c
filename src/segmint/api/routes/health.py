"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response
from prometheus_client import CONTENT_TYPE_LATEST

from segmint.api.deps import Service, require
from segmint.api.responses import FastJSONResponse
from segmint.governance.keys import ApiKeyInfo, Role

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="The process is alive")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="The service accepts events", responses={503: {}})
async def readyz(service: Service) -> FastJSONResponse:
    ready = service.ready
    return FastJSONResponse(
        {"status": "ready" if ready else "starting"}, status_code=200 if ready else 503
    )


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(
    service: Service,
    key: Annotated[ApiKeyInfo, Depends(require(Role.auditor, Role.analyst))],
) -> Response:
    service.metrics.writer_backlog.set(service.committer.backlog)
    return Response(service.metrics.render(), media_type=CONTENT_TYPE_LATEST)
