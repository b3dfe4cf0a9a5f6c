"""Validation: trimming, timestamp parsing, typed inputs used as they are."""

from __future__ import annotations

import json
from datetime import datetime

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from segmint.data.validation import _raw
from segmint.engine import Warehouse

ORDERS_YAML = """
sources:
  - name: shop
    kind: orders
    path: orders.csv
"""


def test_text_is_trimmed_and_empty_text_is_missing(make_project):
    project = make_project(
        ORDERS_YAML,
        {
            "orders.csv": (
                "order_id,customer_id,ordered_at,amount,channel\n"
                'o1,"\tc1 ",2024-01-01 10:00:00,"\t10.5\r","  Web\t"\n'
                'o2,"   ",2024-01-01,1,web\n'
                'o3,c3,2024-01-01,"",\n'
            )
        },
    )
    [result] = project.ingest()
    assert (result.rows_loaded, result.rows_quarantined) == (1, 2)
    assert project.warehouse.fetchall("SELECT customer_id, amount, channel FROM orders") == [
        ("c1", 10.5, "web")
    ]
    q = project.warehouse.fetchall("SELECT line, rule, column_name FROM quarantine ORDER BY 1")
    assert q == [(3, "required", "customer_id"), (4, "required", "amount")]


@settings(max_examples=60, deadline=None)
@given(
    st.one_of(
        st.none(),
        st.text(alphabet=st.sampled_from([" ", "\t", "\r", "\n", "a", "é", "-"]), max_size=6),
    )
)
def test_raw_text_is_trim_then_empty_as_missing(value):
    wh = Warehouse(":memory:")
    got = wh.scalar(f"SELECT {_raw('x')} FROM (SELECT ?::VARCHAR AS x)", [value])
    expected = None if value is None else (value.strip(" \t\r\n") or None)
    assert got == expected


@pytest.mark.parametrize(
    ("text", "timezone", "expected"),
    [
        ("2024-06-29T11:57:21.906Z", "UTC", "2024-06-29 11:57:21.906"),
        ("2024-06-29T11:57:21Z", "Europe/Berlin", "2024-06-29 11:57:21"),
        ("2024-01-01T10:00:00+02:00", "UTC", "2024-01-01 08:00:00"),
        ("2024-01-01 10:00:00-0500", "Europe/Berlin", "2024-01-01 15:00:00"),
        ("2024-01-01 10:00:00", "UTC", "2024-01-01 10:00:00"),
        ("2024-07-01 10:00:00", "Europe/Berlin", "2024-07-01 08:00:00"),
    ],
)
def test_timestamps_are_stored_as_naive_utc(make_project, text, timezone, expected):
    project = make_project(
        ORDERS_YAML.replace("path: orders.csv", f"path: orders.csv\n    timezone: {timezone}"),
        {"orders.csv": f"order_id,customer_id,ordered_at,amount\no1,c1,{text},1\n"},
    )
    [result] = project.ingest()
    assert result.rows_loaded == 1
    assert project.warehouse.scalar("SELECT ordered_at FROM orders") == pd.Timestamp(expected)


def test_an_unparseable_timestamp_is_a_type_failure(make_project):
    project = make_project(
        ORDERS_YAML,
        {"orders.csv": "order_id,customer_id,ordered_at,amount\no1,c1,2024-13-45Z,1\n"},
    )
    [result] = project.ingest()
    assert result.rows_quarantined == 1
    rule, message = project.warehouse.fetchall("SELECT rule, message FROM quarantine")[0]
    assert rule == "type"
    assert "ordered_at: 2024-13-45Z is not a valid timestamp" in message


def test_typed_parquet_columns_are_used_as_they_are(make_project, tmp_path):
    table = pa.table(
        {
            "order_id": ["o1", "o2", "o3"],
            "customer_id": pa.array([1, 2, 3], pa.int32()),
            "ordered_at": pa.array(
                [datetime(2024, 7, 1, 12), datetime(2024, 1, 15, 12), datetime(2099, 1, 1)],
                pa.timestamp("us"),
            ),
            "amount": pa.array([10, -5, 1], pa.int64()),
        }
    )
    pq.write_table(table, tmp_path / "orders.parquet")
    project = make_project(
        """
sources:
  - name: shop
    kind: orders
    path: orders.parquet
    timestamp_format: "%d/%m/%Y %H:%M"
    timezone: Europe/Berlin
"""
    )
    [result] = project.ingest()
    assert (result.rows_loaded, result.rows_quarantined) == (1, 2)
    # Naive timestamps are read in the source's zone; the text format does not apply.
    assert project.warehouse.fetchall("SELECT customer_id, ordered_at, amount FROM orders") == [
        ("1", pd.Timestamp("2024-07-01 10:00"), 10.0)
    ]
    q = project.warehouse.fetchall("SELECT line, rule, message FROM quarantine ORDER BY line")
    assert [(line, rule) for line, rule, _ in q] == [(2, "min"), (3, "not_in_future")]
    assert "amount: -5 is below the minimum 0" in q[0][2]
    assert json.loads(project.warehouse.scalar("SELECT raw FROM quarantine WHERE line = 2")) == {
        "order_id": "o2",
        "customer_id": "2",
        "ordered_at": "2024-01-15 12:00:00",
        "amount": "-5",
    }


def test_timestamps_with_a_time_zone_in_a_data_frame(make_project):
    project = make_project(ORDERS_YAML)
    frame = pd.DataFrame(
        {
            "order_id": ["o1"],
            "customer_id": ["c1"],
            "ordered_at": pd.to_datetime(["2024-01-01 10:00"]).tz_localize("Europe/Berlin"),
            "amount": [1.5],
        }
    )
    assert project.ingest_frame(frame, "shop").rows_loaded == 1
    assert project.warehouse.scalar("SELECT ordered_at FROM orders") == pd.Timestamp(
        "2024-01-01 09:00"
    )


def test_json_text_in_csv_is_validated(make_project):
    project = make_project(
        """
sources:
  - name: web
    kind: events
    path: events.csv
""",
        {
            "events.csv": (
                "messageId,type,userId,timestamp,properties\n"
                'm1,track,c1,2024-01-01T10:00:00Z,"{""a"": 1}"\n'
                'm2,track,c1,2024-01-01T10:00:00Z,"{not json"\n'
            )
        },
    )
    [result] = project.ingest()
    assert (result.rows_loaded, result.rows_quarantined) == (1, 1)
    assert json.loads(project.warehouse.scalar("SELECT properties FROM events")) == {"a": 1}
    assert project.warehouse.scalar("SELECT column_name FROM quarantine") == "properties"


def test_any_unsigned_integer_converts_to_a_float_column(make_project):
    project = make_project(ORDERS_YAML.replace("path: orders.csv", "path: unused.csv"))
    frame = pa.table(
        {
            "order_id": ["o1", "o2"],
            "customer_id": ["c1", "c2"],
            "ordered_at": pa.array([datetime(2024, 1, 1)] * 2, pa.timestamp("ms")),
            "amount": pa.array([1.5, 2.5]),
            "discount": pa.array([0, 2**64 - 1], pa.uint64()),
        }
    )
    assert project.ingest_frame(frame, "shop").rows_loaded == 2


def test_unsigned_integers_too_large_for_the_column_are_quarantined(make_project):
    project = make_project(
        """
sources:
  - name: items
    kind: order_items
    path: unused.csv
"""
    )
    frame = pa.table(
        {
            "order_id": ["o1", "o1"],
            "line_no": pa.array([1, 2**64 - 1], pa.uint64()),
            "product_id": ["p1", "p2"],
            "quantity": pa.array([1, 2], pa.int16()),
        }
    )
    result = project.ingest_frame(frame, "items")
    assert (result.rows_loaded, result.rows_quarantined) == (1, 1)
    rule, column, message = project.warehouse.fetchall(
        "SELECT rule, column_name, message FROM quarantine"
    )[0]
    assert (rule, column) == ("type", "line_no")
    assert f"line_no: {2**64 - 1} is not a valid integer" in message


def test_instants_and_local_times_in_parquet_become_naive_utc(make_project, tmp_path):
    table = pa.table(
        {
            "order_id": ["o1", "o2"],
            "customer_id": ["c1", "c2"],
            # An instant is an instant: the source's zone does not apply to it.
            "ordered_at": pa.array(
                [datetime(2024, 1, 1, 10), datetime(2024, 7, 1, 23, 30)],
                pa.timestamp("ms", tz="America/New_York"),
            ),
            # Local wall-clock times (nanoseconds) are read in the source's zone.
            "amount": [1.0, 2.0],
        }
    )
    pq.write_table(table, tmp_path / "orders.parquet")
    events = pa.table(
        {
            "messageId": ["m1"],
            "type": ["track"],
            "userId": ["c1"],
            "timestamp": pa.array([datetime(2024, 7, 1, 12)], pa.timestamp("ns")),
            "sentAt": pa.array([datetime(2024, 7, 1, 10)], pa.timestamp("us", tz="UTC")),
        }
    )
    pq.write_table(events, tmp_path / "events.parquet")
    project = make_project(
        """
sources:
  - name: shop
    kind: orders
    path: orders.parquet
    timezone: Europe/Berlin
  - name: web
    kind: events
    path: events.parquet
    timezone: Europe/Berlin
"""
    )
    assert [r.rows_loaded for r in project.ingest()] == [2, 1]
    wh = project.warehouse
    # pyarrow stores the given times as UTC instants (tz only labels them).
    assert wh.fetchall("SELECT ordered_at FROM orders ORDER BY 1") == [
        (datetime(2024, 1, 1, 10),),
        (datetime(2024, 7, 1, 23, 30),),
    ]
    assert wh.fetchall('SELECT "timestamp", sent_at FROM events') == [
        (datetime(2024, 7, 1, 10), datetime(2024, 7, 1, 10))
    ]


EVENT_TYPES = ["track", "Page", "bogus", "", None]
EVENT_TIMES = ["2024-01-01T10:00:00Z", "2024-01-01 10:00:00+02:00", "2099-01-01T00:00:00Z", "x"]
EVENT_JSON = ['{"a": 1}', " [1, 2] ", "{oops", "", "  ", None, '"text"']


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["m1", " m2", "", None]),
            st.sampled_from(EVENT_TYPES),
            st.sampled_from(["c1", None]),
            st.sampled_from([*EVENT_TIMES, None]),
            st.sampled_from(EVENT_JSON),
            st.sampled_from(EVENT_JSON),
        ),
        min_size=1,
        max_size=12,
    ),
    st.booleans(),
)
def test_failed_and_typed_rows_are_the_two_halves_of_the_checked_rows(rows, defer_json):
    from segmint.config import Source
    from segmint.data.readers import stage_frame
    from segmint.data.schema import TABLES
    from segmint.data.validation import build_validated_select
    from segmint.errors import EngineError

    wh = Warehouse(":memory:")
    names = ["messageId", "type", "userId", "timestamp", "properties", "context"]
    columns = zip(*rows, strict=True)
    frame = pa.table(
        {n: pa.array(list(c), pa.string()) for n, c in zip(names, columns, strict=True)}
    )
    staged = stage_frame(wh, frame, "web")
    source = Source(name="web", kind="events", path="x.parquet")
    v = build_validated_select(
        wh, source, TABLES["events"], staged, datetime(2030, 1, 1), defer_json=defer_json
    )
    v.bind(wh)
    columns = ", ".join(f'"{c}"' for c in v.columns)
    checked = {
        r[0]: r[1:]
        for r in wh.fetchall(
            f"SELECT _ordinal, _line, _fail_rule, _fail_column, _fail_message, _source_values, "
            f"{columns} FROM ({v.sql})"
        )
    }
    failed = {
        r[0]: r[1:]
        for r in wh.fetchall(
            f"SELECT _ordinal, _line, _fail_rule, _fail_column, _fail_message, "
            f"[{', '.join(f'{c!r}' for c in [])}]::VARCHAR[] || "
            f"list_value({', '.join(chr(34) + n + chr(34) for n in names)}) FROM ({v.failed_sql})"
        )
    }
    all_failed = {o for o, r in checked.items() if r[1] is not None}
    # A failed row is reported the same way by both shapes, with its source text.
    for ordinal, (line, rule, column, message, texts) in failed.items():
        assert checked[ordinal][:5] == (line, rule, column, message, texts)
    deferred = all_failed - set(failed)
    if defer_json:
        # Only rows failing nothing but a JSON check are left to the write...
        assert all(
            checked[o][1] == "type"
            and checked[o][2] in ("properties", "context")
            and checked[o][3].count("; ") == checked[o][3].count("is not a valid json") - 1
            for o in deferred
        )
    else:
        assert not deferred
    wh.execute(f"CREATE TEMP TABLE failed AS {v.failed_sql}")
    passing = f"({v.typed_sql(excluding='failed')})"
    if deferred:
        # ...and the write fails on them, so they cannot slip through.
        with pytest.raises(EngineError, match="JSON"):
            wh.fetchall(f"SELECT {columns} FROM {passing}")
    else:
        typed = {r[0]: r[1:] for r in wh.fetchall(f"SELECT _ordinal, {columns} FROM {passing}")}
        assert set(typed) == set(checked) - all_failed
        assert all(typed[o] == checked[o][5:] for o in typed)
    v.release(wh)
    assert not wh.fetchall("SELECT name FROM duckdb_variables()")
