"""Profiles and a person's segments: ``GET /v1/profiles/{id}`` and ``.../segments``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path

from segmint.api.deps import Service, require
from segmint.api.routes.privacy import shown_person
from segmint.governance.keys import ApiKeyInfo, Role

router = APIRouter(prefix="/v1/profiles", tags=["profiles"])

Identifier = Annotated[
    str, Path(min_length=1, max_length=255, description="Person id or any identifier.")
]


@router.get("/{identifier}", summary="A person's real-time profile", responses={404: {}})
async def profile(
    identifier: Identifier,
    service: Service,
    key: Annotated[ApiKeyInfo, Depends(require(Role.analyst))],
) -> dict[str, Any]:
    found = service.profile(identifier)
    if found is None:
        raise HTTPException(404, "no person with that identifier")
    return found


@router.get(
    "/{identifier}/segments",
    summary="The segments a person is in, with the reason for each",
    responses={404: {}},
)
async def profile_segments(
    identifier: Identifier,
    service: Service,
    key: Annotated[ApiKeyInfo, Depends(require(Role.analyst, Role.marketer))],
) -> dict[str, Any]:
    memberships = service.memberships_of(identifier)
    if memberships is None:
        raise HTTPException(404, "no person with that identifier")
    person = service.person_of(identifier)
    assert person is not None
    return {
        "person_id": shown_person(person, key),
        "segments": [
            {
                "segment": m.segment,
                "source": m.source,
                "source_name": m.source_name,
                "reason": m.reason,
                "since": m.since.isoformat(),
                "expires_at": m.expires_at.isoformat() if m.expires_at else None,
            }
            for m in memberships
        ],
    }
