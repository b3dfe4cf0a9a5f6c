"""Segments and their members: ``GET /v1/segments``, ``/v1/segments/{name}``, ``.../members``."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, HTTPException, Path, Query
from fastapi.responses import StreamingResponse

from segmint.api.deps import Service, require
from segmint.api.routes.privacy import shown_person
from segmint.governance.keys import ApiKeyInfo, Role

router = APIRouter(prefix="/v1/segments", tags=["segments"])

Reader = Annotated[ApiKeyInfo, Depends(require(Role.analyst, Role.marketer, Role.auditor))]
Name = Annotated[str, Path(min_length=1, max_length=200)]


def _encode(person: str) -> str:
    return base64.urlsafe_b64encode(person.encode()).decode().rstrip("=")


def _decode(cursor: str) -> str:
    try:
        return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError) as e:
        raise HTTPException(400, "invalid cursor") from e


@router.get("", summary="Every segment with members, with its size")
async def list_segments(service: Service, key: Reader) -> dict[str, Any]:
    sizes = service.segment_sizes()
    names = sorted(service.known_segments() | set(sizes))
    return {"segments": [{"name": n, "size": sizes.get(n, 0)} for n in names]}


@router.get("/{name}", summary="One segment", responses={404: {}})
async def get_segment(name: Name, service: Service, key: Reader) -> dict[str, Any]:
    if name not in service.known_segments():
        raise HTTPException(404, f"no segment named {name!r}")
    sources = {}
    for trigger in service.project.triggers:
        if trigger.then.enter == name or trigger.then.exit == name:
            sources[trigger.name] = "trigger"
    return {"name": name, "size": service.segment_sizes().get(name, 0), "sources": sources}


@router.get(
    "/{name}/members",
    summary="Members of a segment, a page at a time (cursor pagination, streamed)",
    responses={404: {}, 400: {}},
)
async def members(
    name: Name,
    service: Service,
    key: Reader,
    cursor: Annotated[str | None, Query(max_length=1024)] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
) -> StreamingResponse:
    if name not in service.known_segments():
        raise HTTPException(404, f"no segment named {name!r}")
    after = _decode(cursor) if cursor else None
    page = service.members(name, after=after, limit=limit)
    full = len(page) == min(limit, service.project.realtime.max_page_size)
    next_cursor = _encode(page[-1].person_id) if page and full else None
    shown = [(shown_person(m.person_id, key), m) for m in page]

    def body() -> Iterator[bytes]:
        yield b'{"segment":' + orjson.dumps(name) + b',"members":['
        for i, (person, m) in enumerate(shown):
            item = {
                "person_id": person,
                "source": m.source,
                "since": m.since.isoformat(),
                "expires_at": m.expires_at.isoformat() if m.expires_at else None,
            }
            yield (b"," if i else b"") + orjson.dumps(item)
        yield b'],"next_cursor":' + orjson.dumps(next_cursor) + b"}"

    return StreamingResponse(body(), media_type="application/json")
