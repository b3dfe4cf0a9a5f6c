"""The read API: profiles, a person's segments, segments and members, metrics, health.

Also what the triggers of the project file do as seen through it: the seed trigger
(``abandoned_cart`` < 30 minutes after the previous event enters ``At-Risk`` for a
day), the absence trigger (``Checkout Started`` without ``Order Completed`` within 30
minutes), time-to-live, and consent (no personalization, no trigger segment).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from segmint.api import create_app
from segmint.data.privacy.pseudonymise import pseudonymise
from tests.api.conftest import NOW, Api, Clock, add_keys, iso, open_service, uid, wait_until

PAGE_SIZE = 20  # realtime.max_page_size of this module's project


@pytest.fixture(scope="module")
def project_extra() -> str:
    return f"realtime:\n  max_page_size: {PAGE_SIZE}\n"


def track(user: str, event: str, at: datetime, **extra: Any) -> dict[str, Any]:
    return {"type": "track", "userId": user, "event": event, "timestamp": iso(at), **extra}


def abandon(user: str, gap_minutes: float, *, end: datetime = NOW) -> list[dict[str, Any]]:
    """A product view, then an abandoned cart ``gap_minutes`` later, ending at ``end``."""
    cart_at = end - timedelta(minutes=5)
    return [
        track(user, "Product Viewed", cart_at - timedelta(minutes=gap_minutes)),
        track(user, "abandoned_cart", cart_at),
    ]


def send(api: Api, *messages: dict[str, Any]) -> None:
    response = api.post("/v1/batch", {"batch": list(messages)})
    assert response.status_code == 200, response.text
    assert response.json()["rejected"] == 0, response.text


def segments_body(api: Api, identifier: str, who: str = "analyst") -> dict[str, Any]:
    response = api.get(f"/v1/profiles/{identifier}/segments", who=who)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


# ---------------------------------------------------------------------- profiles


def test_a_profile_is_found_by_person_id_user_id_and_anonymous_id(api: Api) -> None:
    user, anonymous = uid(), uid("anon")
    send(
        api,
        {
            "type": "identify",
            "userId": user,
            "anonymousId": anonymous,
            "traits": {"email": f"{user}@example.com", "plan": "pro"},
            "timestamp": iso(NOW - timedelta(minutes=9)),
        },
        track(user, "Product Viewed", NOW - timedelta(minutes=8), properties={"price": 3}),
    )
    by_user = api.get(f"/v1/profiles/{user}", who="analyst")
    assert by_user.status_code == 200
    profile = by_user.json()
    person = profile["person_id"]

    for identifier in (person, anonymous):
        again = api.get(f"/v1/profiles/{identifier}", who="analyst")
        assert again.status_code == 200
        assert again.json() == profile
    assert {"type": "user_id", "value": user} in profile["identifiers"]
    assert {"type": "anonymous_id", "value": anonymous} in profile["identifiers"]
    assert profile["traits"]["plan"] == "pro"
    assert profile["fields"]["event_count"] == 2
    assert profile["fields"]["product_views"] == 1
    assert profile["fields"]["last_seen_at"] == (NOW - timedelta(minutes=8)).isoformat()


def test_an_anonymous_visitor_who_identifies_is_one_profile(api: Api) -> None:
    user, anonymous = uid(), uid("anon")
    send(
        api,
        {"type": "page", "anonymousId": anonymous, "name": "Home", "timestamp": iso(NOW)},
        {"type": "page", "anonymousId": anonymous, "name": "Shoes", "timestamp": iso(NOW)},
    )
    before = api.get(f"/v1/profiles/{anonymous}", who="analyst").json()
    assert before["fields"]["page_views"] == 2
    send(api, {"type": "identify", "userId": user, "anonymousId": anonymous, "timestamp": iso(NOW)})

    by_anonymous = api.get(f"/v1/profiles/{anonymous}", who="analyst").json()
    by_user = api.get(f"/v1/profiles/{user}", who="analyst").json()
    assert by_anonymous == by_user
    assert by_user["fields"]["page_views"] == 2 and by_user["fields"]["event_count"] == 3


def test_an_unknown_identifier_is_404(api: Api) -> None:
    for path in ("/v1/profiles/nobody-at-all", "/v1/profiles/nobody-at-all/segments"):
        response = api.get(path, who="analyst")
        assert response.status_code == 404
        assert response.json()["detail"]


# ---------------------------------------------------------------------- the seed trigger


@pytest.mark.parametrize(("gap", "enters"), [(10, True), (29, True), (30, False), (40, False)])
def test_the_seed_trigger_enters_at_risk_only_within_30_minutes(
    api: Api, gap: int, enters: bool
) -> None:
    user = uid()
    send(api, *abandon(user, gap))

    body = segments_body(api, user)
    assert body["person_id"] == api.person(user)
    if not enters:
        assert body["segments"] == []
        return
    cart_at = NOW - timedelta(minutes=5)
    assert body["segments"] == [
        {
            "segment": "At-Risk",
            "source": "trigger",
            "source_name": "cart_abandoned_fast",
            "reason": f"abandoned_cart: minutes_since_last_event = {float(gap)} "
            "(when: minutes_since_last_event < 30)",
            "since": cart_at.isoformat(),
            "expires_at": (cart_at + timedelta(minutes=1440)).isoformat(),
        }
    ]


def test_skew_corrected_times_decide_the_trigger(api: Api) -> None:
    """A client whose clock runs 3 hours fast: the gap between its events is what counts."""
    user, skew = uid(), timedelta(hours=3)
    messages = abandon(user, 10)
    for message in messages:
        message["timestamp"] = iso(datetime.fromisoformat(message["timestamp"][:-1]) + skew)
        message["sentAt"] = iso(NOW + skew)
    send(api, *messages)

    [membership] = segments_body(api, user)["segments"]
    assert membership["since"] == (NOW - timedelta(minutes=5)).isoformat()


def test_segments_list_and_one_segment(api: Api) -> None:
    user = uid()
    send(api, *abandon(user, 5))
    listed = api.get("/v1/segments", who="auditor").json()["segments"]
    names = {s["name"]: s["size"] for s in listed}
    assert set(names) >= {"At-Risk", "Checkout Abandoners"}
    assert names["At-Risk"] >= 1 and names["Checkout Abandoners"] == 0

    one = api.get("/v1/segments/At-Risk", who="marketer").json()
    assert one == {
        "name": "At-Risk",
        "size": names["At-Risk"],
        "sources": {"cart_abandoned_fast": "trigger"},
    }
    assert api.get("/v1/segments/Nope", who="analyst").status_code == 404


# ---------------------------------------------------------------------- time


def test_a_membership_past_its_ttl_is_not_served(fresh_api: Api) -> None:
    api, clock = fresh_api, fresh_api.clock
    user = uid()
    send(api, *abandon(user, 10))
    expires = NOW - timedelta(minutes=5) + timedelta(minutes=1440)

    clock.now = expires - timedelta(minutes=1)
    assert api.segments_of(user) == ["At-Risk"]

    clock.now = expires + timedelta(minutes=1)
    assert api.segments_of(user) == []
    assert api.get("/v1/segments/At-Risk").json()["size"] == 0
    members = api.get("/v1/segments/At-Risk/members").json()
    assert members["members"] == [] and members["next_cursor"] is None

    wait_until(lambda: api.scalar("SELECT count(*) FROM memberships") == 0, "expiry")
    rows = api.rows('SELECT change, source, "at" FROM membership_outbox ORDER BY id')
    assert rows == [
        ("entered", "trigger", NOW - timedelta(minutes=5)),
        ("exited", "expiry", expires),
    ]


def test_the_absence_trigger_fires_when_the_order_does_not_follow(fresh_api: Api) -> None:
    api, clock = fresh_api, fresh_api.clock
    gone, bought = uid(), uid()
    started = NOW - timedelta(minutes=5)
    send(
        api,
        track(gone, "Checkout Started", started),
        track(bought, "Checkout Started", started),
        track(bought, "Order Completed", started + timedelta(minutes=3)),
    )
    assert api.segments_of(gone) == [] and api.segments_of(bought) == []

    clock.now = started + timedelta(minutes=31)
    wait_until(lambda: api.segments_of(gone) == ["Checkout Abandoners"], "the absence timer")

    assert api.segments_of(bought) == []
    [membership] = segments_body(api, gone)["segments"]
    due = started + timedelta(minutes=30)
    assert membership["source_name"] == "checkout_abandoned"
    assert "no Order Completed within 30" in membership["reason"]
    assert membership["since"] == due.isoformat()
    assert membership["expires_at"] == (due + timedelta(minutes=60)).isoformat()


# ---------------------------------------------------------------------- consent


def with_consent(message: dict[str, Any], **preferences: bool) -> dict[str, Any]:
    return {**message, "context": {"consent": {"categoryPreferences": preferences}}}


def test_without_personalization_consent_no_trigger_segment_is_entered(api: Api) -> None:
    refused, granted, withdrew_in_track = uid(), uid(), uid()
    identify_at = NOW - timedelta(hours=1)
    for user, allowed in ((refused, False), (granted, True)):
        identify = {"type": "identify", "userId": user, "timestamp": iso(identify_at)}
        send(api, with_consent(identify, personalization=allowed, analytics=True))
        send(api, *abandon(user, 10))
    view, cart = abandon(withdrew_in_track, 10)
    send(api, with_consent(view, personalization=False), cart)

    assert api.segments_of(granted) == ["At-Risk"]
    assert api.segments_of(refused) == []
    assert api.segments_of(withdrew_in_track) == []
    rows = api.rows(
        "SELECT customer_id, granted FROM consents WHERE purpose = 'personalization' "
        "AND customer_id IN (?, ?, ?) ORDER BY customer_id",
        [refused, granted, withdrew_in_track],
    )
    assert sorted(rows) == sorted([(refused, False), (granted, True), (withdrew_in_track, False)])


def test_a_later_grant_lets_the_trigger_enter_again(api: Api) -> None:
    user = uid()
    identify = {"type": "identify", "userId": user, "timestamp": iso(NOW - timedelta(hours=2))}
    send(api, with_consent(identify, personalization=False))
    send(api, *abandon(user, 10, end=NOW - timedelta(hours=1)))
    assert api.segments_of(user) == []

    regrant = {"type": "identify", "userId": user, "timestamp": iso(NOW - timedelta(minutes=30))}
    send(api, with_consent(regrant, personalization=True))
    send(api, *abandon(user, 10))
    assert api.segments_of(user) == ["At-Risk"]


# ---------------------------------------------------------------------- members


def members_pages(api: Api, limit: int, who: str = "analyst") -> list[list[str]]:
    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": limit}
        if cursor is not None:
            params["cursor"] = cursor
        response = api.get("/v1/segments/At-Risk/members", who=who, params=params)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["segment"] == "At-Risk"
        pages.append([m["person_id"] for m in body["members"]])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages
        assert len(pages) < 1_000, "the cursor does not advance"


def fill_at_risk(api: Api, n: int, prefix: str) -> set[str]:
    users = [f"{prefix}-{i:04d}" for i in range(n)]
    send(api, *(message for user in users for message in abandon(user, 10)))
    return {api.person(user) for user in users}


def test_members_are_paged_by_cursor_each_exactly_once(fresh_api: Api) -> None:
    api = fresh_api
    everyone = fill_at_risk(api, 55, "member")

    for limit in (7, PAGE_SIZE, 10_000):
        pages = members_pages(api, limit)
        flat = [person for page in pages for person in page]
        assert len(flat) == len(set(flat)) == 55, limit
        assert set(flat) == everyone
        assert flat == sorted(flat)
        assert all(len(page) <= min(limit, PAGE_SIZE) for page in pages)
    assert [len(p) for p in members_pages(api, 10_000)] == [20, 20, 15]  # bounded pages
    sizes = [len(p) for p in members_pages(api, 11)]  # a page count that divides evenly
    assert sizes[:5] == [11] * 5 and sum(sizes) == 55


def test_members_entering_while_paging_do_not_repeat_anyone(fresh_api: Api) -> None:
    api = fresh_api
    first_wave = fill_at_risk(api, 30, "early")
    seen: list[str] = []
    response = api.get("/v1/segments/At-Risk/members", params={"limit": 10}).json()
    seen += [m["person_id"] for m in response["members"]]
    fill_at_risk(api, 20, "late")
    cursor = response["next_cursor"]
    while cursor is not None:
        page = api.get("/v1/segments/At-Risk/members", params={"limit": 10, "cursor": cursor})
        seen += [m["person_id"] for m in page.json()["members"]]
        cursor = page.json()["next_cursor"]

    assert len(seen) == len(set(seen))
    assert first_wave <= set(seen)


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"limit": 10_001}, 422),
        ({"limit": 0}, 422),
        ({"limit": "ten"}, 422),
        ({"cursor": "%%%not base64"}, 400),
        ({"cursor": "x" * 1025}, 422),
    ],
)
def test_bad_paging_parameters_are_4xx(api: Api, params: dict[str, Any], status: int) -> None:
    response = api.get("/v1/segments/At-Risk/members", params=params)
    assert response.status_code == status
    assert response.json()


# ---------------------------------------------------------------------- marketers


def test_marketers_see_pseudonymised_person_ids(
    fresh_api: Api, pseudonymization_key: bytes
) -> None:
    api = fresh_api
    user = uid()
    send(api, *abandon(user, 10))
    person = api.person(user)
    pseudonym = pseudonymise(person, pseudonymization_key)

    mine = segments_body(api, user, who="marketer")
    members = api.get("/v1/segments/At-Risk/members", who="marketer")
    assert mine["person_id"] == pseudonym != person
    assert [m["person_id"] for m in members.json()["members"]] == [pseudonym]
    assert person not in members.text and person not in str(mine)
    assert segments_body(api, user, who="analyst")["person_id"] == person
    assert api.get(f"/v1/profiles/{user}", who="marketer").status_code == 403


def test_marketers_are_refused_without_a_pseudonymisation_key(
    fresh_api: Api, no_pseudonymization_key: None
) -> None:
    api = fresh_api
    user = uid()
    send(api, *abandon(user, 10))

    for path in (f"/v1/profiles/{user}/segments", "/v1/segments/At-Risk/members"):
        response = api.get(path, who="marketer")
        assert response.status_code == 403
        assert "SEGMINT_PSEUDONYMIZATION_KEY" in response.json()["detail"]
        assert api.get(path, who="analyst").status_code == 200


# ---------------------------------------------------------------------- operations


def metric_values(api: Api) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = api.get("/metrics", who="auditor")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def test_metrics_count_accepted_rejected_and_duplicate_messages(fresh_api: Api) -> None:
    api = fresh_api
    user = uid()
    messages = [
        *abandon(user, 10),
        {"type": "page", "userId": user, "messageId": "page-1"},
        {"type": "page", "userId": user, "messageId": "page-1"},
        {"type": "track", "event": "No One"},
        {"type": "checkout", "userId": user},
    ]
    api.post("/v1/batch", {"batch": messages})
    api.post("/v1/page", {"userId": user, "messageId": "page-1"})
    api.post("/v1/track", {"userId": user})

    values = metric_values(api)
    assert values[("segmint_events_received_total", ())] == 8
    assert values[("segmint_events_accepted_total", ())] == 3
    assert values[("segmint_events_duplicate_total", ())] == 2
    rejected = {
        dict(labels)["reason"]: value
        for (name, labels), value in values.items()
        if name == "segmint_events_rejected_total"
    }
    assert rejected == {"missing_identity": 1, "unknown_type": 1, "missing_event_name": 1}
    entered = (("change", "entered"), ("source", "trigger"))
    assert values[("segmint_membership_changes_total", entered)] == 1


def test_request_latency_is_observed_per_route_template(fresh_api: Api) -> None:
    api = fresh_api
    api.post("/v1/track", {"userId": uid(), "event": "Product Viewed"})
    api.post("/v1/track", {"userId": uid(), "event": "Product Viewed"})
    assert api.get("/v1/profiles/nobody-at-all", who="analyst").status_code == 404
    assert api.get("/v1/no-such-route", who="analyst").status_code == 404

    values = metric_values(api)

    def count(route: str) -> float:
        return values.get(("segmint_request_seconds_count", (("route", route),)), 0)

    assert count("/v1/track") == 2
    assert count("/v1/profiles/{identifier}") == 1
    assert count("unmatched") == 1


def test_health_and_readiness(project_dir: Any) -> None:
    service = open_service(project_dir, clock=Clock())
    try:
        add_keys(service)
        app = create_app(service)
        idle = TestClient(app)  # no lifespan: the service is not started
        assert idle.get("/healthz").json() == {"status": "ok"}
        not_ready = idle.get("/readyz")
        assert not_ready.status_code == 503 and not_ready.json() == {"status": "starting"}

        with TestClient(app) as running:
            assert running.get("/healthz").status_code == 200
            ready = running.get("/readyz")
            assert ready.status_code == 200 and ready.json() == {"status": "ready"}
        assert idle.get("/readyz").status_code == 503  # stopped with the app
    finally:
        service.close()
