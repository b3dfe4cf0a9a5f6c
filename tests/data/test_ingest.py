"""Ingestion: typing, every validation rule, quarantine, dedupe, imputation, transactions."""

from __future__ import annotations

import json

import pandas as pd
import pyarrow as pa
import pytest

from segmint.data import dedupe
from segmint.errors import DataValidationError, EngineError, SourceNotFoundError

CUSTOMERS_YAML = """
sources:
  - name: crm
    kind: customers
    path: customers.csv
    validation:
      gender: {allowed: [f, m, x]}
      loyalty_id: {regex: "^L[0-9]+$"}
      postcode: {required: true}
"""


def _snapshot(project, tables):
    """Every row of ``tables``, to check later that a failed load left them as they were."""
    return {t: project.warehouse.df(f'SELECT * FROM "{t}"') for t in tables}


def _assert_unchanged(project, before):
    for table, rows in _snapshot(project, before).items():
        pd.testing.assert_frame_equal(before[table], rows)


def counts(project, table):
    return project.warehouse.scalar(f'SELECT count(*) FROM "{table}"')


def quarantined(project):
    return project.warehouse.df(
        "SELECT line, rule, column_name, message, raw FROM quarantine ORDER BY line"
    )


def test_valid_rows_are_typed_and_normalised(make_project):
    project = make_project(
        CUSTOMERS_YAML,
        {
            "customers.csv": """
        customer_id,email,phone,age,country,gender,loyalty_id,postcode,signup_at,income
        c1,  Ada@Example.COM ,+49 30 1234567,36,Germany,F,L1,10115,2024-01-01T10:00:00+02:00,51000.5
        c2,bob@example.com,(201) 555-0123,41,usa,m,L2,07001,2024-02-01 08:30:00,
        c3,\tcy@example.com,030 1234567,50,DEU,x,L3,10117,2024-02-01 08:30:00,
    """
        },
    )
    [result] = project.ingest()
    assert (result.rows_read, result.rows_loaded, result.rows_quarantined) == (3, 3, 0)
    rows = project.warehouse.df("SELECT * FROM customers ORDER BY customer_id").head(2)
    assert rows["email"].tolist() == ["ada@example.com", "bob@example.com"]
    assert rows["phone"].tolist() == ["+49301234567", "+12015550123"]
    assert rows["country"].tolist() == ["DE", "US"]
    assert rows["gender"].tolist() == ["f", "m"]
    assert rows["age"].tolist() == [36, 41]
    # A national number is read in the row's country; tabs around values are trimmed.
    third = project.warehouse.fetchall(
        "SELECT email, phone FROM customers WHERE customer_id = 'c3'"
    )
    assert third == [("cy@example.com", "+49301234567")]
    # An explicit offset is honoured; stored timestamps are naive UTC.
    assert rows["signup_at"].tolist() == [
        pd.Timestamp("2024-01-01 08:00"),
        pd.Timestamp("2024-02-01 08:30"),
    ]
    assert rows["_line"].tolist() == [2, 3]
    assert rows["_source"].tolist() == ["crm", "crm"]


@pytest.mark.parametrize(
    ("row", "rule", "column"),
    [
        ("c9,a@b.co,,,DE,f,L1,,2024-01-01", "required", "postcode"),
        (",a@b.co,,,DE,f,L1,10115,2024-01-01", "required", "customer_id"),
        ("c9,a@b.co,,abc,DE,f,L1,10115,2024-01-01", "type", "age"),
        ("c9,a@b.co,,,Atlantis,f,L1,10115,2024-01-01", "format", "country"),
        ("c9,a@b.co,not-a-phone,,DE,f,L1,10115,2024-01-01", "format", "phone"),
        ("c9,a@b.co,,-1,DE,f,L1,10115,2024-01-01", "min", "age"),
        ("c9,a@b.co,,150,DE,f,L1,10115,2024-01-01", "max", "age"),
        ("c9,not-an-email,,,DE,f,L1,10115,2024-01-01", "regex", "email"),
        ("c9,a@b.co,,,DE,f,X1,10115,2024-01-01", "regex", "loyalty_id"),
        ("c9,a@b.co,,,DE,q,L1,10115,2024-01-01", "allowed", "gender"),
        ("c9,a@b.co,,,DE,f,L1,10115,2099-01-01", "not_in_future", "signup_at"),
    ],
)
def test_each_rule_quarantines_the_row_with_its_reason(make_project, row, rule, column):
    project = make_project(
        CUSTOMERS_YAML,
        {
            "customers.csv": (
                "customer_id,email,phone,age,country,gender,loyalty_id,postcode,signup_at\n"
                "c1,ok@b.co,,30,DE,f,L1,10115,2024-01-01\n" + row + "\n"
            )
        },
    )
    [result] = project.ingest()
    assert (result.rows_loaded, result.rows_quarantined) == (1, 1)
    q = quarantined(project)
    assert q.loc[0, "rule"] == rule
    assert q.loc[0, "column_name"] == column
    assert q.loc[0, "line"] == 3
    assert column in q.loc[0, "message"]
    raw = json.loads(q.loc[0, "raw"])
    assert raw["customer_id"] == (row.split(",")[0] or None)


def test_every_failure_of_a_row_is_listed(make_project):
    project = make_project(
        CUSTOMERS_YAML,
        {
            "customers.csv": """
        customer_id,email,age,postcode
        c1,bad,200,
    """
        },
    )
    project.ingest()
    message = quarantined(project).loc[0, "message"]
    assert "postcode: missing" in message
    assert "age: 200 is above the maximum 120" in message
    assert "email: bad does not match" in message


def test_malformed_lines_are_quarantined_with_their_line_numbers(make_project):
    project = make_project(
        CUSTOMERS_YAML,
        {
            "customers.csv": """
        customer_id,postcode,age
        c1,1,20
        c2,2,30,extra
        c3,3,40
        c4
        c5,5,500
    """
        },
    )
    [result] = project.ingest()
    assert (result.rows_read, result.rows_loaded, result.rows_quarantined) == (5, 2, 3)
    q = quarantined(project)
    assert q[["line", "rule"]].values.tolist() == [[3, "malformed"], [5, "malformed"], [6, "max"]]
    assert q.loc[0, "raw"] == "c2,2,30,extra"
    lines = project.warehouse.df("SELECT customer_id, _line FROM customers ORDER BY 1")
    assert lines.values.tolist() == [["c1", 2], ["c3", 4]]


def test_key_duplicates_merge_with_most_recent_non_null_survivorship(make_project):
    project = make_project(
        CUSTOMERS_YAML.replace("      postcode: {required: true}\n", ""),
        {
            "customers.csv": """
        customer_id,email,first_name,city,age,updated_at
        c1,ada@example.com,Ada,London,36,2024-01-01
        c2, ADA@example.com ,,Paris,,2024-03-01
        c1,,Augusta,,37,2024-02-01
        c3,eve@example.com,Eve,Rome,50,2024-01-01
        c3,eve@example.com,Eve,Rome,50,2024-01-01
        """
        },
    )
    [result] = project.ingest()
    assert (result.rows_read, result.rows_loaded, result.rows_duplicate) == (5, 2, 3)
    rows = project.warehouse.df("SELECT * FROM customers ORDER BY customer_id")
    assert rows["customer_id"].tolist() == ["c1", "c3"]  # first-seen id survives
    ada = rows.iloc[0]
    assert ada["city"] == "Paris"  # newest record (2024-03-01) wins where it has a value
    assert ada["first_name"] == "Augusta"  # newest non-null value
    assert ada["age"] == 37
    assert ada["email"] == "ada@example.com"
    merges = project.warehouse.df(
        "SELECT survivor_key, merged_key, matched_on, line FROM dedupe_merges ORDER BY line"
    )
    assert merges.values.tolist() == [
        ["c1", "c2", "email", 3],
        ["c1", "c1", "customer_id", 4],
        ["c3", "c3", "exact", 6],
    ]


def test_new_file_merges_into_existing_rows(make_project, write):
    project = make_project(
        """
sources:
  - name: crm
    kind: customers
    path: "crm/*.csv"
""",
        {"crm/a.csv": "customer_id,email,city,updated_at\nc1,ada@x.com,London,2024-01-01\n"},
    )
    project.ingest()
    write("crm/b.csv", "customer_id,email,city,updated_at\nc7,ADA@x.com,Paris,2024-05-01\n")
    results = project.ingest()
    assert [r.status for r in results] == ["unchanged", "loaded"]
    assert results[1].rows_duplicate == 0 and results[1].rows_loaded == 1
    rows = project.warehouse.df("SELECT customer_id, city FROM customers")
    assert rows.values.tolist() == [["c1", "Paris"]]


def test_reloading_the_same_file_is_a_no_op(make_project):
    project = make_project(CUSTOMERS_YAML, {"customers.csv": "customer_id,postcode\nc1,1\n"})
    project.ingest()
    before = project.warehouse.df("SELECT * FROM customers")
    [again] = project.ingest()
    assert again.status == "unchanged"
    pd.testing.assert_frame_equal(before, project.warehouse.df("SELECT * FROM customers"))
    assert counts(project, "loads") == 1


def test_imputation_fills_and_flags(make_project):
    project = make_project(
        """
sources:
  - name: crm
    kind: customers
    path: customers.csv
    impute: {age: median, gender: mode, income: knn}
""",
        {
            "customers.csv": """
        customer_id,age,gender,income
        c1,20,f,1000
        c2,30,f,2000
        c3,40,m,3000
        c4,,,
        c5,35,,2500
    """
        },
    )
    [result] = project.ingest()
    rows = project.warehouse.df("SELECT * FROM customers ORDER BY customer_id").set_index(
        "customer_id"
    )
    assert rows.loc["c4", "age"] == 32  # median of 20, 30, 35, 40 = 32.5, rounded for integers
    assert rows.loc["c4", "gender"] == "f"
    assert rows.loc["c5", "gender"] == "f"
    assert 1000 <= rows.loc["c4", "income"] <= 3000
    assert sorted(rows.loc["c4", "_imputed"]) == ["age", "gender", "income"]
    assert list(rows.loc["c5", "_imputed"]) == ["gender"]
    assert rows.loc["c1", "_imputed"] is None
    assert result.imputed == 4


def test_a_failure_mid_load_leaves_every_table_unchanged(make_project, write, monkeypatch):
    project = make_project(
        """
sources:
  - name: crm
    kind: customers
    path: "crm/*.csv"
  - name: orders
    kind: orders
    path: orders.csv
""",
        {
            "crm/a.csv": "customer_id,email\nc1,a@x.com\n",
            "orders.csv": "order_id,customer_id,ordered_at,amount\no1,c1,2024-01-01,10\n",
        },
    )
    project.ingest(["crm"])
    tables = ["customers", "orders", "quarantine", "loads", "dedupe_merges"]
    before = _snapshot(project, tables)
    write("crm/b.csv", "customer_id,email\nc2,b@x.com\nc2,B@x.com\n")

    def explode(*args, **kwargs):
        raise EngineError("injected failure")

    real = dedupe.merge_batch
    calls = []

    def fail_on_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            explode()
        return real(*args, **kwargs)

    monkeypatch.setattr(dedupe, "merge_batch", fail_on_second)
    with pytest.raises(EngineError, match="injected"):
        project.ingest()
    _assert_unchanged(project, before)
    monkeypatch.setattr(dedupe, "merge_batch", real)
    results = project.ingest()
    assert [r.status for r in results] == ["unchanged", "loaded", "loaded"]


def test_events_from_jsonl_keep_segment_fields_and_drop_repeated_messages(make_project):
    lines = [
        {
            "messageId": "m1",
            "type": "track",
            "event": "Product Viewed",
            "userId": "c1",
            "timestamp": "2024-01-01T10:00:00Z",
            "properties": {"price": 9.5},
        },
        {
            "messageId": "m2",
            "type": "page",
            "anonymousId": "a1",
            "timestamp": "2024-01-01T11:00:00.123Z",
            "context": {"ip": "1.2.3.4"},
        },
        {
            "messageId": "m1",
            "type": "track",
            "event": "Product Viewed",
            "userId": "c1",
            "timestamp": "2024-01-01T10:00:00Z",
        },
        {"messageId": "m3", "type": "track", "event": "X", "timestamp": "2024-01-01T10:00:00Z"},
        {"messageId": "m4", "type": "bogus", "userId": "c1", "timestamp": "2024-01-01T10:00:00Z"},
    ]
    text = "\n".join(json.dumps(x) for x in lines) + "\n{not json\n"
    project = make_project(
        """
sources:
  - name: web
    kind: events
    path: events.jsonl
""",
        {"events.jsonl": text},
    )
    [result] = project.ingest()
    assert (
        result.rows_read,
        result.rows_loaded,
        result.rows_duplicate,
        result.rows_quarantined,
    ) == (6, 2, 1, 3)
    events = project.warehouse.df("SELECT * FROM events ORDER BY message_id")
    assert events["message_id"].tolist() == ["m1", "m2"]
    assert json.loads(events.loc[0, "properties"]) == {"price": 9.5}
    assert events.loc[1, "timestamp"] == pd.Timestamp("2024-01-01 11:00:00.123")
    q = quarantined(project)
    assert q[["line", "rule"]].values.tolist() == [
        [4, "required"],
        [5, "allowed"],
        [6, "malformed"],
    ]


def test_parquet_and_time_zone_conversion(make_project, tmp_path):
    import pyarrow.parquet as pq

    table = pa.table(
        {
            "order_id": ["o1", "o2"],
            "customer_id": ["c1", "c1"],
            "ordered_at": ["01/07/2024 12:00", "15/01/2024 12:00"],
            "amount": [10.0, -5.0],
        }
    )
    pq.write_table(table, tmp_path / "orders.parquet")
    project = make_project("""
sources:
  - name: shop
    kind: orders
    path: orders.parquet
    timestamp_format: "%d/%m/%Y %H:%M"
    timezone: Europe/Berlin
""")
    [result] = project.ingest()
    assert (result.rows_loaded, result.rows_quarantined) == (1, 1)
    assert project.warehouse.scalar("SELECT ordered_at FROM orders") == pd.Timestamp(
        "2024-07-01 10:00"
    )  # CEST is UTC+2 in July
    assert quarantined(project).loc[0, "rule"] == "min"


@pytest.mark.parametrize("kind", ["pandas", "polars", "arrow"])
def test_ingest_from_data_frames(make_project, kind):
    project = make_project("""
sources:
  - name: shop
    kind: orders
    path: unused.csv
""")
    data = {
        "order_id": ["o1", "o2", "o3"],
        "customer_id": ["c1", "c2", None],
        "ordered_at": pd.to_datetime(["2024-01-01", "2024-01-02", "2024-01-03"]),
        "amount": [10.0, 20.0, 5.0],
    }
    if kind == "pandas":
        frame = pd.DataFrame(data)
    elif kind == "polars":
        import polars as pl

        frame = pl.DataFrame(data)
    else:
        frame = pa.table(data)
    result = project.ingest_frame(frame, "shop")
    assert (result.rows_loaded, result.rows_quarantined) == (2, 1)
    assert result.file == "frame:shop"
    assert project.ingest_frame(frame, "shop").status == "unchanged"
    assert project.warehouse.scalar("SELECT sum(amount) FROM orders") == 30.0


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "the file is empty"),
        (b"customer_id,email\n", "header but no data rows"),
        (b"customer_id,email\nc1,\xff\xfe@x.com\n", "not valid UTF-8"),
        (b"email\na@b.co\n", "required column 'customer_id' is missing"),
    ],
)
def test_bad_files_raise_clear_errors_and_change_nothing(make_project, content, message):
    project = make_project(
        """
sources:
  - name: crm
    kind: customers
    path: customers.csv
""",
        {"customers.csv": content},
    )
    with pytest.raises(DataValidationError, match=message) as info:
        project.ingest()
    assert "customers.csv" in str(info.value)
    assert counts(project, "customers") == 0
    assert counts(project, "loads") == 0


def test_missing_file_is_an_error(make_project):
    project = make_project("""
sources:
  - name: crm
    kind: customers
    path: nowhere/*.csv
""")
    with pytest.raises(SourceNotFoundError, match="no file matches 'nowhere/\\*.csv'"):
        project.ingest()


def test_mapped_column_missing_from_file(make_project):
    project = make_project(
        """
sources:
  - name: crm
    kind: customers
    path: customers.csv
    columns: {customer_id: cust_no}
""",
        {"customers.csv": "id,email\n1,a@b.co\n"},
    )
    with pytest.raises(DataValidationError, match="'cust_no'.*not in the input"):
        project.ingest()


def test_a_second_events_file_appends_new_messages_and_skips_known_ones(make_project, write):
    def line(message_id: str) -> str:
        return json.dumps(
            {
                "messageId": message_id,
                "type": "track",
                "event": "X",
                "userId": "c1",
                "timestamp": "2024-01-01T10:00:00Z",
            }
        )

    project = make_project(
        """
sources:
  - name: web
    kind: events
    path: "events/*.jsonl"
""",
        {"events/a.jsonl": line("m1") + "\n" + line("m2") + "\n"},
    )
    project.ingest()
    write("events/b.jsonl", line("m2") + "\n" + line("m3") + "\n")
    _, second = project.ingest()
    assert (second.rows_loaded, second.rows_duplicate) == (1, 1)
    assert project.warehouse.fetchall("SELECT message_id FROM events ORDER BY 1") == [
        ("m1",),
        ("m2",),
        ("m3",),
    ]


@pytest.mark.parametrize("before", [True, False])
def test_ingest_restores_the_engine_row_order_setting(make_project, write, before):
    project = make_project(
        """
sources:
  - name: shop
    kind: orders
    path: "orders/*.csv"
""",
        {"orders/a.csv": "order_id,customer_id,ordered_at,amount\no1,c1,2024-01-01,10\n"},
    )
    setting = "SELECT current_setting('preserve_insertion_order')"
    project.warehouse.execute(f"SET preserve_insertion_order = {str(before).lower()}")
    project.ingest()
    assert project.warehouse.scalar(setting) is before
    write("orders/b.csv", "order_id,customer_id\n")
    with pytest.raises(DataValidationError):
        project.ingest()
    assert project.warehouse.scalar(setting) is before


def test_two_files_with_the_same_bytes_in_one_call_load_once(make_project):
    text = "order_id,customer_id,ordered_at,amount\no1,c1,2024-01-01,10\no2,c1,2024-01-02,5\n"
    project = make_project(
        """
sources:
  - name: shop
    kind: orders
    path: "orders/*.csv"
""",
        {"orders/a.csv": text, "orders/b.csv": text},
    )
    results = project.ingest()
    assert [(r.status, r.rows_loaded) for r in results] == [("loaded", 2), ("unchanged", 0)]
    assert counts(project, "orders") == 2
    assert counts(project, "loads") == 1
    # No validated scratch table is left behind.
    assert not project.warehouse.fetchall(
        "SELECT table_name FROM duckdb_tables() WHERE temporary AND table_name LIKE '_stg%'"
    )


EVENTS_PARQUET_YAML = """
sources:
  - name: web
    kind: events
    path: events.parquet
  - name: shop
    kind: orders
    path: orders.csv
"""


def write_events_parquet(path, properties, timestamps=None, users=None):
    """Events in the shape of an export: typed instants, JSON as text."""
    from datetime import UTC, datetime

    import pyarrow.parquet as pq

    n = len(properties)
    stamps = timestamps or [datetime(2024, 1, 1, 10, tzinfo=UTC)] * n
    pq.write_table(
        pa.table(
            {
                "messageId": [f"m{i}" for i in range(n)],
                "type": ["track"] * n,
                "userId": users or ["c1"] * n,
                "timestamp": pa.array(stamps, pa.timestamp("us", tz="UTC")),
                "properties": pa.array(properties, pa.string()),
            }
        ),
        path,
    )


def test_rows_of_a_rereadable_input_are_written_without_a_validated_copy(
    make_project, tmp_path, monkeypatch
):
    write_events_parquet(tmp_path / "events.parquet", ['{"a": 1}', '{"b": 2}', None, "{}"])
    project = make_project(
        EVENTS_PARQUET_YAML,
        {"orders.csv": "order_id,customer_id,ordered_at,amount\no1,c1,2024-01-01,10\no2,,,\n"},
    )
    wh = project.warehouse
    statements: list[str] = []
    execute = wh.execute

    def spy(sql, params=None):
        statements.append(sql)
        return execute(sql, params)

    monkeypatch.setattr(wh, "execute", spy)
    web, shop = project.ingest()
    assert (web.rows_loaded, web.rows_quarantined) == (4, 0)
    assert (shop.rows_loaded, shop.rows_quarantined) == (1, 1)
    # Only the failed rows were kept aside (Parquet scanned in place, CSV from its table).
    created = [s for s in statements if s.startswith("CREATE TEMP TABLE")]
    assert not [s for s in created if "_checked " in s]
    assert wh.fetchall("SELECT message_id, properties FROM events ORDER BY 1") == [
        ("m0", '{"a": 1}'),
        ("m1", '{"b": 2}'),
        ("m2", None),
        ("m3", "{}"),
    ]
    assert wh.fetchall("SELECT line, rule, column_name FROM quarantine") == [
        (3, "required", "customer_id")
    ]


def test_rows_whose_json_text_is_not_json_are_quarantined(make_project, tmp_path):
    from datetime import UTC, datetime

    ok = datetime(2024, 1, 1, 10, tzinfo=UTC)
    future = datetime(2099, 1, 1, tzinfo=UTC)
    write_events_parquet(
        tmp_path / "events.parquet",
        ['{"a": 1}', "{not json", '{"c": 3}', "[1,", " "],
        [ok, ok, ok, future, ok],
    )
    project = make_project(
        EVENTS_PARQUET_YAML,
        {"orders.csv": "order_id,customer_id,ordered_at,amount\no1,c1,2024-01-01,10\n"},
    )
    web, shop = project.ingest()
    assert (web.rows_read, web.rows_loaded, web.rows_quarantined) == (5, 3, 2)
    assert (shop.rows_loaded, shop.rows_quarantined) == (1, 0)
    wh = project.warehouse
    assert wh.fetchall("SELECT message_id, properties FROM events ORDER BY 1") == [
        ("m0", '{"a": 1}'),
        ("m2", '{"c": 3}'),
        ("m4", None),  # blank text is missing, not invalid
    ]
    q = wh.fetchall("SELECT line, rule, column_name, message, raw FROM quarantine ORDER BY 1")
    assert [(line, rule, column) for line, rule, column, _, _ in q] == [
        (2, "type", "properties"),
        (4, "type", "properties"),
    ]
    assert q[0][3] == "properties: {not json is not a valid json"
    # Every failure of a row is listed, the JSON one too.
    assert "properties: [1, is not a valid json" in q[1][3]
    assert "timestamp: 2099-01-01 00:00:00+00 is in the future" in q[1][3]
    assert json.loads(q[0][4])["properties"] == "{not json"
    # Each input was written once, though the call's transaction ran twice.
    assert counts(project, "orders") == 1
    assert counts(project, "loads") == 2
    assert not wh.fetchall(
        "SELECT table_name FROM duckdb_tables() WHERE temporary AND table_name LIKE '_stg%'"
    )


def test_a_persons_erasure_between_validation_and_writing_still_blocks_their_rows(
    make_project, monkeypatch
):
    from segmint.data import ingest
    from segmint.data.privacy import add_to_suppression

    project = make_project(
        """
sources:
  - name: shop
    kind: orders
    path: orders.csv
""",
        {
            "orders.csv": "order_id,customer_id,ordered_at,amount\no1,c1,2024-01-01,10\n"
            "o2,c2,2024-01-01,20\no3,c2,2024-01-01,-5\n"
        },
    )
    wh = project.warehouse
    real = ingest._suppression_active
    calls = []

    def erased_after_validation(warehouse):
        calls.append(1)
        if len(calls) == 1:  # validation still sees an empty list...
            add_to_suppression(warehouse, [("customer_id", "c2")])  # ...then c2 is erased
            return False
        return real(warehouse)

    monkeypatch.setattr(ingest, "_suppression_active", erased_after_validation)
    [result] = project.ingest()
    assert (result.rows_loaded, result.rows_quarantined, result.rows_suppressed) == (1, 0, 2)
    assert wh.fetchall("SELECT order_id FROM orders") == [("o1",)]
    assert counts(project, "quarantine") == 0


@pytest.mark.parametrize("fails", [False, True])
def test_a_load_leaves_no_scratch_on_the_connection(make_project, tmp_path, fails):
    write_events_parquet(tmp_path / "events.parquet", ['{"a": 1}', "{bad"])
    orders = "order_id,customer_id,ordered_at,amount\no1,c1,2024-01-01,10\n"
    project = make_project(
        EVENTS_PARQUET_YAML, {"orders.csv": orders if not fails else "order_id\n"}
    )
    if fails:
        with pytest.raises(DataValidationError):
            project.ingest()
    else:
        project.ingest()
    wh = project.warehouse
    assert not wh.fetchall(
        "SELECT table_name FROM duckdb_tables() WHERE temporary AND table_name LIKE '_stg%'"
    )
    assert not wh.fetchall(
        "SELECT view_name FROM duckdb_views() WHERE temporary AND view_name LIKE '_stg%'"
    )
    assert not wh.fetchall("SELECT name FROM duckdb_variables()")


def test_an_erasure_between_validation_and_writing_keeps_every_check(
    make_project, tmp_path, monkeypatch
):
    from segmint.data import ingest
    from segmint.data.privacy import add_to_suppression

    write_events_parquet(
        tmp_path / "events.parquet", ['{"a": 1}', '{"b": 2}', "{bad"], users=["c1", "c2", "c1"]
    )
    project = make_project(EVENTS_PARQUET_YAML.split("  - name: shop")[0])
    real = ingest._suppression_active
    calls = []

    def erased_after_validation(warehouse):
        calls.append(1)
        if len(calls) == 1:
            add_to_suppression(warehouse, [("customer_id", "c2")])
            return False
        return real(warehouse)

    monkeypatch.setattr(ingest, "_suppression_active", erased_after_validation)
    [result] = project.ingest()
    assert (result.rows_loaded, result.rows_quarantined, result.rows_suppressed) == (1, 1, 1)
    assert project.warehouse.fetchall("SELECT message_id FROM events") == [("m0",)]
    assert project.warehouse.fetchall("SELECT line, rule, column_name FROM quarantine") == [
        (3, "type", "properties")
    ]


def test_a_failure_writing_a_rereadable_input_is_reported_and_changes_nothing(
    make_project, tmp_path, monkeypatch
):
    write_events_parquet(tmp_path / "events.parquet", ['{"a": 1}', '{"b": 2}'])
    project = make_project(
        EVENTS_PARQUET_YAML,
        {"orders.csv": "order_id,customer_id,ordered_at,amount\no1,c1,2024-01-01,10\n"},
    )
    tables = ["events", "orders", "quarantine", "loads", "dedupe_merges"]
    before = _snapshot(project, tables)
    real = dedupe.merge_batch

    def fail_on_events(wh, table, *args, **kwargs):
        if table.name == "events":
            raise EngineError("injected failure")
        return real(wh, table, *args, **kwargs)

    monkeypatch.setattr(dedupe, "merge_batch", fail_on_events)
    # The events' JSON checks were deferred to the write: it is retried with every
    # check up front, and then the failure is the write's own.
    with pytest.raises(EngineError, match="injected failure"):
        project.ingest()
    _assert_unchanged(project, before)
    monkeypatch.setattr(dedupe, "merge_batch", real)
    assert [r.rows_loaded for r in project.ingest()] == [2, 1]
