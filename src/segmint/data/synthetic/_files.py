"""The output files: their columns, and how each chunk's rows are built (with dirt)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from segmint.data.synthetic import _dirt, _segments, _text
from segmint.data.synthetic._consents import PURPOSES, SOURCES, Consents
from segmint.data.synthetic._dirt import DirtRates
from segmint.data.synthetic._duplicates import Duplicates
from segmint.data.synthetic._event_text import Events
from segmint.data.synthetic._names import CURRENCY
from segmint.data.synthetic._orders import CHANNELS, STATUSES, Orders, order_ids
from segmint.data.synthetic._people import People
from segmint.data.synthetic._writers import FileSpec, to_table

CUSTOMERS = FileSpec(
    "customers",
    (
        ("customer_id", "string"),
        ("email", "string"),
        ("phone", "string"),
        ("first_name", "string"),
        ("last_name", "string"),
        ("birth_date", "date"),
        ("age", "int"),
        ("gender", "string"),
        ("street", "string"),
        ("city", "string"),
        ("postcode", "string"),
        ("country", "string"),
        ("signup_at", "ts"),
        ("updated_at", "ts"),
        ("loyalty_id", "string"),
        ("income", "float"),
    ),
    dictionary=("gender", "city", "country"),
)
PRODUCTS = FileSpec(
    "products",
    (
        ("product_id", "string"),
        ("name", "string"),
        ("category", "string"),
        ("brand", "string"),
        ("price", "float"),
    ),
    dictionary=("category", "brand"),
)
ORDERS = FileSpec(
    "orders",
    (
        ("order_id", "string"),
        ("customer_id", "string"),
        ("ordered_at", "ts"),
        ("amount", "float"),
        ("currency", "string"),
        ("discount", "float"),
        ("channel", "string"),
        ("status", "string"),
    ),
    dictionary=("currency", "channel", "status"),
)
ORDER_ITEMS = FileSpec(
    "order_items",
    (
        ("order_id", "string"),
        ("line_no", "int"),
        ("product_id", "string"),
        ("quantity", "int"),
        ("unit_price", "float"),
        ("discount", "float"),
    ),
)
EVENTS = FileSpec(
    "events",
    (
        ("messageId", "string"),
        ("type", "string"),
        ("event", "string"),
        ("userId", "string"),
        ("anonymousId", "string"),
        ("timestamp", "ts_ms"),
        ("sentAt", "ts_ms"),
        ("receivedAt", "ts_ms"),
        ("properties", "string"),
        ("context", "string"),
        ("traits", "string"),
    ),
    dictionary=("type", "event"),
)
CONSENTS = FileSpec(
    "consents",
    (
        ("customer_id", "string"),
        ("purpose", "string"),
        ("granted", "bool"),
        ("at", "ts"),
        ("source", "string"),
    ),
    dictionary=("purpose", "source"),
)
TRUTH = FileSpec("truth", (("customer_id", "string"), ("segment", "string")))
DUPLICATES = FileSpec(
    "duplicates", (("duplicate_customer_id", "string"), ("original_customer_id", "string"))
)

#: Files that receive malformed lines in text formats.
BREAKABLE = ("customers", "orders", "order_items", "events", "consents")


@dataclass
class Tally:
    """Running counts of injected dirt (per kind and file) and of segment sizes."""

    dirt: dict[str, dict[str, int]] = field(
        default_factory=lambda: {kind: {} for kind in _dirt.KINDS}
    )
    segments: np.ndarray = field(default_factory=lambda: np.zeros(len(_segments.SEGMENTS), int))

    def add(self, kind: str, file: str, count: int) -> None:
        """Count ``count`` dirty rows of ``kind`` in ``file``."""
        self.dirt[kind][file] = self.dirt[kind].get(file, 0) + int(count)

    def totals(self) -> dict[str, int]:
        """Dirty rows per kind, all files together."""
        return {kind: sum(by_file.values()) for kind, by_file in self.dirt.items()}


def _null(mask: np.ndarray, values: pa.Array) -> pa.Array:
    """``values`` with nulls where ``mask`` is true."""
    return pc.if_else(pa.array(mask), pa.scalar(None, values.type), values)


def customers_table(
    people: People,
    dup: Duplicates,
    rates: DirtRates,
    spoil: np.random.Generator,
    tally: Tally,
    fmt: str,
) -> pa.Table:
    """Customer rows (originals and duplicate records) with missing values, odd ages, copies."""
    o = dup.original

    def both(values: pa.Array, extra: pa.Array | None = None) -> pa.Array:
        return pa.concat_arrays([values, extra if extra is not None else values.take(pa.array(o))])

    total = len(people) + len(dup)
    in_pair = np.zeros(total, dtype=bool)
    in_pair[o] = True
    in_pair[len(people) :] = True
    no_email = _dirt.pick_rows(spoil, total, rates.missing_email, eligible=~in_pair)
    no_phone = _dirt.pick_rows(spoil, total, rates.missing_phone)
    no_age = _dirt.pick_rows(spoil, total, rates.missing_age)
    odd_age = _dirt.pick_rows(spoil, total, rates.impossible_age, eligible=~no_age)
    age = np.concatenate([people.age, people.age[o]])
    age = np.where(odd_age, _dirt.impossible_ages(spoil, total), age)
    for kind, mask in (
        ("missing_email", no_email),
        ("missing_phone", no_phone),
        ("missing_age", no_age),
        ("impossible_age", odd_age),
    ):
        tally.add(kind, "customers", int(mask.sum()))

    table = to_table(
        CUSTOMERS,
        {
            "customer_id": both(people.customer_id, dup.customer_id),
            "email": _null(no_email, both(people.email_crm, dup.email)),
            "phone": _null(no_phone, both(people.phone, dup.phone)),
            "first_name": both(people.first_name),
            "last_name": both(people.last_name),
            "birth_date": np.concatenate([people.birth_day, people.birth_day[o]]),
            "age": pa.array(age, pa.int64(), mask=no_age),
            "gender": both(people.gender),
            "street": both(people.street),
            "city": both(people.city),
            "postcode": both(people.postcode),
            "country": both(people.country_text),
            "signup_at": np.concatenate([people.signup_s, dup.created_s]),
            "updated_at": np.concatenate([people.updated_s, dup.updated_s]),
            "loyalty_id": both(people.loyalty_id, pa.nulls(len(dup), pa.string())),
            "income": both(people.income),
        },
        fmt,
    )
    rows = _dirt.repeat_rows(spoil, table.num_rows, rates.exact_duplicate_rows)
    tally.add("exact_duplicate_rows", "customers", len(rows) - table.num_rows)
    return table.take(pa.array(rows))


def orders_table(
    people: People,
    orders: Orders,
    dup: Duplicates,
    rates: DirtRates,
    spoil: np.random.Generator,
    tally: Tally,
    fmt: str,
) -> pa.Table:
    """Order rows, with negative amounts, future times and exact copies."""
    n = len(orders)
    customer_id = _text.pick(people.customer_id, orders.customer)
    if len(dup):
        # Store purchases after the second record was created are booked on it.
        slot = np.full(len(people), -1)
        slot[dup.original] = np.arange(len(dup))
        j = slot[orders.customer]
        moved = (j >= 0) & (orders.channel == CHANNELS.index("store"))
        moved &= orders.at_s >= dup.created_s[np.maximum(j, 0)]
        customer_id = _text.where(moved, _text.pick(dup.customer_id, np.maximum(j, 0)), customer_id)
    negative = _dirt.pick_rows(spoil, n, rates.negative_amount)
    future = _dirt.pick_rows(spoil, n, rates.future_timestamp)
    tally.add("negative_amount", "orders", int(negative.sum()))
    tally.add("future_timestamp", "orders", int(future.sum()))
    amount = _text.money(np.where(negative, -orders.amount_cents, orders.amount_cents))
    at_s = np.where(future, _dirt.future_seconds(spoil, n), orders.at_s)
    table = to_table(
        ORDERS,
        {
            "order_id": order_ids(orders.number),
            "customer_id": customer_id,
            "ordered_at": at_s,
            "amount": amount,
            "currency": pa.array(np.full(n, CURRENCY)),
            "discount": _text.money(orders.discount_cents),
            "channel": _text.pick(pa.array(CHANNELS), orders.channel),
            "status": _text.pick(pa.array(STATUSES), orders.status),
        },
        fmt,
    )
    rows = _dirt.repeat_rows(spoil, n, rates.exact_duplicate_rows)
    tally.add("exact_duplicate_rows", "orders", len(rows) - n)
    return table.take(pa.array(rows))


def order_items_table(orders: Orders, product_id: pa.StringArray, fmt: str) -> pa.Table:
    """Order lines (never dirty: they define the true amounts)."""
    return to_table(
        ORDER_ITEMS,
        {
            "order_id": order_ids(orders.number[orders.line_order]),
            "line_no": orders.line_no,
            "product_id": _text.pick(product_id, orders.product),
            "quantity": orders.quantity,
            "unit_price": _text.money(orders.unit_price_cents),
            "discount": _text.money(orders.line_discount_cents),
        },
        fmt,
    )


def events_table(
    events: Events, rates: DirtRates, spoil: np.random.Generator, tally: Tally, fmt: str
) -> pa.Table:
    """Events with future timestamps: typed columns for Parquet, JSON lines otherwise."""
    n = len(events)
    future = _dirt.pick_rows(spoil, n, rates.future_timestamp)
    tally.add("future_timestamp", "events", int(future.sum()))
    timestamp_ms = np.where(
        future,
        _dirt.future_seconds(spoil, n) * 1000 + (events.timestamp_ms % 1000),
        events.timestamp_ms,
    )
    if fmt == "parquet":
        return to_table(
            EVENTS,
            {
                "messageId": events.message_id,
                "type": events.type,
                "event": events.event,
                "userId": events.user_id,
                "anonymousId": events.anonymous_id,
                "timestamp": timestamp_ms,
                "sentAt": events.sent_ms,
                "receivedAt": events.received_ms,
                "properties": events.properties,
                "context": events.context,
                "traits": events.traits,
            },
            fmt,
        )

    def optional(key: str, values: pa.Array) -> pa.Array:
        piece = _text.join(f',"{key}":"', values, '"')
        return pc.coalesce(piece, "")

    traits = pc.coalesce(_text.join(',"traits":', events.traits), "")
    line = _text.join(
        '{"messageId":"',
        events.message_id,
        '","type":"',
        events.type,
        '"',
        optional("event", events.event),
        optional("userId", events.user_id),
        optional("anonymousId", events.anonymous_id),
        ',"timestamp":"',
        _text.iso_timestamps(timestamp_ms),
        '","sentAt":"',
        _text.iso_timestamps(events.sent_ms),
        '","receivedAt":"',
        _text.iso_timestamps(events.received_ms),
        '","properties":',
        events.properties,
        ',"context":',
        events.context,
        traits,
        "}\n",
    )
    return pa.table({"line": line})


def consents_table(people: People, consents: Consents, fmt: str) -> pa.Table:
    """Consent history rows."""
    customer, purpose, granted, at_s, source = consents.rows(people)
    return to_table(
        CONSENTS,
        {
            "customer_id": _text.pick(people.customer_id, customer),
            "purpose": _text.pick(pa.array(PURPOSES), purpose),
            "granted": granted,
            "at": at_s,
            "source": _text.pick(pa.array(SOURCES), source),
        },
        fmt,
    )
