"""Tests of the synthetic retail data generator (segmint.data.synthetic)."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from collections import Counter
from dataclasses import FrozenInstanceError
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import phonenumbers
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score
from sklearn.preprocessing import StandardScaler

from segmint.data.synthetic import (
    SEGMENT_NAMES,
    SEGMENTS,
    DirtRates,
    GeneratedData,
    _consents,
    _files,
    _generate,
    _segments,
    _text,
    generate,
)
from segmint.data.synthetic._names import COUNTRIES
from segmint.errors import UserInputError

SEED = 20261123
N = 2_000
END = date(2026, 6, 30)
END_TS = pd.Timestamp("2026-06-30")

FILE_KEYS = {
    "customers",
    "products",
    "orders",
    "order_items",
    "events",
    "consents",
    "truth",
    "duplicates",
    "manifest",
}
COLUMNS = {
    "customers": [
        "customer_id",
        "email",
        "phone",
        "first_name",
        "last_name",
        "birth_date",
        "age",
        "gender",
        "street",
        "city",
        "postcode",
        "country",
        "signup_at",
        "updated_at",
        "loyalty_id",
        "income",
    ],
    "products": ["product_id", "name", "category", "brand", "price"],
    "orders": [
        "order_id",
        "customer_id",
        "ordered_at",
        "amount",
        "currency",
        "discount",
        "channel",
        "status",
    ],
    "order_items": ["order_id", "line_no", "product_id", "quantity", "unit_price", "discount"],
    "consents": ["customer_id", "purpose", "granted", "at", "source"],
    "truth": ["customer_id", "segment"],
    "duplicates": ["duplicate_customer_id", "original_customer_id"],
}
EVENT_COLUMNS = [
    "messageId",
    "type",
    "event",
    "userId",
    "anonymousId",
    "timestamp",
    "sentAt",
    "receivedAt",
    "properties",
    "context",
    "traits",
]
TRACK_EVENTS = {
    "Product Viewed",
    "Product Added",
    "Checkout Started",
    "Order Completed",
    "Email Delivered",
    "Email Opened",
}
ALPHA2 = {c.alpha2: c.alpha2 for c in COUNTRIES} | {c.alpha3: c.alpha2 for c in COUNTRIES}
ALPHA2 |= {c.name: c.alpha2 for c in COUNTRIES}


# ---------------------------------------------------------------------------
# Reading the output back, keeping malformed lines apart.
# ---------------------------------------------------------------------------


def read_csv(path: Path) -> tuple[pd.DataFrame, list[str]]:
    """Rows with the header's field count as strings (None for empty), and the other lines."""
    good: list[list[str | None]] = []
    bad: list[str] = []
    with path.open(encoding="utf-8", newline="") as handle:
        lines = handle.read().splitlines()
    rows = csv.reader(lines)
    header = next(rows)
    for line, fields in zip(lines[1:], rows, strict=True):
        if len(fields) == len(header):
            good.append([f if f != "" else None for f in fields])
        else:
            bad.append(line)
    return pd.DataFrame(good, columns=header, dtype=object), bad


def read_jsonl(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    good, bad = [], []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            try:
                good.append(json.loads(line))
            except json.JSONDecodeError:
                bad.append(line)
    return good, bad


class Loaded:
    """A generated data set read back into data frames."""

    def __init__(self, data: GeneratedData) -> None:
        self.data = data
        self.manifest = json.loads(data.files["manifest"].read_text())
        self.bad: dict[str, list[str]] = {}
        frames: dict[str, pd.DataFrame] = {}
        for name in ("customers", "products", "orders", "order_items", "consents"):
            path = data.files[name]
            if path.suffix == ".csv":
                frames[name], self.bad[name] = read_csv(path)
            else:
                frames[name] = pq.read_table(path).to_pandas()
                self.bad[name] = []
        for name in ("truth", "duplicates"):
            frames[name], self.bad[name] = read_csv(data.files[name])
        if data.files["events"].suffix == ".jsonl":
            records, self.bad["events"] = read_jsonl(data.files["events"])
            events = pd.DataFrame.from_records(records, columns=EVENT_COLUMNS)
        else:
            events = pq.read_table(data.files["events"]).to_pandas()
            for column in ("properties", "context", "traits"):
                events[column] = [
                    json.loads(v) if isinstance(v, str) else None for v in events[column]
                ]
            self.bad["events"] = []
        frames["events"] = events
        self.raw = frames
        self.customers = self._typed_customers(frames["customers"])
        self.orders = self._typed_orders(frames["orders"])
        self.items = frames["order_items"].assign(
            line_no=lambda f: f.line_no.astype(int),
            quantity=lambda f: f.quantity.astype(int),
            unit_price=lambda f: f.unit_price.astype(float),
            discount=lambda f: f.discount.astype(float),
        )
        self.consents = frames["consents"].assign(
            at=lambda f: _to_time(f["at"]),
            granted=lambda f: f.granted.map(
                lambda v: v if isinstance(v, bool | np.bool_) else v == "true"
            ),
        )
        self.events = events.assign(
            ts=lambda f: _to_time(f["timestamp"]),
            sent=lambda f: _to_time(f["sentAt"]),
            received=lambda f: _to_time(f["receivedAt"]),
        )
        self.truth = frames["truth"].set_index("customer_id")["segment"]
        self.duplicates = frames["duplicates"]

    @staticmethod
    def _typed_customers(frame: pd.DataFrame) -> pd.DataFrame:
        return frame.assign(
            age=pd.to_numeric(frame.age),
            signup_at=_to_time(frame.signup_at),
            updated_at=_to_time(frame.updated_at),
            birth_date=pd.to_datetime(frame.birth_date),
        )

    @staticmethod
    def _typed_orders(frame: pd.DataFrame) -> pd.DataFrame:
        return frame.assign(
            ordered_at=_to_time(frame.ordered_at),
            amount=frame.amount.astype(float),
            discount=frame.discount.astype(float),
        )


def _to_time(values: pd.Series) -> pd.Series:
    parsed = pd.to_datetime(values, utc=True, format="ISO8601")
    return parsed.dt.tz_localize(None)


@pytest.fixture(scope="module")
def csv_data(tmp_path_factory: pytest.TempPathFactory) -> Loaded:
    return Loaded(generate(tmp_path_factory.mktemp("csv"), customers=N, seed=SEED, end=END))


@pytest.fixture(scope="module")
def parquet_data(tmp_path_factory: pytest.TempPathFactory) -> Loaded:
    out = tmp_path_factory.mktemp("parquet")
    return Loaded(generate(out, customers=1_000, seed=SEED + 1, fmt="parquet", end=END))


@pytest.fixture(params=["csv", "parquet"])
def loaded(request: pytest.FixtureRequest, csv_data: Loaded, parquet_data: Loaded) -> Loaded:
    return csv_data if request.param == "csv" else parquet_data


def features(d: Loaded) -> pd.DataFrame:
    """RFM and engagement features per original customer, as a user might compute them."""
    orders = d.orders.drop_duplicates()
    orders = orders[orders.ordered_at < END_TS]
    by = orders.groupby("customer_id")
    f = pd.DataFrame(index=d.truth.index)
    f["recency"] = (END_TS - by.ordered_at.max()).dt.total_seconds() / 86_400
    f["frequency"] = by.size()
    f["monetary"] = by.amount.sum().clip(lower=0)
    f["aov"] = f.monetary / f.frequency
    f["discount_share"] = by.discount.sum() / (by.amount.sum().abs() + by.discount.sum())
    ev = d.events[d.events.userId.notna() & (d.events.ts < END_TS)]
    site = ev[~ev.event.isin(["Email Delivered", "Email Opened"])].sort_values(["userId", "ts"])
    gap = site.groupby("userId").ts.diff()
    site = site.assign(new=gap.isna() | (gap > pd.Timedelta(minutes=30)))
    f["sessions"] = site.groupby("userId").new.sum()
    f["views"] = ev[ev.event == "Product Viewed"].groupby("userId").size()
    f["adds"] = ev[ev.event == "Product Added"].groupby("userId").size()
    delivered = ev[ev.event == "Email Delivered"].groupby("userId").size()
    opened = ev[ev.event == "Email Opened"].groupby("userId").size()
    f["open_rate"] = (opened / delivered).clip(upper=1)
    f["since_visit"] = (END_TS - site.groupby("userId").ts.max()).dt.total_seconds() / 86_400
    never = 730.0
    return f.fillna(
        {
            "recency": never,
            "since_visit": never,
            "frequency": 0,
            "monetary": 0,
            "aov": 0,
            "discount_share": 0,
            "sessions": 0,
            "views": 0,
            "adds": 0,
            "open_rate": 0,
        }
    )


def within(observed: float, rate: float, base: int) -> bool:
    """Observed count is the rate applied to base, within five binomial standard deviations."""
    expected = rate * base
    return abs(observed - expected) <= 5 * math.sqrt(base * rate * (1 - rate)) + 3


# ---------------------------------------------------------------------------
# Files and columns
# ---------------------------------------------------------------------------


def test_writes_every_file_with_the_documented_columns(csv_data: Loaded) -> None:
    files = csv_data.data.files
    assert set(files) == FILE_KEYS
    assert all(path.exists() for path in files.values())
    assert files["events"].name == "events.jsonl"
    for name, columns in COLUMNS.items():
        header = files[name].read_text(encoding="utf-8").splitlines()[0]
        assert next(csv.reader([header])) == columns


def test_parquet_files_have_typed_columns(parquet_data: Loaded) -> None:
    files = parquet_data.data.files
    assert files["events"].name == "events.parquet"
    for name, columns in COLUMNS.items():
        if name in ("truth", "duplicates"):
            assert files[name].suffix == ".csv"
            continue
        schema = pq.read_schema(files[name])
        assert schema.names == columns
    customers = pq.read_schema(files["customers"])
    assert str(customers.field("signup_at").type) in (
        "timestamp[s, tz=UTC]",
        "timestamp[ms, tz=UTC]",
    )
    assert str(customers.field("birth_date").type) == "date32[day]"
    assert str(customers.field("age").type) == "int64"
    events = pq.read_schema(files["events"])
    assert events.names == EVENT_COLUMNS
    assert str(events.field("timestamp").type) == "timestamp[ms, tz=UTC]"
    assert str(events.field("properties").type) == "string"


def test_csv_timestamps_are_utc_seconds(csv_data: Loaded) -> None:
    raw = csv_data.raw
    pattern = r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$"
    assert raw["orders"].ordered_at.str.match(pattern).all()
    assert raw["customers"].signup_at.str.match(pattern).all()
    assert raw["consents"]["at"].str.match(pattern).all()
    assert raw["customers"].birth_date.str.match(r"^\d{4}-\d{2}-\d{2}$").all()


def test_events_follow_the_segment_spec(loaded: Loaded) -> None:
    events = loaded.events
    iso = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$"
    if loaded.data.files["events"].suffix == ".jsonl":
        for column in ("timestamp", "sentAt", "receivedAt"):
            assert events[column].str.match(iso).all()
    assert set(events.type) == {"track", "page", "identify"}
    track = events[events.type == "track"]
    assert set(track.event) == TRACK_EVENTS
    assert events[events.type != "track"].event.isna().all()
    assert events.messageId.is_unique
    assert (events.userId.notna() | events.anonymousId.notna()).all()
    assert events.userId.isna().any(), "some sessions are anonymous"
    identify = events[events.type == "identify"]
    assert identify.traits.map(lambda t: {"email", "firstName", "lastName"} <= set(t)).all()
    assert events[events.type != "identify"].traits.isna().all()
    pages = events[events.type == "page"]
    assert pages.properties.map(lambda p: {"name", "url", "path"} <= set(p)).all()
    viewed = events[events.event == "Product Viewed"].properties
    assert viewed.map(lambda p: {"product_id", "category", "price", "url"} <= set(p)).all()
    done = events[events.event == "Order Completed"].properties
    assert done.map(lambda p: {"order_id", "revenue", "currency"} <= set(p)).all()
    site = events[events.anonymousId.notna()]
    assert site.context.map(lambda c: {"ip", "userAgent"} <= set(c)).all()
    consent = site.context.map(lambda c: c.get("consent", {}).get("categoryPreferences"))
    assert 0.2 < consent.notna().mean() < 0.8, "consent is in the context of some events"
    assert set(consent.dropna().iloc[0]) == {
        "analytics",
        "personalization",
        "email_marketing",
        "advertising",
    }
    real = events[events.ts.dt.year < 2099]
    assert (real.sent >= real.ts).all()
    assert (real.received >= real.ts).all()
    # Slow device clocks: timestamp and sentAt early by the same amount, receivedAt right.
    skew = real.received - real.sent
    assert (skew > pd.Timedelta(minutes=1)).any() and (skew < pd.Timedelta(minutes=16)).all()


def test_event_users_and_products_exist(csv_data: Loaded) -> None:
    events = csv_data.events
    known = set(csv_data.truth.index)
    assert set(events.userId.dropna()) <= known
    products = set(csv_data.raw["products"].product_id)
    viewed = events[events.event.isin(["Product Viewed", "Product Added"])].properties
    assert set(viewed.map(lambda p: p["product_id"])) <= products
    assert set(csv_data.items.product_id) <= products


def test_catalogue_has_about_ten_categories(csv_data: Loaded) -> None:
    products = csv_data.raw["products"]
    assert 8 <= products.category.nunique() <= 12
    assert products.product_id.is_unique
    assert (products.price.astype(float) > 0).all()


# ---------------------------------------------------------------------------
# Determinism and chunking
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_same_arguments_give_byte_identical_files(tmp_path: Path, fmt: str) -> None:
    first = generate(tmp_path / "a", customers=300, seed=5, fmt=fmt)  # type: ignore[arg-type]
    second = generate(tmp_path / "b", customers=300, seed=5, fmt=fmt)  # type: ignore[arg-type]
    for key, path in first.files.items():
        assert path.read_bytes() == second.files[key].read_bytes(), key
    other = generate(tmp_path / "c", customers=300, seed=6, fmt=fmt)  # type: ignore[arg-type]
    assert other.files["orders"].read_bytes() != first.files["orders"].read_bytes()


def test_chunks_number_customers_and_orders_without_gaps_or_clashes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_generate, "CHUNK_CUSTOMERS", 128)
    data = Loaded(generate(tmp_path / "a", customers=300, seed=3, dirty=False))
    assert list(data.truth.index) == [f"C{i:08d}" for i in range(1, 301)]
    assert data.orders.order_id.is_unique
    numbers = sorted(int(o[1:]) for o in data.orders.order_id)
    assert numbers == list(range(1, len(numbers) + 1))
    again = generate(tmp_path / "b", customers=300, seed=3, dirty=False)
    for key, path in data.data.files.items():
        assert path.read_bytes() == again.files[key].read_bytes(), key

    dirty = Loaded(
        generate(
            tmp_path / "c", customers=300, seed=3, dirt_rates=DirtRates(duplicate_customers=0.2)
        )
    )
    ids = list(dirty.duplicates.duplicate_customer_id)
    assert len(ids) == len(set(ids)) > 0
    assert not set(ids) & set(dirty.truth.index)
    assert set(dirty.customers.customer_id) == set(ids) | set(dirty.truth.index)


# ---------------------------------------------------------------------------
# Planted truth
# ---------------------------------------------------------------------------


def test_truth_covers_every_original_customer_with_six_segments(csv_data: Loaded) -> None:
    truth = csv_data.truth
    assert list(truth.index) == [f"C{i:08d}" for i in range(1, N + 1)]
    assert set(truth) == set(SEGMENT_NAMES)
    assert len(SEGMENT_NAMES) == 6
    sizes = truth.value_counts()
    for profile in SEGMENTS:
        assert within(sizes[profile.name], profile.share, N), profile.name
    shares = [s.share for s in SEGMENTS]
    assert math.isclose(sum(shares), 1.0)
    assert len(set(shares)) > 1, "segments have unequal shares"
    manifest = csv_data.manifest["segments"]
    assert {k: v["customers"] for k, v in manifest.items()} == sizes.to_dict()


def test_segments_differ_in_the_intended_direction(csv_data: Loaded) -> None:
    f = features(csv_data)
    median = f.groupby(csv_data.truth).median()
    mean = f.groupby(csv_data.truth).mean()
    assert median.recency["champions"] < median.recency["loyal"]
    assert median.recency["loyal"] < median.recency["big_spenders_at_risk"]
    assert 120 <= median.recency["big_spenders_at_risk"] <= 275
    assert median.frequency.idxmax() == "champions"
    assert median.monetary.idxmax() == "champions"
    assert median.aov.idxmax() == "big_spenders_at_risk"
    assert mean.discount_share.idxmax() == "bargain_hunters"
    assert median.frequency["bargain_hunters"] > median.frequency["loyal"]
    assert median.aov["bargain_hunters"] < median.aov["loyal"]
    assert median.frequency["dormant_browsers"] == 0
    ev = csv_data.events
    recent = ev[(ev.event == "Product Viewed") & (ev.ts >= END_TS - pd.Timedelta(days=90))]
    recent_views = recent.groupby("userId").size().reindex(f.index, fill_value=0)
    recent_median = recent_views.groupby(csv_data.truth).median()
    assert recent_median.idxmax() == "dormant_browsers"
    assert median.views["dormant_browsers"] > 2 * median.views["new"]
    assert median.since_visit["dormant_browsers"] < 30
    assert median.since_visit["big_spenders_at_risk"] > 90
    assert mean.open_rate["champions"] > 3 * mean.open_rate["dormant_browsers"]
    new = csv_data.truth[csv_data.truth == "new"].index
    signup = csv_data.customers.drop_duplicates("customer_id").set_index("customer_id").signup_at
    assert ((END_TS - signup[new]).dt.days <= 45).all()
    assert f.frequency[new].between(0, 2).all()


def test_kmeans_on_rfm_and_engagement_recovers_the_planted_segments(csv_data: Loaded) -> None:
    f = features(csv_data)
    x = f.copy()
    for column in (
        "recency",
        "frequency",
        "monetary",
        "aov",
        "sessions",
        "views",
        "adds",
        "since_visit",
    ):
        x[column] = np.log1p(x[column])
    labels = KMeans(6, n_init=10, random_state=0).fit_predict(StandardScaler().fit_transform(x))
    assert adjusted_rand_score(csv_data.truth[f.index], labels) >= 0.9


def test_averages_are_about_ten_orders_and_fifty_events(csv_data: Loaded) -> None:
    assert 8 <= csv_data.data.counts["orders"] / N <= 13
    assert 40 <= csv_data.data.counts["events"] / N <= 70


def test_events_come_in_sessions(csv_data: Loaded) -> None:
    site = csv_data.events[csv_data.events.anonymousId.notna()].sort_values(["anonymousId", "ts"])
    gaps = site.groupby("anonymousId").ts.diff().dropna()
    assert (gaps < pd.Timedelta(minutes=15)).mean() > 0.6, "bursts of events minutes apart"
    assert (gaps > pd.Timedelta(hours=6)).mean() > 0.05, "separated by hours or days"


# ---------------------------------------------------------------------------
# Orders, items and events agree
# ---------------------------------------------------------------------------


def test_order_amount_is_the_sum_of_its_lines(loaded: Loaded) -> None:
    items = loaded.items.assign(net=lambda f: f.quantity * f.unit_price - f.discount)
    by_order = items.groupby("order_id").agg(net=("net", "sum"), discount=("discount", "sum"))
    orders = loaded.orders.drop_duplicates().set_index("order_id")
    joined = orders.join(by_order.add_suffix("_lines"), how="left")
    assert joined.net_lines.notna().all(), "every order has lines"
    assert np.allclose(joined.amount.abs(), joined.net_lines, atol=0.006)
    assert np.allclose(joined.discount, joined.discount_lines, atol=0.006)
    negative = joined.amount < 0
    assert negative.sum() == loaded.manifest["dirt"]["negative_amount"]
    assert (items.quantity > 0).all() and (items.unit_price > 0).all()
    assert (
        items.groupby("order_id").line_no.apply(lambda s: list(s) == list(range(1, len(s) + 1)))
    ).all()


def test_order_completed_events_match_web_and_app_orders(loaded: Loaded) -> None:
    events = loaded.events
    completed = events[events.event == "Order Completed"]
    completed = completed.assign(order_id=completed.properties.map(lambda p: p["order_id"]))
    orders = loaded.orders.drop_duplicates().set_index("order_id")
    online = orders[orders.channel.isin(["web", "app"])]
    assert completed.order_id.is_unique
    assert set(completed.order_id) == set(online.index)
    matched = online.loc[completed.order_id]
    assert (completed.userId.to_numpy() == matched.customer_id.to_numpy()).all()
    revenue = completed.properties.map(lambda p: p["revenue"]).to_numpy()
    assert np.allclose(revenue, matched.amount.abs().to_numpy())
    # Corrected for clock skew, the event happened when the order was placed.
    corrected = completed.received - (completed.sent - completed.ts)
    real = (matched.ordered_at.dt.year.to_numpy() < 2099) & (completed.ts.dt.year.to_numpy() < 2099)
    delta = (corrected.to_numpy() - matched.ordered_at.to_numpy())[real]
    assert (np.abs(delta) < np.timedelta64(5, "s")).all()


def test_everything_happens_before_end_except_future_dirt(loaded: Loaded) -> None:
    end = pd.Timestamp(END)
    orders = loaded.orders
    future_orders = orders.ordered_at >= end
    assert (orders.ordered_at[future_orders].dt.year == 2099).all()
    events = loaded.events
    future_events = events.ts >= end
    assert (events.ts[future_events].dt.year == 2099).all()
    assert (events.sent < end).all() and (events.received < end).all()
    customers = loaded.customers
    assert (customers.signup_at < end).all() and (customers.updated_at < end).all()
    assert (customers.updated_at >= customers.signup_at).all()
    assert (customers.birth_date < end).all()
    assert (loaded.consents["at"] < end).all()
    start = pd.Timestamp(loaded.manifest["history"]["start"]).tz_localize(None)
    assert (orders.ordered_at >= start - pd.Timedelta(days=1)).all()


def test_consents_have_history_and_match_event_context(csv_data: Loaded) -> None:
    consents = csv_data.consents
    assert set(consents.purpose) == {
        "analytics",
        "personalization",
        "email_marketing",
        "advertising",
    }
    assert set(consents.source) <= {"web_form", "app", "crm"}
    per_customer = consents.groupby("customer_id").purpose.nunique()
    assert (per_customer == 4).all() and len(per_customer) == N
    ordered = consents.sort_values(["customer_id", "purpose", "at"])
    previous = ordered.groupby(["customer_id", "purpose"]).granted.shift()
    withdrawn = (previous == True) & (ordered.granted == False)  # noqa: E712
    assert withdrawn.sum() > 0.03 * N, "some grants are later withdrawn"

    # The consent object in an event's context is the state in force at that time.
    history: dict[tuple[str, str], list[tuple[pd.Timestamp, bool]]] = {}
    for row in ordered.itertuples():
        history.setdefault((row.customer_id, row.purpose), []).append((row.at, bool(row.granted)))
    site = csv_data.events[csv_data.events.userId.notna() & csv_data.events.anonymousId.notna()]
    with_consent = site[site.context.map(lambda c: "consent" in c)].head(500)
    assert len(with_consent) == 500
    corrected = with_consent.received - (with_consent.sent - with_consent.ts)
    for user, when, context in zip(
        with_consent.userId, corrected, with_consent.context, strict=True
    ):
        for purpose, value in context["consent"]["categoryPreferences"].items():
            changes = history[(user, purpose)]
            in_force = [granted for at, granted in changes if at <= when + pd.Timedelta("3s")]
            assert in_force[-1] == value


def test_email_events_respect_email_consent(csv_data: Loaded) -> None:
    events = csv_data.events
    delivered = events[events.event == "Email Delivered"]
    consents = csv_data.consents[csv_data.consents.purpose == "email_marketing"]
    ever = set(consents[consents.granted].customer_id)
    assert set(delivered.userId) <= ever
    opened = events[events.event == "Email Opened"]

    def sent(frame: pd.DataFrame) -> set[tuple[str, str]]:
        campaign = frame.properties.map(lambda p: p["campaign_id"])
        return set(zip(frame.userId, campaign, strict=True))

    assert sent(opened) <= sent(delivered)


# ---------------------------------------------------------------------------
# Customers: identities and variety
# ---------------------------------------------------------------------------


def test_phones_are_valid_for_their_country_in_varied_forms(loaded: Loaded) -> None:
    customers = loaded.customers.dropna(subset=["phone"])
    forms = Counter()
    for phone, country in zip(customers.phone, customers.country, strict=True):
        region = ALPHA2[country]
        number = phonenumbers.parse(phone, region)
        assert phonenumbers.is_valid_number(number), (phone, country)
        assert phonenumbers.region_code_for_number(number) == region
        expected_e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
        if phone.startswith("+") and " " in phone:
            international = phonenumbers.PhoneNumberFormat.INTERNATIONAL
            assert phone == phonenumbers.format_number(number, international)
        forms["e164" if phone == expected_e164 else phone[:2]] += 1
    assert len(forms) >= 3


def test_countries_are_mostly_codes_with_some_names(csv_data: Loaded) -> None:
    countries = csv_data.customers.country
    assert set(countries) <= set(ALPHA2)
    alpha2 = countries.isin([c.alpha2 for c in COUNTRIES]).mean()
    names = countries.isin([c.name for c in COUNTRIES]).mean()
    alpha3 = countries.isin([c.alpha3 for c in COUNTRIES]).mean()
    assert alpha2 > 0.7 and names > 0.02 and alpha3 > 0.01


def test_originals_have_unique_emails_and_plausible_fields(csv_data: Loaded) -> None:
    originals = csv_data.customers[csv_data.customers.customer_id.isin(csv_data.truth.index)]
    originals = originals.drop_duplicates()
    emails = originals.email.dropna().str.strip().str.lower()
    assert emails.is_unique
    assert emails.str.match(r"^[a-z0-9._]+@[a-z.]+$").all()
    sane = originals.age.between(0, 120)
    born = originals.birth_date[sane]
    age_from_birth = (pd.Timestamp(END) - born).dt.days / 365.2425
    assert (np.abs(age_from_birth - originals.age[sane]) < 1.01).all()
    assert originals.first_name.notna().all() and originals.last_name.notna().all()
    assert originals.street.str.contains(r"\d").all()


def test_duplicates_share_a_normalised_email_with_their_original(csv_data: Loaded) -> None:
    customers = csv_data.customers.drop_duplicates().set_index("customer_id")
    pairs = csv_data.duplicates
    assert len(pairs) > 0
    dup = customers.loc[pairs.duplicate_customer_id]
    orig = customers.loc[pairs.original_customer_id]
    normalised = lambda s: s.str.strip().str.lower()  # noqa: E731
    assert (normalised(dup.email).to_numpy() == normalised(orig.email).to_numpy()).all()
    assert (dup.email.to_numpy() != orig.email.to_numpy()).all(), "a variant, not a copy"
    assert (dup.first_name.to_numpy() == orig.first_name.to_numpy()).all()
    assert (dup.birth_date.to_numpy() == orig.birth_date.to_numpy()).all()
    assert (dup.signup_at.to_numpy() > orig.signup_at.to_numpy()).all()
    both = dup.phone.notna().to_numpy() & orig.phone.notna().to_numpy()
    e164 = lambda p, c: phonenumbers.format_number(  # noqa: E731
        phonenumbers.parse(p, ALPHA2[c]), phonenumbers.PhoneNumberFormat.E164
    )
    for a, b, c in zip(dup.phone[both], orig.phone[both], orig.country[both], strict=True):
        assert e164(a, c) == e164(b, c)


# ---------------------------------------------------------------------------
# Dirt
# ---------------------------------------------------------------------------


def _observed_dirt(d: Loaded) -> tuple[dict[str, int], dict[str, int]]:
    """Count each kind of dirt in the files, and the number of rows it applies to."""
    customers = d.customers
    distinct = customers.drop_duplicates()
    orders = d.orders
    distinct_orders = orders.drop_duplicates()
    observed = {
        "missing_email": int(distinct.email.isna().sum()),
        "missing_phone": int(distinct.phone.isna().sum()),
        "missing_age": int(distinct.age.isna().sum()),
        "impossible_age": int((~distinct.age.isna() & ~distinct.age.between(0, 120)).sum()),
        "duplicate_customers": len(d.duplicates),
        "exact_duplicate_rows": (len(customers) - len(distinct))
        + (len(orders) - len(distinct_orders)),
        "negative_amount": int((distinct_orders.amount < 0).sum()),
        "future_timestamp": int((distinct_orders.ordered_at.dt.year >= 2099).sum())
        + int((d.events.ts.dt.year >= 2099).sum()),
        "malformed_lines": sum(len(v) for v in d.bad.values()),
    }
    base = {
        "missing_email": len(distinct),
        "missing_phone": len(distinct),
        "missing_age": len(distinct),
        "impossible_age": len(distinct),
        "duplicate_customers": len(d.truth),
        "exact_duplicate_rows": len(distinct) + len(distinct_orders),
        "negative_amount": len(distinct_orders),
        "future_timestamp": len(distinct_orders) + len(d.events),
        "malformed_lines": sum(d.data.counts[k] for k in _files.BREAKABLE),
    }
    return observed, base


def test_every_kind_of_dirt_is_present_at_its_rate_and_counted(csv_data: Loaded) -> None:
    observed, base = _observed_dirt(csv_data)
    rates = DirtRates()
    assert set(observed) == set(csv_data.manifest["dirt"]) == set(csv_data.data.dirt)
    for kind, count in observed.items():
        assert count > 0, kind
        assert count == csv_data.manifest["dirt"][kind] == csv_data.data.dirt[kind], kind
        assert within(count, getattr(rates, kind), base[kind]), (kind, count, base[kind])
    assert csv_data.manifest["dirt_rates"] == rates.as_dict()


def test_parquet_has_the_same_dirt_but_no_malformed_lines(parquet_data: Loaded) -> None:
    observed, _ = _observed_dirt(parquet_data)
    assert observed == parquet_data.manifest["dirt"] == parquet_data.data.dirt
    assert observed["malformed_lines"] == 0
    assert observed["missing_phone"] > 0 and observed["exact_duplicate_rows"] > 0


def test_malformed_lines_really_are_malformed(tmp_path: Path) -> None:
    data = Loaded(
        generate(tmp_path, customers=300, seed=11, dirt_rates=DirtRates(malformed_lines=0.02))
    )
    by_file = data.manifest["dirt_by_file"]["malformed_lines"]
    for name in ("customers", "orders", "order_items", "consents", "events"):
        assert len(data.bad[name]) == by_file[name] > 0, name
    assert not data.bad["truth"] and not data.bad["duplicates"]
    for line in data.bad["events"]:
        with pytest.raises(json.JSONDecodeError):
            json.loads(line)
    width = len(COLUMNS["orders"])
    assert all(len(next(csv.reader([line]))) != width for line in data.bad["orders"])
    # Malformed lines are extra: the clean rows are all still there.
    assert (
        len(data.orders.drop_duplicates())
        == data.manifest["counts"]["orders"]
        - by_file["orders"]
        - data.manifest["dirt_by_file"]["exact_duplicate_rows"]["orders"]
    )


def test_clean_data_has_no_dirt(tmp_path: Path) -> None:
    data = Loaded(generate(tmp_path, customers=400, seed=2, dirty=False))
    assert set(data.data.dirt.values()) == {0}
    assert data.duplicates.empty
    observed, _ = _observed_dirt(data)
    assert set(observed.values()) == {0}
    assert len(data.customers) == 400


def test_custom_rates_are_applied(tmp_path: Path) -> None:
    rates = DirtRates(missing_email=0.5, negative_amount=0.0, future_timestamp=0.0)
    data = Loaded(generate(tmp_path, customers=300, seed=4, dirt_rates=rates))
    observed, base = _observed_dirt(data)
    assert within(observed["missing_email"], 0.5, base["missing_email"])
    assert observed["negative_amount"] == observed["future_timestamp"] == 0
    assert data.manifest["dirt_rates"]["missing_email"] == 0.5


# ---------------------------------------------------------------------------
# Arguments
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"customers": 0},
        {"customers": -5},
        {"customers": 2.5},
        {"customers": True},
        {"seed": -1},
        {"fmt": "xlsx"},
        {"years": 0.5},
        {"years": float("nan")},
        {"end": "2026-06-30"},
        {"dirt_rates": {"missing_email": 0.1}},
    ],
)
def test_invalid_arguments_raise_user_input_error(tmp_path: Path, kwargs: dict[str, Any]) -> None:
    with pytest.raises(UserInputError):
        generate(tmp_path, **{"customers": 10, **kwargs})
    assert not (tmp_path / "manifest.json").exists()


@pytest.mark.parametrize("value", [-0.01, 1.01, float("nan"), True, "0.1"])
def test_dirt_rates_must_be_fractions(value: Any) -> None:
    with pytest.raises(UserInputError, match="missing_phone"):
        DirtRates(missing_phone=value)


def test_dirt_rates_defaults_are_documented_and_frozen() -> None:
    rates = DirtRates()
    assert rates.as_dict() == {
        "missing_email": 0.03,
        "missing_phone": 0.10,
        "missing_age": 0.05,
        "duplicate_customers": 0.02,
        "exact_duplicate_rows": 0.005,
        "impossible_age": 0.005,
        "negative_amount": 0.002,
        "future_timestamp": 0.001,
        "malformed_lines": 0.0005,
    }
    with pytest.raises(FrozenInstanceError):
        rates.missing_email = 0.5  # type: ignore[misc]
    assert DirtRates(missing_email=0, malformed_lines=1).malformed_lines == 1


# ---------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------


def test_customers_without_any_event_or_order_are_fine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    quiet = tuple(
        dataclasses.replace(
            p,
            browse_sessions=0.0,
            browse_min=0,
            email_consent=0.0,
            channel=(0.0, 0.0, 1.0),
            buyer_share=0.0,
        )
        for p in SEGMENTS
    )
    monkeypatch.setattr(_segments, "SEGMENTS", quiet)
    monkeypatch.setattr(_consents, "GRANT_LATER", 0.0)
    for fmt in ("csv", "parquet"):
        data = Loaded(generate(tmp_path / fmt, customers=20, seed=1, fmt=fmt))  # type: ignore[arg-type]
        assert data.data.counts["events"] == data.data.counts["orders"] == 0
        assert len(data.truth) == 20 and len(data.events) == 0


@settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    customers=st.integers(1, 40),
    seed=st.integers(0, 2**31),
    fmt=st.sampled_from(["csv", "parquet"]),
    years=st.floats(1.0, 4.0),
)
def test_any_small_data_set_is_consistent(
    tmp_path_factory: pytest.TempPathFactory, customers: int, seed: int, fmt: str, years: float
) -> None:
    out = tmp_path_factory.mktemp("prop")
    data = Loaded(generate(out, customers=customers, seed=seed, fmt=fmt, years=years))  # type: ignore[arg-type]
    assert len(data.truth) == customers == data.data.counts["truth"]
    assert data.orders.order_id.nunique() == len(data.orders.drop_duplicates())
    items = data.items.assign(net=lambda f: f.quantity * f.unit_price - f.discount)
    net = items.groupby("order_id").net.sum()
    orders = data.orders.drop_duplicates().set_index("order_id")
    assert np.allclose(orders.amount.abs(), net.reindex(orders.index), atol=0.006)
    end = pd.Timestamp(END)
    assert ((data.events.ts < end) | (data.events.ts.dt.year == 2099)).all()
    assert data.data.counts["customers"] == len(data.customers) + len(data.bad["customers"])


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(-(10**12), 5 * 10**12), min_size=1, max_size=50))
def test_iso_timestamps_match_python(millis: list[int]) -> None:
    rendered = _text.iso_timestamps(np.array(millis)).to_pylist()
    for value, text in zip(millis, rendered, strict=True):
        moment = datetime.fromtimestamp(value / 1000, UTC)
        assert text == moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value % 1000:03d}Z"
        assert _text.sql_timestamps(np.array([value // 1000])).to_pylist()[0] == text[:19].replace(
            "T", " "
        )
