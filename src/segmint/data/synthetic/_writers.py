"""Writers that append chunks to CSV, JSON Lines or Parquet files.

Text writers can add malformed lines (see :class:`DirtRates.malformed_lines`):
in CSV a copy of a real line with fields cut off or one field too many; in JSON
Lines a copy of a real line cut short, which no JSON parser accepts. Broken
lines are extra lines: the clean row they were copied from is still there.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from segmint.data.synthetic import _text

Logical = Literal["string", "int", "float", "bool", "ts", "ts_ms", "date"]

_PARQUET_TYPES: dict[str, pa.DataType] = {
    "string": pa.string(),
    "int": pa.int64(),
    "float": pa.float64(),
    "bool": pa.bool_(),
    "ts": pa.timestamp("s", tz="UTC"),
    "ts_ms": pa.timestamp("ms", tz="UTC"),
    "date": pa.date32(),
}


@dataclass(frozen=True)
class FileSpec:
    """A file's columns and their logical types (the order is the file's)."""

    stem: str
    columns: tuple[tuple[str, Logical], ...]
    dictionary: tuple[str, ...] = ()  # low-cardinality columns, dictionary-encoded in Parquet

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.columns]

    def parquet_schema(self) -> pa.Schema:
        return pa.schema([pa.field(name, _PARQUET_TYPES[kind]) for name, kind in self.columns])


def _numeric(values: np.ndarray | pa.Array, kind: Logical) -> pa.Array:
    if isinstance(values, pa.Array):
        return values
    if kind == "ts":
        return pa.array(np.asarray(values, dtype="datetime64[s]"), pa.timestamp("s", tz="UTC"))
    if kind == "ts_ms":
        return pa.array(np.asarray(values, dtype="datetime64[ms]"), pa.timestamp("ms", tz="UTC"))
    if kind == "date":
        return pa.array(np.asarray(values, dtype="datetime64[D]"), pa.date32())
    return pa.array(values, _PARQUET_TYPES[kind])


def to_table(spec: FileSpec, data: dict[str, np.ndarray | pa.Array], fmt: str) -> pa.Table:
    """Build one chunk of a file from logical columns.

    Times are given as integers (seconds, or milliseconds for ``ts_ms``) and
    dates as days since the epoch, or as Arrow arrays already typed. CSV gets
    ``YYYY-MM-DD HH:MM:SS`` and ``YYYY-MM-DD`` text; Parquet gets typed columns.
    """
    arrays: list[pa.Array] = []
    for name, kind in spec.columns:
        values = data[name]
        if fmt == "csv" and kind in ("ts", "date") and not isinstance(values, pa.Array):
            arrays.append(_text.sql_timestamps(values) if kind == "ts" else _text.dates(values))
        else:
            arrays.append(_numeric(values, kind))
    table = pa.Table.from_arrays(arrays, names=spec.names)
    return table.cast(spec.parquet_schema()) if fmt == "parquet" else table


class Sink(ABC):
    """Append chunks to one file; counts rows and injected malformed lines."""

    path: Path
    rows: int
    malformed: int

    @abstractmethod
    def write(self, table: pa.Table, rng: np.random.Generator, malformed_rate: float) -> None:
        """Append a chunk; text sinks add broken lines at ``malformed_rate``."""

    @abstractmethod
    def close(self) -> None:
        """Flush and close the file."""


def _line_bounds(data: memoryview) -> np.ndarray:
    """Start offsets of every line and the end: ``bounds[i]:bounds[i + 1]`` is line i."""
    newlines = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == ord("\n"))
    return np.concatenate([[0], newlines + 1]).astype(np.int64)


def _write_with_broken_lines(
    out: BinaryIO,
    data: memoryview,
    rng: np.random.Generator,
    rate: float,
    breaker: _Breaker,
) -> tuple[int, int]:
    """Write text lines, adding broken copies of some after them; return (lines, broken)."""
    bounds = _line_bounds(data)
    lines = len(bounds) - 1
    chosen = np.flatnonzero(rng.random(lines) < rate) if rate > 0 else np.array([], np.int64)
    position = 0
    for line in chosen:
        end = int(bounds[line + 1])
        out.write(data[position:end])
        original = bytes(data[int(bounds[line]) : end - 1])
        out.write(breaker(original, rng) + b"\n")
        position = end
    out.write(data[position:])
    return lines + len(chosen), len(chosen)


class _Breaker(ABC):
    @abstractmethod
    def __call__(self, line: bytes, rng: np.random.Generator) -> bytes:
        """A broken copy of ``line`` (without its newline)."""


class _CsvBreaker(_Breaker):
    """Wrong number of fields: the first few fields only, or one field too many."""

    def __init__(self, n_columns: int) -> None:
        self.n_columns = n_columns

    def __call__(self, line: bytes, rng: np.random.Generator) -> bytes:
        fields = line.split(b",")
        if rng.random() < 0.7 and self.n_columns > 1:
            keep = int(rng.integers(1, self.n_columns))
            return b",".join(fields[:keep])
        return line + b',"#"'


class _JsonBreaker(_Breaker):
    """A strict prefix of a JSON object: never valid JSON."""

    def __call__(self, line: bytes, rng: np.random.Generator) -> bytes:
        cut = int(rng.integers(1, max(len(line) - 1, 2)))
        return line[:cut]


class CsvSink(Sink):
    """CSV with a header; strings quoted, nulls as empty unquoted fields."""

    def __init__(self, path: Path, spec: FileSpec) -> None:
        self.path = path
        self.spec = spec
        self.rows = 0
        self.malformed = 0
        self._out = path.open("wb")
        self._out.write((",".join(f'"{name}"' for name in spec.names) + "\n").encode())
        self._breaker = _CsvBreaker(len(spec.names))

    def write(self, table: pa.Table, rng: np.random.Generator, malformed_rate: float) -> None:
        buffer = pa.BufferOutputStream()
        pa_csv.write_csv(table, buffer, pa_csv.WriteOptions(include_header=False))
        data = memoryview(buffer.getvalue())
        lines, broken = _write_with_broken_lines(
            self._out, data, rng, malformed_rate, self._breaker
        )
        self.rows += lines
        self.malformed += broken

    def close(self) -> None:
        self._out.close()


class JsonLinesSink(Sink):
    """One JSON object per line; chunks are one-column tables of lines ending in ``\\n``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows = 0
        self.malformed = 0
        self._out = path.open("wb")
        self._breaker = _JsonBreaker()

    def write(self, table: pa.Table, rng: np.random.Generator, malformed_rate: float) -> None:
        text = table.column(0).combine_chunks()
        if len(text) == 0:
            return
        offsets = np.frombuffer(text.buffers()[1], dtype=np.int32)[
            text.offset : text.offset + len(text) + 1
        ]
        data = memoryview(text.buffers()[2])[int(offsets[0]) : int(offsets[-1])]
        written, broken = _write_with_broken_lines(
            self._out, data, rng, malformed_rate, self._breaker
        )
        self.rows += written
        self.malformed += broken

    def close(self) -> None:
        self._out.close()


class ParquetSink(Sink):
    """Parquet, one row group per chunk, zstd-compressed."""

    def __init__(self, path: Path, spec: FileSpec) -> None:
        self.path = path
        self.rows = 0
        self.malformed = 0
        self._writer = pq.ParquetWriter(
            path,
            spec.parquet_schema(),
            compression="zstd",
            use_dictionary=list(spec.dictionary),
        )

    def write(self, table: pa.Table, rng: np.random.Generator, malformed_rate: float) -> None:
        self._writer.write_table(table)
        self.rows += table.num_rows

    def close(self) -> None:
        self._writer.close()
