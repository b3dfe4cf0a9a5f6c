"""The intake log: where a group of ingest requests becomes durable before it is answered.

A DuckDB commit of a group (events, profile journal, identities, trigger state,
memberships, outbox: 7-10 statements and the commit) costs 5-20 ms, and every
request queued behind it waits that long. Instead, the writer applies a group in
memory, appends the group's parsed requests to this log with one ``fdatasync``
(about 0.15 ms) and answers. Every writer tick (about 100 ms) a flusher thread
writes what the groups since the last flush changed, in one transaction that also
records the last group it covers (``realtime_intake.seq``); the log has two files
that take turns, so the writer logs to one while the groups of the other are
flushed, and that one is emptied after the commit.

After a crash the service loads its state from DuckDB and replays the groups
logged after that ``seq``, with the ``now`` each was processed at; processing is
deterministic given the state and the group, so the replay rebuilds exactly what
was acknowledged. Between a flush and the next, nothing but logged records changes
the in-memory state: due timers and expired memberships are logged as tick
records; admin writes and re-scoring flush first and commit at once.

A record is ``length (u32 LE) | crc32 (u32 LE) | payload``; a record cut short by a
crash (a torn tail) fails its length or checksum and is dropped together with
anything after it. Only acknowledged groups are complete records: a group is
answered after its record is synced.
"""

from __future__ import annotations

import os
import struct
import threading
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from segmint.data.schema import Column, Table, register_table
from segmint.engine import RowWriter, Warehouse
from segmint.realtime.events import Event, EventType, IngestRequest, Rejection
from segmint.realtime.rescoring import ModelScore

__all__ = ["INTAKE_POSITION", "IntakeLog", "LoggedGroup", "applied_seq", "set_applied_seq"]

_HEADER = struct.Struct("<II")

INTAKE_POSITION = Table(
    "realtime_intake",
    "The last intake-log group written to the warehouse (one row); groups after it are "
    "replayed from the intake log when the service starts.",
    (Column("seq", "integer", "Sequence number of the group."),),
)
register_table(INTAKE_POSITION)


def applied_seq(wh: Warehouse) -> int:
    wh.execute(INTAKE_POSITION.ddl())
    seq = wh.scalar("SELECT max(seq) FROM realtime_intake")
    if seq is None:
        wh.execute("INSERT INTO realtime_intake (seq) VALUES (0)")
        return 0
    return int(seq)


def set_applied_seq(wh: RowWriter, seq: int) -> None:
    """Record ``seq`` as written (inside the transaction that wrote its rows)."""
    wh.execute("UPDATE realtime_intake SET seq = ?", [seq])


@dataclass(frozen=True)
class LoggedGroup:
    """One acknowledged group: its sequence number, processing time and requests; or
    another change of the state at ``now``: a writer tick (``tick``: due timers fired,
    expired memberships ended) or re-scored persons moved to their model segments
    (``scores``)."""

    seq: int
    now: datetime
    requests: list[IngestRequest]
    tick: bool = False
    scores: list[ModelScore] = field(default_factory=list)

    def encode(self) -> bytes:
        doc: dict[str, Any] = {
            "seq": self.seq,
            "now": self.now,
            "requests": [_request_doc(r) for r in self.requests],
        }
        if self.tick:
            doc["tick"] = True
        if self.scores:
            doc["scores"] = [
                [s.customer_id, s.segment_id, s.segment, s.distance, s.version] for s in self.scores
            ]
        return orjson.dumps(doc)

    @classmethod
    def decode(cls, payload: bytes) -> LoggedGroup:
        doc = orjson.loads(payload)
        return cls(
            doc["seq"],
            datetime.fromisoformat(doc["now"]),
            [_request_of(r) for r in doc["requests"]],
            doc.get("tick", False),
            [ModelScore(*fields) for fields in doc.get("scores", [])],
        )


class IntakeLog:
    """Two append-only files of :class:`LoggedGroup` records (see the module docstring).

    Groups go to the active file. :meth:`rotate` makes the other file active when it is
    empty, so a flush can write the groups logged so far while new ones go to the other
    file, and empty theirs afterwards (:meth:`clear_through`). The files are ``path``
    and ``path`` + ``.1``. Appending, rotating and clearing may run in different threads.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._files = (_LogFile(self.path), _LogFile(self.path.with_name(self.path.name + ".1")))
        self._lock = threading.Lock()
        # Go on in the file with the newest group (the other one is older or empty).
        self._active = 1 if self._files[1].last_seq > self._files[0].last_seq else 0

    @property
    def size(self) -> int:
        """Bytes in the log."""
        return sum(f.size for f in self._files)

    def append(self, group: LoggedGroup) -> None:
        """Write one record and sync it; on failure the log is cut back to where it was."""
        payload = group.encode()
        record = _HEADER.pack(len(payload), zlib.crc32(payload)) + payload
        with self._lock:
            self._files[self._active].append(record, group.seq)

    def rotate(self) -> None:
        """Log the next groups to the other file if it is empty (else go on in this one)."""
        with self._lock:
            if not self._files[1 - self._active].size:
                self._active = 1 - self._active

    def clear_through(self, seq: int) -> None:
        """Empty each file whose groups all have a sequence number up to ``seq`` (they are
        in the warehouse)."""
        with self._lock:
            for file in self._files:
                if file.size and file.last_seq <= seq:
                    file.truncate(0)

    def groups(self) -> list[LoggedGroup]:
        """The complete records of both files, oldest first."""
        with self._lock:
            return sorted((g for f in self._files for g in f.groups()), key=lambda g: g.seq)

    def close(self) -> None:
        for file in self._files:
            file.close()


class _LogFile:
    """One file of the log; a torn tail is cut off when it is opened."""

    def __init__(self, path: Path) -> None:
        self.path = path
        created = not path.exists()
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        if created:  # make the new directory entry durable too
            directory = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
        self.size = os.fstat(self._fd).st_size
        self.last_seq = max((g.seq for g in self.groups()), default=0)

    def append(self, record: bytes, seq: int) -> None:
        try:
            written = os.write(self._fd, record)
            if written != len(record):
                raise OSError(f"short write to {self.path}: {written} of {len(record)} bytes")
            os.fdatasync(self._fd)
        except OSError:
            os.ftruncate(self._fd, self.size)
            raise
        self.size += len(record)
        self.last_seq = max(self.last_seq, seq)

    def groups(self) -> list[LoggedGroup]:
        data = os.pread(self._fd, self.size, 0)
        groups: list[LoggedGroup] = []
        offset = 0
        while offset + _HEADER.size <= len(data):
            length, checksum = _HEADER.unpack_from(data, offset)
            payload = data[offset + _HEADER.size : offset + _HEADER.size + length]
            if len(payload) < length or zlib.crc32(payload) != checksum:
                break
            groups.append(LoggedGroup.decode(payload))
            offset += _HEADER.size + length
        if offset < len(data):
            self.truncate(offset)
        return groups

    def truncate(self, size: int) -> None:
        # Synced, so that cut-off bytes cannot come back in front of records appended later.
        os.ftruncate(self._fd, size)
        os.fsync(self._fd)
        self.size = size
        if not size:
            self.last_seq = 0

    def close(self) -> None:
        os.close(self._fd)


def _parse_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value is not None else None


def _request_doc(request: IngestRequest) -> dict[str, Any]:
    return {
        "source": request.source,
        "indices": request.indices,
        "events": [_event_doc(e) for e in request.events],
        "rejections": [
            [r.reason, r.detail, r.raw.decode("utf-8", "replace"), r.index, r.message_id]
            for r in request.rejections
        ],
    }


def _request_of(doc: dict[str, Any]) -> IngestRequest:
    return IngestRequest(
        [_event_of(e) for e in doc["events"]],
        [
            Rejection(reason, detail, raw.encode(), index, message_id)
            for reason, detail, raw, index, message_id in doc["rejections"]
        ],
        doc["source"],
        doc["indices"],
    )


def _event_doc(event: Event) -> list[Any]:
    # ``raw`` is left out: only rejections keep their bytes (for failed_events).
    return [
        event.message_id,
        event.type.value,
        event.timestamp,
        event.received_at,
        event.event,
        event.user_id,
        event.anonymous_id,
        event.original_timestamp,
        event.sent_at,
        event.properties,
        event.traits,
        event.context,
        event.previous_id,
        event.group_id,
        event.future,
    ]


def _event_of(fields: Sequence[Any]) -> Event:
    (
        message_id,
        type_,
        timestamp,
        received_at,
        name,
        user_id,
        anonymous_id,
        original_timestamp,
        sent_at,
        properties,
        traits,
        context,
        previous_id,
        group_id,
        future,
    ) = fields
    return Event(
        message_id,
        EventType(type_),
        datetime.fromisoformat(timestamp),
        datetime.fromisoformat(received_at),
        event=name,
        user_id=user_id,
        anonymous_id=anonymous_id,
        original_timestamp=_parse_time(original_timestamp),
        sent_at=_parse_time(sent_at),
        properties=properties,
        traits=traits,
        context=context,
        previous_id=previous_id,
        group_id=group_id,
        future=future,
    )
