"""Schemathesis against the app's own OpenAPI spec: no request may cause a server error.

Every operation of ``/openapi.json`` gets generated requests (bounded: 30 examples per
operation) with an admin key, so that they reach the handlers rather than stop at
authentication. DESIGN §9: "Schemathesis against the OpenAPI spec: zero server
errors."
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from segmint.api import create_app
from tests.api.conftest import NOW, Api, iso, running_api, unthrottled

pytestmark = pytest.mark.slow

#: Examples per operation: every valid shape (positive) and some invalid ones (negative).
MAX_EXAMPLES = {GenerationMode.POSITIVE: 30, GenerationMode.NEGATIVE: 15}


@pytest.fixture(scope="module")
def fuzzed_api(project_dir: Any) -> Iterator[Api]:
    with running_api(project_dir) as api:
        api.app.state.throttle = unthrottled()
        batch = [
            {"type": "track", "userId": "fuzz-user", "event": "Product Viewed"},
            {"type": "track", "userId": "fuzz-user", "event": "abandoned_cart"},
        ]
        batch[0]["timestamp"] = iso(NOW - timedelta(minutes=20))
        batch[1]["timestamp"] = iso(NOW - timedelta(minutes=10))
        assert api.post("/v1/batch", {"batch": batch}).json()["accepted"] == 2
        yield api


@pytest.fixture(scope="module")
def api_schema(fuzzed_api: Api) -> Any:
    return schemathesis.openapi.from_asgi("/openapi.json", fuzzed_api.app)


# The operations, read from an app that is not started (create_app has no side effects).
# (schemathesis.pytest.from_fixture would do this, but its lazy loader sets
# ``request.node._nodeid``, which pytest 9 no longer has.)
_PATHS = create_app().openapi()["paths"]
OPERATIONS = [(method.upper(), path) for path, item in _PATHS.items() for method in item]
# Invalid requests exist only for operations with parameters or a body.
CASES = [
    (mode, method, path)
    for method, path in OPERATIONS
    for mode in GenerationMode
    if mode is GenerationMode.POSITIVE
    or {"parameters", "requestBody"} & set(_PATHS[path][method.lower()])
]


@pytest.mark.parametrize(("mode", "method", "path"), CASES, ids=lambda x: str(x))
def test_no_request_causes_a_server_error(
    fuzzed_api: Api, api_schema: Any, method: str, path: str, mode: GenerationMode
) -> None:
    operation = api_schema[path][method]
    headers = fuzzed_api.headers("admin")

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=MAX_EXAMPLES[mode],
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def fuzz(case: Any) -> None:
        case.call_and_validate(headers=headers, checks=[not_a_server_error])

    fuzz()


def test_the_spec_lists_every_operation() -> None:
    """The fuzzing above covers what the spec lists; make sure that is the whole API."""
    assert len(OPERATIONS) == 15
    assert ("POST", "/v1/batch") in OPERATIONS and ("GET", "/metrics") in OPERATIONS
