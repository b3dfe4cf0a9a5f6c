"""Who may call what: every route of the OpenAPI spec x every kind of caller.

The expected roles below are written out by hand from the role rules of issue 5, not
read from the code: a route added to the app without an entry here fails
:func:`test_every_route_of_the_spec_has_an_expectation`. Callers are the five roles,
no key, a revoked key and several kinds of garbage; the answer must be exactly 401 (no
usable key), 403 (a key whose role may not) or 200 (allowed; the data exists). Failed
authentications from one client are throttled: 429 with ``Retry-After``.
"""

from __future__ import annotations

import base64
import itertools
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from segmint.governance.keys import Role, revoke_key
from segmint.governance.throttle import AuthThrottle
from tests.api.conftest import NOW, PRINCIPALS, Api, basic_auth, iso, uid

READERS = frozenset({"analyst", "marketer", "auditor"})
INTAKE = ("track", "identify", "page", "screen", "group", "alias", "batch")
#: (method, path template) -> roles allowed besides admin; None: public, no key needed.
EXPECTED: dict[tuple[str, str], frozenset[str] | None] = {
    **{("POST", f"/v1/{call}"): frozenset({"ingest"}) for call in INTAKE},
    ("GET", "/v1/profiles/{identifier}"): frozenset({"analyst"}),
    ("GET", "/v1/profiles/{identifier}/segments"): frozenset({"analyst", "marketer"}),
    ("GET", "/v1/segments"): READERS,
    ("GET", "/v1/segments/{name}"): READERS,
    ("GET", "/v1/segments/{name}/members"): READERS,
    ("GET", "/metrics"): frozenset({"analyst", "auditor"}),
    ("GET", "/healthz"): None,
    ("GET", "/readyz"): None,
}
SEGMENT = "At-Risk"
_fake_key = "sgm_0badc0de_" + "A" * 43


def garbage_headers(api: Api) -> dict[str, dict[str, str]]:
    """Authorization headers that must all be refused as no usable key."""
    admin = api.keys["admin"]
    tampered = admin[:-1] + ("A" if admin[-1] != "A" else "B")  # right id, wrong secret
    return {
        "unknown well-formed key": {"Authorization": f"Bearer {_fake_key}"},
        "tampered admin key": {"Authorization": f"Bearer {tampered}"},
        "admin key plus a character": {"Authorization": f"Bearer {admin}x"},
        "admin key without a scheme": {"Authorization": admin},
        "admin key with another scheme": {"Authorization": f"Token {admin}"},
        "admin key as basic password": basic_auth(f"nobody:{admin}"),
        "not base64": {"Authorization": "Basic !!!notbase64!!!"},
        "empty bearer": {"Authorization": "Bearer "},
    }


@pytest.fixture(scope="module")
def known_user(api: Api) -> str:
    """A user who is in At-Risk, so that allowed reads answer 200."""
    user = uid()
    batch = [
        {"type": "track", "userId": user, "event": "Product Viewed"},
        {"type": "track", "userId": user, "event": "abandoned_cart"},
    ]
    batch[0]["timestamp"] = iso(NOW - timedelta(minutes=20))
    batch[1]["timestamp"] = iso(NOW - timedelta(minutes=10))
    assert api.post("/v1/batch", {"batch": batch}).json()["accepted"] == 2
    assert api.segments_of(user) == [SEGMENT]
    return user


_messages = itertools.count()


def call(
    api: Api, method: str, template: str, headers: dict[str, str], *, identifier: str, name: str
) -> httpx.Response:
    path = template.replace("{identifier}", identifier).replace("{name}", name)
    if method == "GET":
        return api.client.get(path, headers=headers)
    kind = path.rsplit("/", 1)[-1]
    message: dict[str, Any] = {
        "userId": f"access-{kind}",
        "messageId": f"access-{next(_messages)}",
        "event": "Access Checked",
        "previousId": "access-previous",
        "groupId": "access-group",
    }
    payload = {"batch": [{**message, "type": "track"}]} if kind == "batch" else message
    return api.client.post(path, json=payload, headers=headers)


def expected_status(allowed: frozenset[str] | None, principal: str | None, found: int) -> int:
    if allowed is None:
        return 200
    if principal is None or principal == "revoked" or principal.startswith("garbage"):
        return 401
    if principal == "admin" or principal in allowed:
        return found
    return 403


@pytest.fixture
def throttle_off(api: Api) -> Iterator[None]:
    api.app.state.throttle = AuthThrottle(max_failures=1_000_000)
    yield


def test_every_route_of_the_spec_has_an_expectation(api: Api) -> None:
    spec = api.client.get("/openapi.json").json()
    routes = {(method.upper(), path) for path, item in spec["paths"].items() for method in item}
    assert routes == set(EXPECTED)


@pytest.mark.parametrize(("method", "template"), list(EXPECTED), ids=lambda x: str(x))
def test_every_caller_gets_exactly_the_expected_status(
    api: Api,
    known_user: str,
    pseudonymization_key: bytes,
    throttle_off: None,
    method: str,
    template: str,
) -> None:
    allowed = EXPECTED[(method, template)]
    callers: dict[str | None, dict[str, str]] = {p: api.headers(p) for p in PRINCIPALS}
    callers[None] = {}
    for label, headers in garbage_headers(api).items():
        callers[f"garbage: {label}"] = headers

    wrong = []
    for principal, headers in callers.items():
        response = call(api, method, template, headers, identifier=known_user, name=SEGMENT)
        want = expected_status(allowed, principal, 200)
        if response.status_code != want:
            wrong.append(f"{principal}: {response.status_code} != {want} ({response.text[:80]})")
            continue
        if want == 401:
            assert response.headers["www-authenticate"] == 'Basic realm="segmint"'
        if want in (401, 403):
            assert "detail" in response.json()
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize(
    ("method", "template"),
    [route for route, allowed in EXPECTED.items() if "{" in route[1]],
    ids=lambda x: str(x),
)
def test_unknown_ids_are_404_only_for_callers_who_may_read_them(
    api: Api, pseudonymization_key: bytes, throttle_off: None, method: str, template: str
) -> None:
    """Refusal comes before look-up: a caller without the role learns nothing from 404."""
    allowed = EXPECTED[(method, template)]
    for principal in (*PRINCIPALS, None):
        response = call(
            api, method, template, api.headers(principal), identifier="nobody", name="No-Such"
        )
        assert response.status_code == expected_status(allowed, principal, 404), principal


def test_the_spec_and_docs_need_no_key(api: Api) -> None:
    assert api.client.get("/openapi.json").status_code == 200
    assert api.client.get("/docs").status_code == 200


def test_a_key_is_accepted_as_bearer_token_and_as_basic_user(api: Api, known_user: str) -> None:
    key = api.keys["analyst"]
    path = f"/v1/profiles/{known_user}"
    for headers in (
        {"Authorization": f"Bearer {key}"},
        {"Authorization": f"bearer {key}"},
        basic_auth(key),
        basic_auth(f"{key}:any password"),
        {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()},
    ):
        assert api.client.get(path, headers=headers).status_code == 200, headers


def test_a_key_revoked_while_running_is_refused_at_once(fresh_api: Api) -> None:
    api = fresh_api
    headers = api.headers("auditor")
    assert api.client.get("/v1/segments", headers=headers).status_code == 200

    api.service.write(lambda processor: revoke_key(processor.wh, api.key_ids["auditor"]))
    api.service.keys.refresh(api.wh)

    refused = api.client.get("/v1/segments", headers=headers)
    assert refused.status_code == 401
    assert api.client.get("/v1/segments", headers=api.headers("marketer")).status_code == 200


# ---------------------------------------------------------------------- throttling


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def test_repeated_failures_are_answered_429_with_retry_after(fresh_api: Api) -> None:
    api = fresh_api
    clock = FakeMonotonic()
    api.app.state.throttle = AuthThrottle(
        max_failures=3, window_seconds=60, block_seconds=30, clock=clock
    )
    bad = {"Authorization": f"Bearer {_fake_key}"}
    good = api.headers("analyst")

    first = [api.client.get("/v1/segments", headers=bad).status_code for _ in range(2)]
    assert first == [401, 401]
    blocked = api.client.get("/v1/segments", headers=bad)
    assert blocked.status_code == 429
    assert blocked.headers["retry-after"] == "30"

    clock.now += 10
    refused = api.client.post("/v1/track", json={"userId": "u", "event": "e"}, headers=good)
    assert refused.status_code == 429  # blocked before the key is looked at
    assert refused.headers["retry-after"] == "20"
    assert api.client.get("/healthz").status_code == 200  # public routes stay open

    clock.now += 21
    assert api.client.get("/v1/segments", headers=good).status_code == 200
    assert api.client.get("/v1/segments", headers=bad).status_code == 401


def test_a_success_forgets_earlier_failures(fresh_api: Api) -> None:
    api = fresh_api
    api.app.state.throttle = AuthThrottle(max_failures=3, clock=FakeMonotonic())
    bad = {"Authorization": f"Bearer {_fake_key}"}
    statuses = []
    for headers in (bad, bad, api.headers("admin"), bad, bad):
        statuses.append(api.client.get("/v1/segments", headers=headers).status_code)
    assert statuses == [401, 401, 200, 401, 401]


def test_one_clients_failures_do_not_block_another(fresh_api: Api) -> None:
    api = fresh_api
    api.app.state.throttle = AuthThrottle(max_failures=2, clock=FakeMonotonic())
    attacker = TestClient(api.app, client=("203.0.113.7", 40000))
    neighbour = TestClient(api.app, client=("198.51.100.9", 40000))
    bad = {"Authorization": f"Bearer {_fake_key}"}

    assert [attacker.get("/metrics", headers=bad).status_code for _ in range(3)] == [
        401,
        429,
        429,
    ]
    assert neighbour.get("/metrics", headers=api.headers("auditor")).status_code == 200
    assert neighbour.get("/metrics", headers=bad).status_code == 401


def test_roles_cover_every_role_of_the_key_module() -> None:
    assert {role.value for role in Role} == {"admin", "analyst", "marketer", "ingest", "auditor"}
