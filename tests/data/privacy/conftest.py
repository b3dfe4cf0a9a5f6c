"""A small hand-made shop where one person (Ada) leaves identifiers everywhere.

Ada has two CRM records (merged by e-mail), orders under both customer ids, order
lines, identified and anonymous events (her e-mail in properties and context),
an anonymous sign-up event from another device naming her e-mail, consents, a
quarantined CRM row and a malformed event line carrying her e-mail, plus
derived tables (features, segment assignments, memberships, identity graph,
dead letters). Bob and Cleo are the control: their data must survive.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from segmint.project import Project

SOURCES = """
sources:
  - name: crm
    kind: customers
    path: data/customers*.csv
  - name: shop
    kind: orders
    path: data/orders*.csv
  - name: lines
    kind: order_items
    path: data/order_items*.csv
  - name: web
    kind: events
    path: data/events*.jsonl
  - name: cmp
    kind: consents
    path: data/consents*.csv
"""


@dataclass(frozen=True)
class Ada:
    """Every identifier of the erased person, as they appear in the data."""

    customer_id: str = "CUST-ADA-7731"
    second_id: str = "CUST-ADA-9902"  # duplicate CRM record, merged by e-mail
    email: str = "ada.lovelace.7731@example.org"
    email_mixed: str = "Ada.Lovelace.7731@Example.ORG"
    phone: str = "+493012345677"
    loyalty_id: str = "LOY-ADA-7731"
    device: str = "anon-ada-7731-device"
    order: str = "ORD-ADA-7731-1"
    order_2: str = "ORD-ADA-9902-2"
    person_id: str = "P-ADA-7731"
    external: str = "ext-ada-7731-zz"
    first_name: str = "Augustaada"
    bad_record: str = "CUST-ADA-BAD"  # only in a quarantined row

    def strings(self) -> list[str]:
        """Identifiers that must be gone from every table and from the file's bytes."""
        return [
            self.customer_id,
            self.second_id,
            self.email,
            self.email_mixed,
            self.phone,
            self.loyalty_id,
            self.device,
            self.order,
            self.order_2,
            self.person_id,
            self.external,
            self.first_name,
            self.bad_record,
        ]


ADA = Ada()


def _events() -> str:
    ada_ctx = {
        "ip": "10.0.0.7",
        "traits": {"email": ADA.email},
        "consent": {"categoryPreferences": {"analytics": True, "advertising": True}},
    }
    rows = [
        {
            "messageId": "m-ada-1",
            "type": "track",
            "event": "Product Viewed",
            "userId": ADA.customer_id,
            "anonymousId": ADA.device,
            "timestamp": "2024-03-01T10:00:00Z",
            "properties": {"contact": ADA.email_mixed},
            "context": ada_ctx,
        },
        {
            "messageId": "m-ada-2",
            "type": "page",
            "anonymousId": ADA.device,
            "timestamp": "2024-02-28T09:00:00Z",
            "properties": {"path": "/"},
        },
        {
            "messageId": "m-signup",
            "type": "track",
            "event": "Signed Up",
            "anonymousId": "anon-kiosk-55",
            "timestamp": "2024-02-27T09:00:00Z",
            "properties": {"email": ADA.email},
        },
        {
            "messageId": "m-bob-1",
            "type": "track",
            "event": "Product Viewed",
            "userId": "CUST-BOB-1",
            "anonymousId": "anon-bob-device",
            "timestamp": "2024-03-02T10:00:00Z",
            "properties": {"sku": "X1"},
            "context": {"consent": {"categoryPreferences": {"analytics": False}}},
        },
        {
            "messageId": "m-bob-2",
            "type": "page",
            "anonymousId": "anon-bob-device",
            "timestamp": "2024-03-02T09:00:00Z",
        },
    ]
    lines = [json.dumps(r) for r in rows]
    lines.insert(2, '{"messageId": "m-broken", "userId": "' + ADA.email + '", oops')
    return "\n".join(lines) + "\n"


_ADA_ROW = ",".join(
    [ADA.customer_id, ADA.email_mixed, "+49 30 12345677", ADA.first_name, "Lovelace", "36"]
    + [ADA.loyalty_id, "2024-01-02"]
)

FILES: dict[str, str] = {
    "data/customers.csv": f"""
        customer_id,email,phone,first_name,last_name,age,loyalty_id,updated_at
        {_ADA_ROW}
        CUST-BOB-1,bob@example.net,,Bob,Builder,41,,2024-01-02
        CUST-CLEO-1,cleo@example.net,,Cleo,Patra,29,,2024-01-02
        {ADA.second_id},{ADA.email},,,,,,2024-01-01
        {ADA.bad_record},{ADA.email_mixed},,Ada,Lovelace,300,,2024-01-02
    """,
    "data/orders.csv": f"""
        order_id,customer_id,ordered_at,amount
        {ADA.order},{ADA.customer_id},2024-02-01,100
        {ADA.order_2},{ADA.second_id},2024-02-02,50
        ORD-BOB-1,CUST-BOB-1,2024-02-03,70
    """,
    "data/order_items.csv": f"""
        order_id,line_no,product_id,quantity,unit_price
        {ADA.order},1,P1,1,100
        {ADA.order_2},1,P2,2,25
        ORD-BOB-1,1,P1,1,70
    """,
    "data/events.jsonl": _events(),
    "data/consents.csv": f"""
        customer_id,purpose,granted,at,source
        {ADA.customer_id},email_marketing,true,2024-01-05,web_form
        CUST-BOB-1,email_marketing,true,2024-01-05,web_form
    """,
}


def add_derived_tables(project: Project) -> None:
    """Derived tables other parts of segmint write (created here by hand)."""
    wh = project.warehouse
    wh.execute(
        "CREATE OR REPLACE TABLE features AS SELECT customer_id, 1.0 AS recency FROM customers "
        "WHERE customer_id NOT LIKE '%BAD%'"
    )
    wh.execute(
        "CREATE OR REPLACE TABLE segment_assignments AS SELECT customer_id, "
        "'v0001' AS model_version, 0 AS segment_id FROM customers"
    )
    wh.execute(
        "CREATE OR REPLACE TABLE partner_audiences "
        "(person_id VARCHAR, segment VARCHAR, since TIMESTAMP)"
    )
    wh.execute(
        "INSERT INTO partner_audiences VALUES (?, 'vip', TIMESTAMP '2024-03-01'), "
        "('P-BOB-1', 'vip', TIMESTAMP '2024-03-01')",
        [ADA.person_id],
    )
    wh.execute(
        "CREATE OR REPLACE TABLE identities (identifier_type VARCHAR, identifier_value VARCHAR, "
        "person_id VARCHAR)"
    )
    wh.execute(
        "INSERT INTO identities VALUES ('customer_id', ?, ?), ('email', ?, ?), "
        "('external', ?, ?), ('customer_id', 'CUST-BOB-1', 'P-BOB-1')",
        [ADA.customer_id, ADA.person_id, ADA.email, ADA.person_id, ADA.external, ADA.person_id],
    )
    wh.execute(
        "CREATE OR REPLACE TABLE identity_links (type_a VARCHAR, value_a VARCHAR, type_b VARCHAR, "
        "value_b VARCHAR, ref VARCHAR)"
    )
    wh.execute(
        "INSERT INTO identity_links VALUES ('customer_id', ?, 'email', ?, ?), "
        "('customer_id', 'CUST-BOB-1', 'email', 'bob@example.net', 'CUST-BOB-1')",
        [ADA.customer_id, ADA.email, ADA.customer_id],
    )
    wh.execute(
        "CREATE OR REPLACE TABLE identity_merges (merge_id VARCHAR, person_id VARCHAR, "
        "other_person_ids VARCHAR[], identifiers JSON)"
    )
    wh.execute(
        "INSERT INTO identity_merges VALUES ('m_1', 'P-BOB-1', [?], ?), "
        "('m_2', 'P-BOB-1', ['P-BOB-2'], '[]')",
        [ADA.person_id, json.dumps([{"type": "email", "value": ADA.email}])],
    )
    wh.execute(
        "CREATE OR REPLACE TABLE identity_review (review_id VARCHAR, customer_id_l VARCHAR, "
        "customer_id_r VARCHAR)"
    )
    wh.execute(
        "INSERT INTO identity_review VALUES ('r_1', ?, 'CUST-CLEO-1'), "
        "('r_2', 'CUST-BOB-1', 'CUST-CLEO-1')",
        [ADA.second_id],
    )
    wh.execute(
        "CREATE OR REPLACE TABLE failed_events "
        "(received_at TIMESTAMP, reason VARCHAR, payload VARCHAR)"
    )
    wh.execute(
        "INSERT INTO failed_events VALUES (TIMESTAMP '2024-03-01', 'too_large', ?), "
        "(TIMESTAMP '2024-03-01', 'too_large', '{\"userId\": \"CUST-BOB-1\"}')",
        [json.dumps({"userId": ADA.customer_id, "traits": {"phone": ADA.phone}})],
    )


@pytest.fixture
def shop(make_project: Callable[..., Project], tmp_path: Path) -> Iterator[Project]:
    """The loaded shop, stored uncompressed so identifiers are findable in the bytes."""
    project = make_project(
        SOURCES, {name: textwrap.dedent(text).lstrip("\n") for name, text in FILES.items()}
    )
    project.warehouse.execute("SET force_compression = 'uncompressed'")
    project.ingest()
    add_derived_tables(project)
    project.warehouse.checkpoint()
    yield project


def file_bytes(project: Project) -> bytes:
    """The database file and its write-ahead log, if any."""
    path = Path(project.warehouse.path)
    data = path.read_bytes()
    wal = Path(f"{path}.wal")
    if wal.exists():
        data += wal.read_bytes()
    return data


def strings_in_bytes(data: bytes, strings: list[str]) -> list[str]:
    lowered = data.lower()
    return [s for s in strings if s.lower().encode() in lowered]


def strings_in_tables(project: Project, strings: list[str]) -> dict[str, list[str]]:
    """Every table's every value, as text, searched (case-insensitively) for the strings."""
    wh = project.warehouse
    found: dict[str, list[str]] = {}
    tables = [
        r[0]
        for r in wh.fetchall(
            "SELECT table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE' "
            "AND table_catalog = current_database()"
        )
    ]
    for table in tables:
        text = " ".join(str(v) for row in wh.fetchall(f'SELECT * FROM "{table}"') for v in row)
        hits = [s for s in strings if s.lower() in text.lower()]
        if hits:
            found[table] = hits
    return found
