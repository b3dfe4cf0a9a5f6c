"""Reference ingest written plainly with pandas: read, validate, quarantine, dedupe, write.

It does the same work as ``segmint ingest`` for orders (CSV) and events (JSON Lines):
type coercion, required / type / range / not-in-future checks, quarantine of failing rows,
key deduplication, and writing the result (Parquet). It streams in chunks so its memory
stays bounded, as a careful pandas user would write it.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

CHUNK = 1_000_000


def _write(writer: pq.ParquetWriter | None, frame: pd.DataFrame, path: Path) -> pq.ParquetWriter:
    table = pa.Table.from_pandas(frame, preserve_index=False)
    if writer is None:
        writer = pq.ParquetWriter(path, table.schema)
    writer.write_table(table.cast(writer.schema))
    return writer


def _seen_before(keys: pd.Series, seen: set[str]) -> pd.Series:
    """Which keys an earlier chunk had. (``keys.isin(seen)`` would copy the whole,
    growing set into a new hash table for every chunk: quadratic in the file size.)"""
    return keys.map(seen.__contains__).astype(bool)


def ingest_orders(path: Path, out: Path) -> dict[str, int]:
    now = pd.Timestamp(datetime.now(UTC).replace(tzinfo=None))
    seen: set[str] = set()
    good_writer = bad_writer = None
    counts = {"read": 0, "loaded": 0, "quarantined": 0, "duplicate": 0}
    for chunk in pd.read_csv(path, dtype=str, chunksize=CHUNK, on_bad_lines="skip"):
        counts["read"] += len(chunk)
        typed = pd.DataFrame(
            {
                "order_id": chunk["order_id"].str.strip(),
                "customer_id": chunk["customer_id"].str.strip(),
                "ordered_at": pd.to_datetime(chunk["ordered_at"], errors="coerce"),
                "amount": pd.to_numeric(chunk["amount"], errors="coerce"),
                "currency": chunk["currency"],
                "discount": pd.to_numeric(chunk["discount"], errors="coerce"),
                "channel": chunk["channel"].str.lower(),
                "status": chunk["status"].str.lower(),
            }
        )
        bad = (
            typed["order_id"].isna()
            | typed["customer_id"].isna()
            | typed["ordered_at"].isna()
            | typed["amount"].isna()
            | (typed["amount"] < 0)
            | (typed["discount"] < 0)
            | (typed["ordered_at"] > now)
        )
        quarantine = chunk[bad].assign(rule="invalid")
        good = typed[~bad]
        duplicate = good["order_id"].duplicated() | _seen_before(good["order_id"], seen)
        seen.update(good["order_id"])
        good = good[~duplicate]
        counts["quarantined"] += int(bad.sum())
        counts["duplicate"] += int(duplicate.sum())
        counts["loaded"] += len(good)
        good_writer = _write(good_writer, good, out / "orders.parquet")
        if len(quarantine):
            bad_writer = _write(bad_writer, quarantine, out / "orders_quarantine.parquet")
    for writer in (good_writer, bad_writer):
        if writer is not None:
            writer.close()
    return counts


EVENT_FIELDS = [
    "messageId",
    "type",
    "event",
    "userId",
    "anonymousId",
    "timestamp",
    "sentAt",
    "receivedAt",
]


def ingest_events(path: Path, out: Path) -> dict[str, int]:
    now = pd.Timestamp(datetime.now(UTC).replace(tzinfo=None))
    seen: set[str] = set()
    writer = bad_writer = None
    counts = {"read": 0, "loaded": 0, "quarantined": 0, "duplicate": 0}
    with path.open(encoding="utf-8") as handle:
        while True:
            lines = [line for _, line in zip(range(CHUNK), handle, strict=False)]
            if not lines:
                break
            records, malformed = [], []
            for line in lines:
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError:
                    malformed.append(line)
                    continue
                if not isinstance(obj, dict):
                    malformed.append(line)
                    continue
                row = {f: obj.get(f) for f in EVENT_FIELDS}
                for nested in ("properties", "context", "traits"):
                    row[nested] = json.dumps(obj[nested]) if nested in obj else None
                records.append(row)
            counts["read"] += len(lines)
            frame = pd.DataFrame.from_records(records)
            ts = pd.to_datetime(frame["timestamp"], errors="coerce", utc=True).dt.tz_localize(None)
            frame["timestamp"] = ts
            bad = (
                frame["messageId"].isna()
                | ts.isna()
                | (ts > now)
                | (frame["userId"].isna() & frame["anonymousId"].isna())
                | ~frame["type"].isin(["track", "identify", "page", "screen", "group", "alias"])
            )
            good = frame[~bad]
            duplicate = good["messageId"].duplicated() | _seen_before(good["messageId"], seen)
            seen.update(good["messageId"])
            good = good[~duplicate]
            counts["quarantined"] += int(bad.sum()) + len(malformed)
            counts["duplicate"] += int(duplicate.sum())
            counts["loaded"] += len(good)
            writer = _write(writer, good, out / "events.parquet")
            if bad.any():
                bad_writer = _write(bad_writer, frame[bad].astype(str), out / "events_bad.parquet")
    for w in (writer, bad_writer):
        if w is not None:
            w.close()
    return counts
