"""Deduplication of batches: events keep the first copy, other tables merge by key."""

from __future__ import annotations

from datetime import datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from segmint.data.dedupe import merge_batch
from segmint.data.schema import TABLES
from segmint.data.store import ensure_tables
from segmint.engine import Warehouse

NOW = datetime(2024, 1, 3)


def event_batch(wh: Warehouse, name: str, message_ids: list[str], load: int) -> None:
    """A batch view of events with the given message ids, in order (line = position + 1)."""
    wh.execute(
        f"CREATE OR REPLACE TEMP TABLE {name}_data AS SELECT m.message_id, 'track' AS type, "
        f"'X' AS event, 'c1' AS user_id, NULL AS anonymous_id, TIMESTAMP '2024-01-01' AS "
        f"timestamp, NULL::TIMESTAMP AS sent_at, NULL::TIMESTAMP AS received_at, "
        f"NULL::JSON AS properties, NULL::JSON AS traits, NULL::JSON AS context, 'web' AS _source, "
        f"'f{load}' AS _file, m.i + 1 AS _line, 'load{load}' AS _load_id, "
        f"TIMESTAMP '2024-01-02' AS _loaded_at, NULL::VARCHAR[] AS _imputed, m.i AS _ordinal "
        f"FROM (SELECT unnest(?::VARCHAR[]) AS message_id, unnest(range(?)) AS i) m",
        [message_ids, len(message_ids)],
    )
    wh.execute(f"CREATE OR REPLACE TEMP VIEW {name} AS SELECT * FROM {name}_data")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    first=st.lists(st.sampled_from("abcdefgh"), min_size=1, max_size=15),
    second=st.lists(st.sampled_from("abcdefghij"), min_size=1, max_size=15),
)
def test_events_keep_the_first_copy_of_each_message_across_loads(first, second):
    wh = Warehouse(":memory:")
    ensure_tables(wh)
    table = TABLES["events"]
    for load, ids in enumerate((first, second)):
        event_batch(wh, f"b{load}", ids, load)
        merge_batch(wh, table, f"b{load}", [("message_id",)], f"load{load}", NOW)
    # Reference: walk the loads in order, keeping the first (load, line) of each id.
    kept: dict[str, tuple[str, int]] = {}
    merges = []
    for load, ids in enumerate((first, second)):
        seen_before = set(kept)
        for line, message_id in enumerate(ids, start=1):
            if message_id in kept:
                reason = "already loaded" if message_id in seen_before else "repeated in file"
                merges.append((f"load{load}", message_id, f"{reason}: message_id", line))
            else:
                kept[message_id] = (f"f{load}", line)
    rows = wh.fetchall("SELECT message_id, _file, _line FROM events ORDER BY message_id")
    assert rows == sorted((m, f, line) for m, (f, line) in kept.items())
    recorded = wh.fetchall(
        "SELECT load_id, merged_key, matched_on, line FROM dedupe_merges ORDER BY load_id, line"
    )
    assert recorded == merges


def test_load_counts_of_events(make_project, write):
    def lines(*ids: str) -> str:
        return "".join(
            f'{{"messageId": "{m}", "type": "track", "userId": "c1", '
            f'"timestamp": "2024-01-01T10:00:00Z"}}\n'
            for m in ids
        )

    project = make_project(
        """
sources:
  - name: web
    kind: events
    path: "events/*.jsonl"
""",
        {"events/a.jsonl": lines("m1", "m2", "m1", "m3", "m1")},
    )
    [first] = project.ingest()
    assert (first.rows_loaded, first.rows_duplicate) == (3, 2)
    write("events/b.jsonl", lines("m3", "m4", "m4", "m5"))
    _, second = project.ingest()
    assert (second.rows_loaded, second.rows_duplicate) == (2, 2)
    assert project.warehouse.fetchall(
        "SELECT merged_key, matched_on, line FROM dedupe_merges ORDER BY load_id = ?, line",
        [first.load_id],
    ) == [
        ("m3", "already loaded: message_id", 1),
        ("m4", "repeated in file: message_id", 3),
        ("m1", "repeated in file: message_id", 3),
        ("m1", "repeated in file: message_id", 5),
    ]


def test_rows_sharing_no_key_pass_through_and_linked_rows_merge(make_project, write):
    project = make_project(
        """
sources:
  - name: crm
    kind: customers
    path: "crm/*.csv"
""",
        {
            "crm/a.csv": (
                "customer_id,email,city,updated_at\n"
                "c1,ada@x.com,London,2024-01-01\n"
                "c2,bob@x.com,Paris,2024-01-01\n"
            )
        },
    )
    project.ingest()
    write(
        "crm/b.csv",
        "customer_id,email,city,updated_at\n"
        "c3,cy@x.com,Rome,2024-01-01\n"  # new, alone
        "c9,ADA@x.com,Oslo,2024-02-01\n"  # same e-mail as c1 (existing)
        "c4,dee@x.com,Bern,2024-01-01\n"  # new, alone
        "c4,,Basel,2024-03-01\n",  # same id as the line before
    )
    _, result = project.ingest()
    assert (result.rows_loaded, result.rows_duplicate) == (3, 1)
    rows = project.warehouse.fetchall(
        "SELECT customer_id, email, city FROM customers ORDER BY customer_id"
    )
    assert rows == [
        ("c1", "ada@x.com", "Oslo"),
        ("c2", "bob@x.com", "Paris"),
        ("c3", "cy@x.com", "Rome"),
        ("c4", "dee@x.com", "Basel"),
    ]
    merges = project.warehouse.fetchall(
        "SELECT survivor_key, merged_key, matched_on, line FROM dedupe_merges ORDER BY line"
    )
    assert merges == [("c1", "c9", "email", 3), ("c4", "c4", "customer_id", 5)]
