"""Suppression: an erased person's later data is blocked at ingestion, counted, stored nowhere."""

from __future__ import annotations

import hashlib
import json
import textwrap

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from segmint.data.privacy import (
    KEY_ENV,
    add_to_suppression,
    erase,
    is_suppressed,
    key_id,
    suppressed_values,
)
from segmint.data.privacy.suppression import SALTED, tokens
from segmint.engine import Warehouse
from segmint.errors import UserInputError
from tests.data.privacy.conftest import ADA, file_bytes, strings_in_bytes, strings_in_tables

KEY = "k3y-Only-In-The-Environment-4711"


def _jsonl(*rows: dict) -> str:
    return "\n".join(json.dumps(r) for r in rows)


def write_second_batch(shop) -> None:
    """New files: Ada's data again (in new disguises), plus Dan and Eve as controls."""
    base = shop.base_dir / "data"
    files = {
        "customers_2.csv": f"""
            customer_id,email,first_name,age,updated_at
            CUST-NEW-9,{ADA.email_mixed},Ada,36,2024-04-01
            {ADA.customer_id},,,,2024-04-01
            CUST-DAN-1,dan@example.net,Dan,50,2024-04-01
            CUST-ADA-BAD2, {ADA.email} ,Ada,300,2024-04-01
            CUST-EVE-1,eve@example.net,Eve,400,2024-04-01
            CUST-ZED-1,zed@example.net,"{{""device"": ""{ADA.device}""}}",500,2024-04-01
        """,
        "orders_2.csv": f"""
            order_id,customer_id,ordered_at,amount
            ORD-ADA-NEW,{ADA.customer_id},2024-04-02,10
            ORD-DAN-1,CUST-DAN-1,2024-04-02,20
        """,
        "order_items_2.csv": f"""
            order_id,line_no,product_id,quantity,unit_price
            {ADA.order},2,P9,1,5
            ORD-DAN-1,1,P1,1,20
        """,
        "consents_2.csv": f"""
            customer_id,purpose,granted,at,source
            {ADA.customer_id},advertising,true,2024-04-01,app
            CUST-DAN-1,advertising,true,2024-04-01,app
        """,
    }
    for name, text in files.items():
        (base / name).write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    events = _jsonl(
        {
            "messageId": "n1",
            "type": "track",
            "event": "X",
            "userId": ADA.customer_id,
            "timestamp": "2024-04-01T10:00:00Z",
        },
        {
            "messageId": "n2",
            "type": "page",
            "anonymousId": ADA.device,
            "timestamp": "2024-04-01T10:00:00Z",
        },
        {
            "messageId": "n3",
            "type": "identify",
            "userId": "CUST-NEW-9",
            "traits": {"email": ADA.email_mixed},
            "timestamp": "2024-04-01T10:00:00Z",
        },
        {
            "messageId": "n4",
            "type": "track",
            "event": "X",
            "userId": "CUST-DAN-1",
            "timestamp": "2024-04-01T10:00:00Z",
        },
    )
    broken = (
        '\n{"messageId": "n5", "traits": {"email": "' + ADA.email_mixed + '"}, oops'
        '\n{"messageId": "n6", "broken\n'
    )
    (base / "events_2.jsonl").write_text(events + broken, encoding="utf-8")


def test_erased_persons_rows_are_dropped_counted_and_stored_nowhere(shop):
    erase(shop.warehouse, email=ADA.email)
    shop.warehouse.execute("SET force_compression = 'uncompressed'")  # reopened by compaction
    quarantined_before = shop.warehouse.scalar("SELECT count(*) FROM quarantine")
    write_second_batch(shop)

    results = {r.source: r for r in shop.ingest() if r.status == "loaded"}

    assert {s: r.rows_suppressed for s, r in results.items()} == {
        "crm": 4,  # incl. an invalid row naming her device only inside a text field
        "shop": 1,
        "lines": 1,
        "web": 4,
        "cmp": 1,
    }
    for r in results.values():
        assert r.rows_read == r.rows_loaded + r.rows_quarantined + r.rows_duplicate + (
            r.rows_suppressed
        )
    # Controls went through: Dan loaded, Eve (age 400) and the unrelated broken line quarantined.
    assert results["crm"].rows_loaded == 1 and results["crm"].rows_quarantined == 1
    assert results["web"].rows_quarantined == 1
    assert shop.warehouse.scalar("SELECT count(*) FROM quarantine") == quarantined_before + 2
    assert (
        shop.warehouse.scalar("SELECT count(*) FROM customers WHERE customer_id = 'CUST-DAN-1'")
        == 1
    )
    # Nothing of Ada anywhere: not in a table, not in quarantine, not in the bytes.
    assert (
        strings_in_tables(shop, [*ADA.strings(), "CUST-NEW-9", "CUST-ADA-BAD2", "CUST-ZED-1"]) == {}
    )
    shop.warehouse.checkpoint()
    assert strings_in_bytes(file_bytes(shop), [ADA.email, ADA.customer_id, ADA.device]) == []
    assert b"CUST-DAN-1" in file_bytes(shop)


def test_suppression_under_a_key_needs_the_key_to_load(shop, monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    erase(shop.warehouse, email=ADA.email)
    [scheme] = [
        r[0] for r in shop.warehouse.fetchall("SELECT DISTINCT scheme FROM suppression_list")
    ]
    assert scheme == "hmac-sha256:" + key_id(KEY.encode())
    assert KEY.encode() not in file_bytes(shop)
    write_second_batch(shop)

    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(UserInputError, match=KEY_ENV):
        shop.ingest()
    monkeypatch.setenv(KEY_ENV, "another-key-of-enough-length")
    with pytest.raises(UserInputError, match="pseudonymisation key"):
        shop.ingest()
    monkeypatch.setenv(KEY_ENV, KEY)
    results = {r.source: r for r in shop.ingest() if r.status == "loaded"}
    assert results["crm"].rows_suppressed == 4
    assert KEY.encode() not in file_bytes(shop)


def test_without_a_key_hashes_are_salted_per_database():
    first, second = Warehouse(":memory:"), Warehouse(":memory:")
    for wh in (first, second):
        add_to_suppression(wh, [("email", "ada@example.com")])
    hashes = [wh.scalar("SELECT hash FROM suppression_list") for wh in (first, second)]
    assert hashes[0] != hashes[1]  # different salts: lists cannot be linked
    assert hashlib.sha256(b"ada@example.com").hexdigest() not in hashes
    assert first.scalar("SELECT scheme FROM suppression_list") == SALTED
    assert first.scalar("SELECT count(*) FROM privacy_settings") == 1
    assert is_suppressed(first, " ADA@example.com") and is_suppressed(second, "ada@example.com")


def test_lists_written_before_a_key_keep_working_after(monkeypatch):
    wh = Warehouse(":memory:")
    add_to_suppression(wh, [("customer_id", "c1")])
    monkeypatch.setenv(KEY_ENV, KEY)
    add_to_suppression(wh, [("customer_id", "c2")])
    assert {r[0] for r in wh.fetchall("SELECT scheme FROM suppression_list")} == {
        SALTED,
        "hmac-sha256:" + key_id(KEY.encode()),
    }
    assert suppressed_values(wh, ["c1", "c2", "c3"]) == {"c1", "c2"}


def test_ids_are_case_sensitive_and_emails_are_not():
    wh = Warehouse(":memory:")
    add_to_suppression(wh, [("customer_id", "Ab-1"), ("email", "X@Y.org")])
    assert suppressed_values(wh, ["Ab-1", "ab-1", " Ab-1 ", "x@y.ORG"]) == {
        "Ab-1",
        " Ab-1 ",
        "x@y.ORG",
    }


@settings(max_examples=40, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=6, unique=True))
def test_exactly_the_suppressed_values_are_found(values):
    wh = Warehouse(":memory:")
    listed = values[: len(values) // 2]
    add_to_suppression(wh, [("other", v) for v in listed])
    from segmint.data.privacy import normalise_identifier

    listed_norm = {normalise_identifier(v) for v in listed} - {None}
    expected = {v for v in values if normalise_identifier(v) in listed_norm}
    assert suppressed_values(wh, values) == expected


def test_tokens_split_json_and_csv_but_keep_identifiers_whole():
    found = tokens('{"email":"Ada.L+x@Example.org","id":"cust:1"}')
    assert "Ada.L+x@Example.org" in found and "cust:1" in found
    assert tokens("c1,Ada@x.org;foo") == ["c1,Ada@x.org;foo", "c1", "Ada@x.org", "foo"]
