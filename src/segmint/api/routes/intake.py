"""Segment HTTP tracking API: ``POST /v1/track | identify | page | screen | group | alias | batch``.

Existing Segment and RudderStack SDKs send here with their write key (an
``ingest`` key) as the HTTP Basic user name. A request is answered after its
events are durably committed; the answer counts accepted, duplicate and
rejected messages, with a reason per rejected one (each is in ``failed_events``).
"""

from __future__ import annotations

import asyncio
import zlib
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from segmint.api.deps import Service, require
from segmint.api.responses import FastJSONResponse
from segmint.governance.keys import ApiKeyInfo, Role
from segmint.realtime.events import EventType, IngestOutcome
from segmint.realtime.spec import RequestRejected

router = APIRouter(prefix="/v1", tags=["intake"])

IngestKey = Annotated[ApiKeyInfo, Depends(require(Role.ingest))]


class RejectedItem(BaseModel):
    index: int | None = Field(description="Position in the batch (null for single calls).")
    messageId: str | None = None  # noqa: N815 (the Segment field name)
    reason: str = Field(description="Reason code.")
    detail: str


class IngestResponse(BaseModel):
    success: bool = Field(description="True when every message was accepted or a duplicate.")
    accepted: int
    duplicate: int
    rejected: int
    errors: list[RejectedItem]


_BODY_EXAMPLE = {
    "userId": "c-17",
    "event": "Product Viewed",
    "properties": {"product_id": "p-1", "price": 9.5},
    "timestamp": "2026-11-23T12:00:00Z",
}


async def _read_body(request: Request, limit: int, code: str) -> bytes:
    """The body, gunzipped when sent with ``Content-Encoding: gzip`` (as SDKs may), capped."""
    too_large = RequestRejected(413, code, f"the body is over {limit} bytes")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large
    if request.headers.get("content-encoding", "").strip().lower() != "gzip":
        return bytes(body)
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        plain = inflater.decompress(bytes(body), limit + 1)
    except zlib.error as e:
        raise RequestRejected(400, "invalid_gzip", f"the gzip body cannot be read: {e}") from e
    if len(plain) > limit:
        raise too_large
    return plain


def _response(outcome: IngestOutcome, *, single: bool) -> FastJSONResponse:
    errors = [
        {"index": r.index, "messageId": r.message_id, "reason": r.reason, "detail": r.detail}
        for r in outcome.rejected
    ]
    body: dict[str, Any] = {
        "success": not errors,
        "accepted": outcome.accepted,
        "duplicate": outcome.duplicate,
        "rejected": len(errors),
        "errors": errors,
    }
    return FastJSONResponse(body, status_code=400 if single and errors else 200)


async def _ingest(
    request: Request, service: Service, key: ApiKeyInfo, call: EventType | None
) -> FastJSONResponse:
    limits = service.limits
    limit = limits.max_batch_bytes if call is None else limits.max_event_bytes
    code = "body_too_large" if call is None else "event_too_large"
    source = f"api:{key.key_id}"
    body = b""
    try:
        body = await _read_body(request, limit, code)
        parsed = service.parse(body, call)
    except RequestRejected as e:
        # Refused as a whole: a body that could be read is dead-lettered (and counted as a
        # rejected message); an oversized one is only counted.
        if e.status == 413:
            service.metrics.refused.labels(e.code).inc()
        else:
            await asyncio.wrap_future(service.dead_letter(e.code, str(e), body, source=source))
        raise
    outcome = await asyncio.wrap_future(service.submit(parsed, source=source))
    return _response(outcome, single=call is not None)


_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"description": "Malformed body or a rejected message (see errors)."},
    401: {"description": "Missing, unknown or revoked key."},
    403: {"description": "The key's role may not send events."},
    413: {"description": "Body, message or batch over the limits."},
    429: {"description": "Too many failed authentications (see Retry-After)."},
}


def _single(call: EventType) -> None:
    async def endpoint(request: Request, service: Service, key: IngestKey) -> FastJSONResponse:
        return await _ingest(request, service, key, call)

    router.add_api_route(
        f"/{call.value}",
        endpoint,
        methods=["POST"],
        response_model=IngestResponse,
        responses=_RESPONSES,
        summary=f"Send one {call.value} call (Segment HTTP API)",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": {"type": "object"}, "example": _BODY_EXAMPLE}
                },
            }
        },
        name=f"ingest_{call.value}",
    )


for _call in EventType:
    _single(_call)


@router.post(
    "/batch",
    response_model=IngestResponse,
    responses=_RESPONSES,
    summary="Send up to 2,500 calls in one request (Segment HTTP API)",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {"type": "object", "properties": {"batch": {"type": "array"}}},
                    "example": {"batch": [{"type": "track", **_BODY_EXAMPLE}]},
                }
            },
        }
    },
)
async def batch(request: Request, service: Service, key: IngestKey) -> FastJSONResponse:
    return await _ingest(request, service, key, None)
