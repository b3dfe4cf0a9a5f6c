"""Erasure: every row of the person, in every table and the file's bytes, gone; others kept."""

from __future__ import annotations

import json
import logging
import textwrap

import pytest

from segmint.data.privacy import (
    audit_entries,
    erase,
    erasure_requests,
    is_suppressed,
    resolve_identifiers,
    resume_erasures,
    suppression_counts,
)
from segmint.data.privacy import compaction as compaction_module
from segmint.data.privacy import erasure as erasure_module
from segmint.engine import Warehouse
from segmint.errors import UserInputError
from tests.data.privacy.conftest import (
    ADA,
    file_bytes,
    strings_in_bytes,
    strings_in_tables,
)


def counts(project, table, where="true"):
    return project.warehouse.scalar(f'SELECT count(*) FROM "{table}" WHERE {where}')


def test_the_shop_holds_ada_everywhere_before_erasure(shop):
    # The premise of the tests below: the identifiers are findable where we look.
    assert set(strings_in_bytes(file_bytes(shop), ADA.strings())) >= {
        ADA.customer_id,
        ADA.email,
        ADA.loyalty_id,
        ADA.device,
    }
    found = strings_in_tables(shop, ADA.strings())
    for table in (
        "customers",
        "orders",
        "order_items",
        "events",
        "consents",
        "quarantine",
        "dedupe_merges",
        "features",
        "segment_assignments",
        "partner_audiences",
        "identities",
        "identity_links",
        "identity_merges",
        "identity_review",
        "failed_events",
    ):
        assert table in found, table
    assert counts(shop, "quarantine", f"raw LIKE '%{ADA.bad_record}%'") == 1
    assert counts(shop, "quarantine", f"raw LIKE '%{ADA.email}%'") == 1  # the malformed line


def test_erasure_removes_every_identifier_from_tables_and_file_bytes(shop):
    before = {
        t: counts(shop, t)
        for t in ("customers", "orders", "order_items", "events", "consents", "quarantine")
    }
    report = erase(shop.warehouse, email=ADA.email_mixed, actor="dpo@shop")

    assert report.state == "done" and report.compacted
    assert report.residual == ()
    assert strings_in_tables(shop, ADA.strings()) == {}
    assert strings_in_bytes(file_bytes(shop), ADA.strings()) == []

    # Exactly Ada's rows went; Bob's and Cleo's stayed.
    assert report.rows_deleted["customers"] == 1
    assert report.rows_deleted["orders"] == 2
    assert report.rows_deleted["order_items"] == 2
    assert report.rows_deleted["events"] == 3  # identified, anonymous on her device, sign-up
    assert report.rows_deleted["quarantine"] == 2  # bad CRM row, malformed event line
    after = {t: counts(shop, t) for t in before}
    for table, n in before.items():
        assert after[table] == n - report.rows_deleted.get(table, 0)
    assert sorted(r[0] for r in shop.warehouse.fetchall("SELECT customer_id FROM customers")) == [
        "CUST-BOB-1",
        "CUST-CLEO-1",
    ]
    assert sorted(r[0] for r in shop.warehouse.fetchall("SELECT message_id FROM events")) == [
        "m-bob-1",
        "m-bob-2",
    ]
    for table in ("partner_audiences", "identities", "identity_links", "identity_merges"):
        assert counts(shop, table) == 1, table
    assert counts(shop, "identity_review") == 1
    assert counts(shop, "failed_events") == 1
    # Identifier kinds found: both customer ids, e-mail, phone, loyalty, device, graph ids.
    assert report.identifiers["customer_id"] == 2
    assert report.identifiers["person_id"] == 1
    assert report.identifiers["other"] == 1
    assert report.identifiers["anonymous_id"] == 1


def test_erasure_is_audited_without_values_and_suppresses_the_identifiers(shop):
    report = erase(shop.warehouse, customer_id=ADA.customer_id, actor="dpo@shop")
    [entry] = audit_entries(shop.warehouse, "erasure")
    assert entry.actor == "dpo@shop"
    assert entry.details["request_id"] == report.request_id
    assert entry.details["rows_deleted"] == report.rows_deleted
    assert audit_entries(shop.warehouse, "compaction")
    text = json.dumps([e.details for e in audit_entries(shop.warehouse)]).lower()
    assert not [s for s in ADA.strings() if s.lower() in text]
    [request] = erasure_requests(shop.warehouse)
    assert request.state == "done"
    assert shop.warehouse.scalar("SELECT subject_value FROM erasure_requests") is None
    for value in (ADA.customer_id, ADA.second_id, ADA.email_mixed, ADA.phone, ADA.device):
        assert is_suppressed(shop.warehouse, value), value
    assert not is_suppressed(shop.warehouse, "CUST-BOB-1")
    by_type = {c.identifier_type: c.hashes for c in suppression_counts(shop.warehouse)}
    assert by_type["order_id"] == 2 and by_type["email"] == 1


def test_erasing_twice_is_harmless_and_reports_zero_rows(shop):
    first = erase(shop.warehouse, email=ADA.email)
    second = erase(shop.warehouse, email=ADA.email)
    assert first.total_rows > 0
    assert second.total_rows == 0 and second.rows_deleted == {}
    assert second.suppressed_added == 0
    assert second.state == "done"
    assert [r.state for r in erasure_requests(shop.warehouse)] == ["done", "done"]


def test_a_person_id_reaches_the_identity_graph(shop):
    report = erase(shop.warehouse, person=ADA.person_id)
    assert report.rows_deleted["customers"] == 1
    assert strings_in_tables(shop, ADA.strings()) == {}


def test_shared_device_keeps_the_other_persons_events(shop):
    wh = shop.warehouse
    wh.execute(
        "INSERT INTO events (message_id, type, user_id, anonymous_id, timestamp) VALUES "
        "('m-bob-3', 'track', 'CUST-BOB-1', ?, TIMESTAMP '2024-03-05')",
        [ADA.device],
    )
    report = erase(wh, customer_id=ADA.customer_id)
    assert counts(shop, "events", "message_id = 'm-bob-3'") == 1
    assert report.identifiers["shared_anonymous_id"] == 1
    # The device is also Bob's: it is neither suppressed nor counted as Ada's residue.
    assert not is_suppressed(wh, ADA.device)
    assert report.residual == ()


def test_crash_inside_the_delete_transaction_rolls_back_and_resumes(shop, monkeypatch):
    real = erasure_module.add_to_suppression

    def crash(*args, **kwargs):
        real(*args, **kwargs)
        raise RuntimeError("power cut")

    monkeypatch.setattr(erasure_module, "add_to_suppression", crash)
    with pytest.raises(RuntimeError, match="power cut"):
        erase(shop.warehouse, email=ADA.email)
    # Nothing happened, but the request is recorded and pending.
    assert counts(shop, "customers", f"customer_id = '{ADA.customer_id}'") == 1
    assert counts(shop, "suppression_list") == 0
    [request] = erasure_requests(shop.warehouse)
    assert request.state == "pending"

    monkeypatch.setattr(erasure_module, "add_to_suppression", real)
    [resumed] = resume_erasures(shop.warehouse)
    assert resumed.request_id == request.request_id and resumed.state == "done"
    assert resumed.rows_deleted["customers"] == 1
    assert strings_in_tables(shop, ADA.strings()) == {}
    assert strings_in_bytes(file_bytes(shop), ADA.strings()) == []


def test_crash_before_compaction_leaves_the_request_erased_and_rerun_compacts(shop, monkeypatch):
    def crash(wh):
        raise RuntimeError("disk full")

    monkeypatch.setattr(compaction_module, "compact_database", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        erase(shop.warehouse, email=ADA.email)
    [request] = erasure_requests(shop.warehouse)
    assert request.state == "erased"
    assert strings_in_tables(shop, ADA.strings()) == {}
    # Deleted is not gone: the freed blocks still hold the values.
    assert strings_in_bytes(file_bytes(shop), ADA.strings())

    monkeypatch.undo()
    # Any later erasure (or resume) finishes it.
    erase(shop.warehouse, customer_id="CUST-NOBODY")
    assert [r.state for r in erasure_requests(shop.warehouse)] == ["done", "done"]
    assert strings_in_bytes(file_bytes(shop), ADA.strings()) == []


def test_logs_never_carry_the_erased_values(shop, caplog):
    caplog.set_level(logging.DEBUG)
    erase(shop.warehouse, email=ADA.email)
    text = caplog.text.lower()
    assert "erasure" in text
    assert not [s for s in ADA.strings() if s.lower() in text]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "exactly one"),
        ({"email": "a@b.co", "customer_id": "c1"}, "exactly one"),
        ({"email": "not-an-email"}, "not an e-mail"),
        ({"customer_id": "   "}, "empty"),
    ],
)
def test_bad_requests_are_refused_before_anything_is_written(kwargs, message):
    wh = Warehouse(":memory:")
    with pytest.raises(UserInputError, match=message):
        erase(wh, **kwargs)
    assert not wh.has_table("erasure_requests") or erasure_requests(wh) == []


def test_in_memory_warehouse_is_erased_without_compaction():
    wh = Warehouse(":memory:")
    wh.execute("CREATE TABLE orders (order_id VARCHAR, customer_id VARCHAR)")
    wh.execute("INSERT INTO orders VALUES ('o1', 'c1'), ('o2', 'c2')")
    report = erase(wh, customer_id="c1")
    assert report.state == "done" and not report.compacted
    assert wh.fetchall("SELECT order_id FROM orders") == [("o2",)]


def test_resolution_follows_merges_devices_and_the_graph(shop):
    ids = resolve_identifiers(shop.warehouse, [("email", ADA.email_mixed)])
    assert ids.by_kind["customer_id"] == {ADA.customer_id, ADA.second_id}
    assert ids.by_kind["anonymous_id"] == {ADA.device}
    assert ids.by_kind["loyalty_id"] == {ADA.loyalty_id}
    assert ids.by_kind["phone"] == {ADA.phone}
    assert ids.by_kind["person_id"] == {ADA.person_id}
    assert ids.by_kind["other"] == {ADA.external}
    assert ids.by_kind["order_id"] == {ADA.order, ADA.order_2}
    assert ids.by_kind["message_id"] == {"m-ada-1", "m-ada-2"}
    assert "CUST-BOB-1" not in ids.values()


def test_erasure_reaches_the_identity_graph_segmint_builds(make_project):
    graph = pytest.importorskip("segmint.data.identity.graph")
    from tests.data.privacy.conftest import FILES, SOURCES

    project = make_project(
        SOURCES, {name: textwrap.dedent(text).lstrip("\n") for name, text in FILES.items()}
    )
    project.warehouse.execute("SET force_compression = 'uncompressed'")
    project.ingest()
    graph.resolve_identities(project.warehouse)
    strings = [ADA.customer_id, ADA.second_id, ADA.email, ADA.device, ADA.loyalty_id]
    assert "identities" in strings_in_tables(project, strings)
    person = project.warehouse.scalar(
        "SELECT person_id FROM identities WHERE identifier_value = ?", [ADA.customer_id]
    )
    bob_sql = "SELECT count(*) FROM identities WHERE identifier_value = 'CUST-BOB-1'"
    bob = project.warehouse.scalar(bob_sql)

    report = erase(project.warehouse, person=person)

    assert report.residual == ()
    assert strings_in_tables(project, [*strings, person]) == {}
    assert strings_in_bytes(file_bytes(project), [*strings, person]) == []
    assert bob > 0 and project.warehouse.scalar(bob_sql) == bob
