"""Readers: line splitting, line numbers of every row, malformed JSON lines."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from segmint.data import readers
from segmint.data.readers import LineBatches, StagedInput, line_expression
from segmint.engine import Warehouse
from segmint.errors import DataValidationError


def split(path, block_size):
    table = pa.Table.from_batches(
        LineBatches(path, block_size=block_size).batches(), LineBatches.SCHEMA
    )
    return table.column("_ordinal").to_pylist(), table.column("line").to_pylist()


@settings(max_examples=60, deadline=None)
@given(
    lines=st.lists(
        st.text(
            alphabet=st.characters(blacklist_characters="\n\r", blacklist_categories=["Cs"]),
            max_size=12,
        ),
        max_size=30,
    ),
    crlf=st.booleans(),
    trailing_newline=st.booleans(),
    block_size=st.integers(1, 64),
)
def test_lines_are_cut_at_every_block_size(
    tmp_path_factory, lines, crlf, trailing_newline, block_size
):
    path = tmp_path_factory.mktemp("lines") / "x.jsonl"
    end = "\r\n" if crlf else "\n"
    text = end.join(lines) + (end if trailing_newline and lines else "")
    path.write_bytes(text.encode("utf-8"))
    ordinals, got = split(path, block_size)
    expected = text.split("\n")
    if text.endswith("\n") or not text:
        expected = expected[:-1]
    assert ordinals == list(range(len(expected)))
    # Empty lines (a terminator only) are missing; the others keep their terminator.
    assert [None if g is None else g.rstrip("\r\n") for g in got] == [
        line.rstrip("\r") or None for line in expected
    ]
    for index, line in enumerate(got[:-1]):
        assert line is None or line.endswith("\n"), index


def test_lines_keep_their_text_and_skip_a_byte_order_mark(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"a": 1}\r\n\n{"b": "\xc3\xa9"}')
    assert split(path, 4) == ([0, 1, 2], ['{"a": 1}\r\n', None, '{"b": "é"}'])


def test_bytes_that_are_not_utf8_stop_the_stream(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_bytes(b'{"a": 1}\n{"a": "\xff"}\n')
    reader = LineBatches(path)
    with pytest.raises(DataValidationError, match="not valid UTF-8"):
        list(reader.batches())
    assert reader.errors and isinstance(reader.errors[0], DataValidationError)


@settings(max_examples=80, deadline=None)
@given(
    offsets=st.lists(st.integers(0, 60), max_size=40).map(sorted),
    first=st.sampled_from([1, 2]),
)
def test_line_expression_agrees_with_line_of(offsets, first):
    staged = StagedInput("t", "f", [], 0, [], first, offsets)
    wh = Warehouse(":memory:")
    sql = line_expression("o", first, offsets)
    got = [r[0] for r in wh.fetchall(f"SELECT {sql} FROM range(70) t(o) ORDER BY o")]
    assert got == [staged.line_of(o) for o in range(70)]


CSV_YAML = """
sources:
  - name: shop
    kind: orders
    path: orders.csv
"""


def _orders_csv(rows: int, malformed_every: int) -> tuple[str, dict[str, int]]:
    """CSV text with a malformed line every ``malformed_every`` lines and the file line of
    every good order id."""
    lines = ["order_id,customer_id,ordered_at,amount"]
    where: dict[str, int] = {}
    for i in range(rows):
        if malformed_every and i % malformed_every == malformed_every - 1:
            lines.append(f"bad{i},c1,2024-01-01,1,extra")
        else:
            lines.append(f"o{i:07d},c{i % 97},2024-01-01 10:00:00,{i % 50}.5")
            where[f"o{i:07d}"] = len(lines)
    return "\n".join(lines) + "\n", where


def test_every_row_of_a_large_csv_keeps_its_file_line(make_project):
    # Large enough for the engine to read it in several parallel pieces.
    text, where = _orders_csv(300_000, 9_973)
    project = make_project(CSV_YAML, {"orders.csv": text})
    [result] = project.ingest()
    assert result.rows_quarantined == 300_000 // 9_973
    rows = project.warehouse.fetchall("SELECT order_id, _line FROM orders")
    assert len(rows) == len(where)
    assert all(where[order_id] == line for order_id, line in rows)
    bad = project.warehouse.fetchall("SELECT line, raw FROM quarantine ORDER BY line")
    assert [raw.split(",")[0] for _, raw in bad] == [
        f"bad{i}" for i in range(9_972, 300_000, 9_973)
    ]
    assert [line for line, _ in bad] == [i + 2 for i in range(9_972, 300_000, 9_973)]


def test_many_malformed_csv_lines_use_a_join_for_line_numbers(make_project, monkeypatch):
    monkeypatch.setattr(readers, "LINE_SEARCH_LIMIT", 2)
    text, where = _orders_csv(40, 4)
    project = make_project(CSV_YAML, {"orders.csv": text})
    [result] = project.ingest()
    assert (result.rows_loaded, result.rows_quarantined) == (30, 10)
    rows = dict(project.warehouse.fetchall("SELECT order_id, _line FROM orders"))
    assert rows == where


JSONL_YAML = """
sources:
  - name: web
    kind: events
    path: events.jsonl
"""


def event(message_id: str, **extra) -> str:
    body = {
        "messageId": message_id,
        "type": "track",
        "event": "X",
        "userId": "c1",
        "timestamp": "2024-01-01T10:00:00Z",
        **extra,
    }
    return json.dumps(body)


def test_jsonl_lines_are_numbered_physically_and_bad_ones_quarantined(make_project):
    text = "\r\n".join(
        [
            event("m1"),
            "",
            "[1, 2]",
            '  {"messageId": "m2", "type": "page", "anonymousId": "a", '
            '"timestamp": "2024-01-01T10:00:00Z"}',
            "5",
            '{"messageId": "m3", "type"',
            event("m4", properties={"price": 9.5}),
            "",
        ]
    )
    project = make_project(JSONL_YAML, {"events.jsonl": text})
    [result] = project.ingest()
    assert (result.rows_read, result.rows_loaded, result.rows_quarantined) == (6, 3, 3)
    rows = project.warehouse.fetchall("SELECT message_id, _line FROM events ORDER BY _line")
    assert rows == [("m1", 1), ("m2", 4), ("m4", 7)]
    q = project.warehouse.fetchall("SELECT line, rule, raw, message FROM quarantine ORDER BY line")
    assert [(line, rule, raw) for line, rule, raw, _ in q] == [
        (3, "malformed", "[1, 2]"),
        (5, "malformed", "5"),
        (6, "malformed", '{"messageId": "m3", "type"'),
    ]
    assert all(message == "malformed line: not a JSON object" for *_, message in q)
    properties = project.warehouse.scalar("SELECT properties FROM events WHERE message_id = 'm4'")
    assert json.loads(properties) == {"price": 9.5}


def test_jsonl_fields_of_other_json_types_are_read_as_text(make_project):
    text = "\n".join(
        [
            '{"messageId": 42, "type": "track", "userId": true, '
            '"timestamp": "2024-01-01T10:00:00Z", "traits": null, "context": [1, 2]}',
        ]
    )
    project = make_project(JSONL_YAML, {"events.jsonl": text})
    [result] = project.ingest()
    assert result.rows_loaded == 1
    row = project.warehouse.fetchall("SELECT message_id, user_id, traits, context FROM events")
    assert row == [("42", "true", None, "[1,2]")]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\n\r\n\n", "the file has no JSON lines"),
        (event("m1").encode() + b'\n{"messageId": "\xff"}\n', "not valid UTF-8"),
    ],
)
def test_bad_jsonl_files_raise_clear_errors_and_change_nothing(make_project, content, message):
    project = make_project(JSONL_YAML, {"events.jsonl": content})
    with pytest.raises(DataValidationError, match=message) as info:
        project.ingest()
    assert "events.jsonl" in str(info.value)
    assert project.warehouse.scalar("SELECT count(*) FROM events") == 0
    assert project.warehouse.scalar("SELECT count(*) FROM loads") == 0
    # Nothing of the failed load stays registered or set on the connection.
    assert project.warehouse.scalar("SELECT current_setting('preserve_insertion_order')")


def test_jsonl_customers_with_phone_numbers_are_staged_for_two_reads(make_project):
    text = "\n".join(
        [
            json.dumps({"customer_id": "c1", "phone": "030 1234567", "country": "DE"}),
            "not json",
            json.dumps({"customer_id": "c2", "phone": "nope", "country": "DE"}),
        ]
    )
    project = make_project(
        """
sources:
  - name: crm
    kind: customers
    path: customers.jsonl
""",
        {"customers.jsonl": text},
    )
    [result] = project.ingest()
    assert (result.rows_read, result.rows_loaded, result.rows_quarantined) == (3, 1, 2)
    assert project.warehouse.fetchall("SELECT customer_id, phone FROM customers") == [
        ("c1", "+49301234567")
    ]
    q = project.warehouse.fetchall("SELECT line, rule, column_name FROM quarantine ORDER BY 1")
    assert q == [(2, "malformed", None), (3, "format", "phone")]


LINE_PARTS = [
    '{"messageId": "m1"',
    ', "n": [1, {"x": null}]',
    "}",
    " ",
    "\r",
    "{",
    "]",
    '"',
    "null",
]


@settings(max_examples=80, deadline=None)
@given(st.lists(st.lists(st.sampled_from(LINE_PARTS), max_size=5).map("".join), max_size=20))
def test_a_jsonl_line_is_good_exactly_when_it_is_a_json_object(lines):
    wh = Warehouse(":memory:")
    data = pa.table(
        {
            "_ordinal": pa.array(range(len(lines)), pa.int64()),
            "line": pa.array([line + "\n" for line in lines], pa.large_string()),
        }
    )
    wh.register("lines", data)
    parsed = wh.fetchall(
        f"SELECT _ordinal, {readers.MALFORMED}, message_id FROM "
        f"({readers._parse_lines_sql('lines', ['message_id'])}) ORDER BY _ordinal"
    )
    # The engine's own two-step definition: valid JSON, and an object.
    expected = wh.fetchall(
        "SELECT _ordinal, CASE WHEN NOT ok THEN rtrim(line, e'\\r\\n') END, "
        "CASE WHEN ok THEN line ->> 'messageId' END FROM (SELECT *, CASE WHEN json_valid(line) "
        "THEN json_type(line) = 'OBJECT' ELSE false END AS ok FROM lines) ORDER BY _ordinal"
    )
    assert parsed == expected


@settings(max_examples=40, deadline=None)
@given(data=st.binary(max_size=300), chunk=st.integers(1, 64))
def test_a_file_fingerprint_is_the_sha256_of_its_bytes(tmp_path_factory, data, chunk):
    import hashlib

    path = tmp_path_factory.mktemp("fp") / "input.bin"
    path.write_bytes(data)
    original = readers.FINGERPRINT_CHUNK
    readers.FINGERPRINT_CHUNK = chunk  # many chunks, and the last one partial
    try:
        # The loads table keeps these: they must not change, or old files would reload.
        assert readers.fingerprint_file(path) == hashlib.sha256(data).hexdigest()
    finally:
        readers.FINGERPRINT_CHUNK = original
