"""Dependencies of the routes: the service, and authentication with roles."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request

from segmint.governance.keys import ApiKeyInfo, Role, allowed, parse_authorization
from segmint.governance.throttle import AuthThrottle, client_key
from segmint.realtime.service import RealtimeService

__all__ = ["Service", "require"]


async def get_service(request: Request) -> RealtimeService:
    # async: FastAPI would run a plain function in its thread pool (a thread hop per request)
    service: RealtimeService = request.app.state.service
    return service


Service = Annotated[RealtimeService, Depends(get_service)]


def _throttle(request: Request) -> AuthThrottle:
    throttle: AuthThrottle = request.app.state.throttle
    return throttle


def require(*roles: Role) -> Callable[..., Coroutine[Any, Any, ApiKeyInfo]]:
    """A dependency admitting keys of ``roles`` (admin always): 401, 403 or 429 otherwise.

    Repeated failures from one client address are throttled: 429 with ``Retry-After``.
    """
    wanted = frozenset(roles)

    async def dependency(request: Request, service: Service) -> ApiKeyInfo:
        throttle = _throttle(request)
        client = client_key(request.client.host if request.client else None)
        wait = throttle.check(client)
        if wait is not None:
            raise HTTPException(
                429,
                "too many failed authentications; retry later",
                headers={"Retry-After": str(int(wait))},
            )
        key = parse_authorization(request.headers.get("authorization"))
        info = service.keys.authenticate(key) if key is not None else None
        if info is None:
            service.metrics.auth_failures.inc()
            wait = throttle.failure(client)
            headers = {"WWW-Authenticate": 'Basic realm="segmint"'}
            if wait is not None:
                raise HTTPException(
                    429,
                    "too many failed authentications; retry later",
                    headers={"Retry-After": str(int(wait)), **headers},
                )
            raise HTTPException(401, "missing, unknown or revoked API key", headers=headers)
        throttle.success(client)
        if not allowed(info.role, wanted):
            names = ", ".join(sorted(r.value for r in wanted | {Role.admin}))
            raise HTTPException(
                403, f"a key with role {info.role.value} may not do this (allowed: {names})"
            )
        return info

    return dependency
