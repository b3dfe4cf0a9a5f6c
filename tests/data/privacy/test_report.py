"""The PII report: which personal data is where, counted by hand on the shop."""

from __future__ import annotations

from segmint.data.privacy import erase, pii_report
from tests.data.privacy.conftest import ADA


def _by_column(stats):
    return {(s.table, s.column): s for s in stats}


def test_report_counts_pii_per_table_and_column(shop):
    stats = _by_column(pii_report(shop.warehouse))
    email = stats[("customers", "email")]
    # Ada (merged with her duplicate), Bob, Cleo: three rows, three e-mails.
    assert (email.rows, email.non_null, email.distinct) == (3, 3, 3)
    assert (email.basis, email.kind) == ("schema", "identifier")
    phone = stats[("customers", "phone")]
    assert (phone.non_null, phone.distinct) == (1, 1)
    assert stats[("customers", "first_name")].kind == "personal data"
    assert stats[("quarantine", "raw")].kind == "raw text"
    events = stats[("events", "anonymous_id")]
    assert (events.rows, events.non_null, events.distinct) == (5, 5, 3)
    # Tables the data dictionary does not describe are found by column name.
    assert stats[("partner_audiences", "person_id")].basis == "name"
    assert stats[("failed_events", "payload")].kind == "raw text"
    assert stats[("identity_merges", "other_person_ids")].non_null == 2
    # Non-personal columns and record keys are not listed.
    assert ("orders", "amount") not in stats
    assert ("orders", "order_id") not in stats
    assert ("customers", "age") not in stats


def test_report_reflects_an_erasure(shop):
    before = _by_column(pii_report(shop.warehouse))[("customers", "email")].non_null
    erase(shop.warehouse, email=ADA.email)
    stats = _by_column(pii_report(shop.warehouse))
    assert stats[("customers", "email")].non_null == before - 1
    pending = stats[("erasure_requests", "subject_value")]
    assert (pending.rows, pending.non_null) == (1, 0)  # the erased value is not kept
