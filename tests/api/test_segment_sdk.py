"""The official Segment Python SDK (``segment-analytics-python``) against a real server.

The app runs under uvicorn on a loopback port; the SDK's write key is an ``ingest`` key
and its host the server. What a Segment user relies on: the SDK's calls arrive as
they would at Segment, the person's profile and trigger segments follow, and the
events are stored with the SDK's messageIds.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import segment.analytics as analytics
from segment.analytics.request import APIError

from segmint.api import create_app
from segmint.config import load_project
from segmint.engine import Warehouse
from segmint.realtime.service import RealtimeService
from tests.api.conftest import add_keys, basic_auth, uid, uvicorn_server

pytestmark = pytest.mark.slow


@dataclass
class Served:
    service: RealtimeService
    url: str
    keys: dict[str, str]

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.url + path, headers=basic_auth(self.keys["analyst"]), timeout=30)

    @property
    def wh(self) -> Warehouse:
        """The warehouse, once every acknowledged event is written to it."""
        self.service.flush()
        return self.service.wh

    def client(self, **options: Any) -> analytics.Client:
        options.setdefault("write_key", self.keys["ingest"])
        return analytics.Client(host=self.url, max_retries=0, timeout=30, **options)


@pytest.fixture(scope="module")
def served(project_dir: Path) -> Iterator[Served]:
    """The app under uvicorn, over a service with the real clock (the SDK stamps sentAt)."""
    project, root = load_project(project_dir)
    service = RealtimeService(project, Warehouse(root / "sdk.duckdb"))
    try:
        keys, _ids = add_keys(service)
        with uvicorn_server(create_app(service)) as url:
            yield Served(service, url, keys)
    finally:
        service.close()


def utcnow() -> datetime:
    return datetime.now(UTC)


def naive(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None)


def test_identify_and_track_reach_the_profile_the_trigger_and_the_events_table(
    served: Served,
) -> None:
    client = served.client(sync_mode=True)
    user, anonymous = uid("sdk"), uid("anon")
    viewed_at = utcnow() - timedelta(minutes=20)
    cart_at = viewed_at + timedelta(minutes=10)

    _, identify = client.identify(
        user,
        {"email": f"{user}@example.com", "plan": "pro"},
        anonymous_id=anonymous,
        timestamp=viewed_at - timedelta(minutes=1),
    )
    _, view = client.track(user, "Product Viewed", {"product_id": "p-9"}, timestamp=viewed_at)
    _, cart = client.track(user, "abandoned_cart", {"cart_value": 42.0}, timestamp=cart_at)
    client.page(user, "Docs", "Install", {"path": "/docs"})

    profile = served.get(f"/v1/profiles/{anonymous}").json()
    assert profile == served.get(f"/v1/profiles/{user}").json()
    assert profile["traits"]["plan"] == "pro"
    assert profile["fields"]["event_count"] == 4
    assert profile["fields"]["product_views"] == 1 and profile["fields"]["page_views"] == 1

    [membership] = served.get(f"/v1/profiles/{user}/segments").json()["segments"]
    assert membership["segment"] == "At-Risk"
    assert membership["source_name"] == "cart_abandoned_fast"
    assert "minutes_since_last_event = 10.0" in membership["reason"]

    rows = {
        row[0]: row[1:]
        for row in served.wh.fetchall(
            'SELECT message_id, type, event, "timestamp", context FROM events WHERE user_id = ?',
            [user],
        )
    }
    assert set(rows) >= {identify["messageId"], view["messageId"], cart["messageId"]}
    kind, event, stored_at, context = rows[cart["messageId"]]
    assert (kind, event) == ("track", "abandoned_cart")
    assert orjson.loads(context)["library"]["name"] == "analytics-python"
    # receivedAt - (sentAt - timestamp): the cart time plus the request's time in flight
    assert timedelta(0) <= stored_at - naive(cart_at) < timedelta(seconds=60)
    assert rows[identify["messageId"]][0] == "identify"


def test_the_batching_client_delivers_everything_on_flush(served: Served) -> None:
    client = served.client(sync_mode=False, upload_size=25, upload_interval=0.05)
    user = uid("sdk")
    sent = [client.track(user, "Item Seen", {"n": i})[1]["messageId"] for i in range(60)]
    client.flush()
    client.join()

    stored = served.wh.fetchall("SELECT message_id FROM events WHERE user_id = ?", [user])
    assert sorted(m for (m,) in stored) == sorted(sent)
    assert served.get(f"/v1/profiles/{user}").json()["fields"]["event_count"] == 60


def test_a_retried_upload_is_not_stored_twice(served: Served) -> None:
    """The SDK retries a batch whose answer it did not get; messageIds make that harmless."""
    client = served.client(sync_mode=True)
    user, message_id = uid("sdk"), uid("m")
    for _ in range(3):
        client.track(user, "Order Completed", {"revenue": 10}, message_id=message_id)

    count = served.wh.scalar("SELECT count(*) FROM events WHERE user_id = ?", [user])
    assert count == 1
    assert served.get(f"/v1/profiles/{user}").json()["fields"]["order_count"] == 1


def test_gzip_compressed_uploads_are_accepted(served: Served) -> None:
    """The SDKs can compress their uploads (``gzip=True``, RudderStack's default)."""
    client = served.client(sync_mode=True, gzip=True)
    user = uid("sdk")
    client.track(user, "Compressed", {"ok": True})

    assert served.wh.scalar("SELECT count(*) FROM events WHERE user_id = ?", [user]) == 1


@pytest.mark.parametrize(("principal", "status"), [("wrong", 401), ("analyst", 403)])
def test_a_write_key_that_may_not_ingest_is_refused(
    served: Served, principal: str, status: int
) -> None:
    key = "sgm_0badc0de_" + "A" * 43 if principal == "wrong" else served.keys[principal]
    client = served.client(sync_mode=True, write_key=key)
    user = uid("sdk")
    with pytest.raises(APIError) as refused:
        client.track(user, "Refused")

    assert refused.value.status == status
    assert served.wh.scalar("SELECT count(*) FROM events WHERE user_id = ?", [user]) == 0
