"""Reading one input (file or data frame) into a staging table of raw text columns.

Every staged row keeps its position in the input (``_ordinal``, 0-based among the
rows that could be read) so quarantined rows can name their line. Lines that could
not be parsed at all are returned as :class:`MalformedLine` records.
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import sqlglot.expressions as exp

from segmint.config import SourceFormat
from segmint.engine import Warehouse
from segmint.engine.dialect import quote
from segmint.errors import DataValidationError, EngineError

# Segment's camelCase field names for the canonical snake_case event columns.
SEGMENT_FIELD_NAMES = {
    "message_id": "messageId",
    "user_id": "userId",
    "anonymous_id": "anonymousId",
    "sent_at": "sentAt",
    "received_at": "receivedAt",
}

_JSON_NESTED = {"properties", "traits", "context"}


@dataclass(frozen=True)
class MalformedLine:
    line: int
    raw: str
    message: str


@dataclass(frozen=True)
class StagedInput:
    """A staged input: ``table`` has one column per source column and ``_ordinal``,
    the row's 0-based position among the input's readable rows."""

    table: str
    file: str
    columns: list[str]
    rows: int
    malformed: list[MalformedLine]
    first_data_line: int  # line of ordinal 0 in the file (2 for CSV with header)
    line_offsets: list[int]  # sorted "good rows before each malformed line" (CSV correction)

    def line_of(self, ordinal: int) -> int:
        """The file line of the row with the given ordinal."""
        shift = 0
        for good_before in self.line_offsets:
            if good_before <= ordinal:
                shift += 1
            else:
                break
        return ordinal + self.first_data_line + shift


def fingerprint_file(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def fingerprint_frame(table: pa.Table) -> str:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()


_counter = itertools.count()

# row_number() OVER () runs as DuckDB's order-preserving streaming window.
ORDINAL = "row_number() OVER () - 1 AS _ordinal"


def _staging_name(prefix: str) -> str:
    return f"_stg_{prefix}_{next(_counter)}"


def stage_csv(wh: Warehouse, path: Path, *, delimiter: str = ",") -> StagedInput:
    """Stage a CSV file; lines with the wrong number of fields become malformed lines."""
    _check_not_empty(path)
    table = _staging_name("csv")
    rejects, scans = f"{table}_rej", f"{table}_scan"
    try:
        wh.execute(
            f"CREATE TEMP TABLE {table} AS SELECT *, {ORDINAL} FROM read_csv(?, "
            f"all_varchar = true, "
            f"header = true, delim = ?, quote = '\"', escape = '\"', auto_detect = true, "
            f"strict_mode = true, null_padding = false, store_rejects = true, "
            f"rejects_table = '{rejects}', rejects_scan = '{scans}')",
            [str(path), delimiter],
        )
    except EngineError as e:
        raise DataValidationError(f"cannot read CSV: {_first_line(e)}", where=str(path)) from e
    rejected = wh.fetchall(
        f"SELECT line, error_type, csv_line, error_message FROM {rejects} ORDER BY line"
    )
    wh.execute(f"DROP TABLE IF EXISTS {rejects}")
    wh.execute(f"DROP TABLE IF EXISTS {scans}")
    for line, error_type, _raw, message in rejected:
        if error_type == "INVALID ENCODING" or "unicode" in str(message).lower():
            wh.execute(f"DROP TABLE {table}")
            raise DataValidationError(
                "undecodable bytes: the file is not valid UTF-8", where=f"{path}:{line}"
            )
    columns = [c for c in wh.columns(table) if c != "_ordinal"]
    rows = int(wh.scalar(f"SELECT count(*) FROM {table}"))
    # Each malformed line shifts the file line of the good rows after it by one.
    seen: dict[int, MalformedLine] = {}
    for line, _type, raw, message in rejected:
        seen.setdefault(int(line), MalformedLine(int(line), str(raw), str(message)))
    malformed = sorted(seen.values(), key=lambda m: m.line)
    offsets = [m.line - 2 - index for index, m in enumerate(malformed)]
    if rows == 0 and not malformed:
        wh.execute(f"DROP TABLE {table}")
        raise DataValidationError("the file has a header but no data rows", where=str(path))
    return StagedInput(table, str(path), columns, rows, malformed, 2, offsets)


def stage_parquet(wh: Warehouse, path: Path) -> StagedInput:
    _check_not_empty(path)
    table = _staging_name("pq")
    try:
        wh.execute(
            f"CREATE TEMP TABLE {table} AS SELECT *, {ORDINAL} FROM read_parquet(?)", [str(path)]
        )
    except EngineError as e:
        raise DataValidationError(f"cannot read Parquet: {_first_line(e)}", where=str(path)) from e
    columns = [c for c in wh.columns(table) if c != "_ordinal"]
    rows = int(wh.scalar(f"SELECT count(*) FROM {table}"))
    if rows == 0:
        wh.execute(f"DROP TABLE {table}")
        raise DataValidationError("the file has no rows", where=str(path))
    return StagedInput(table, str(path), columns, rows, [], 1, [])


def stage_jsonl(wh: Warehouse, path: Path, fields: list[str]) -> StagedInput:
    """Stage JSON Lines: one object per line; ``fields`` are the keys to extract."""
    _check_not_empty(path)
    lines = _staging_name("jl_lines")
    try:
        wh.execute(
            f"CREATE TEMP TABLE {lines} AS SELECT line, {ORDINAL} FROM read_csv(?, "
            f"columns = {{'line': 'VARCHAR'}}, delim = e'\\x01', quote = '', escape = '', "
            f"header = false, auto_detect = false, strict_mode = false)",
            [str(path)],
        )
    except EngineError as e:
        message = _first_line(e)
        if "unicode" in message.lower() or "utf" in message.lower():
            raise DataValidationError(
                "undecodable bytes: the file is not valid UTF-8", where=str(path)
            ) from e
        raise DataValidationError(f"cannot read JSON Lines: {message}", where=str(path)) from e
    bad = wh.fetchall(
        f"SELECT _ordinal + 1, line FROM {lines} WHERE line IS NOT NULL AND NOT coalesce("
        f"CASE WHEN json_valid(line) THEN json_type(line::JSON) = 'OBJECT' END, false) "
        f"ORDER BY _ordinal"
    )
    malformed = [MalformedLine(int(n), str(raw), "not a JSON object") for n, raw in bad]
    table = _staging_name("jl")
    # One JSON parse per line for all fields: json_extract(_string) with a list of paths.
    # Paths are SQL string literals escaped by SQLGlot (they come from the project file).
    texts = [f for f in fields if f not in _JSON_NESTED]
    nested = [f for f in fields if f in _JSON_NESTED]
    extract = [f"_t[{i + 1}] AS {quote(f)}" for i, f in enumerate(texts)]
    extract += [f"CAST(_n[{i + 1}] AS VARCHAR) AS {quote(f)}" for i, f in enumerate(nested)]
    lists = ""
    if texts:
        lists += f", json_extract_string(line, {_path_list(texts)}) AS _t"
    if nested:
        lists += f", json_extract(line, {_path_list(nested)}) AS _n"
    wh.execute(
        f"CREATE TEMP TABLE {table} AS SELECT _ordinal"
        f"{', ' if extract else ''}{', '.join(extract)} FROM (SELECT _ordinal{lists} "
        f"FROM {lines} WHERE line IS NOT NULL AND CASE WHEN json_valid(line) THEN "
        f"json_type(line) = 'OBJECT' ELSE false END)"
    )
    wh.execute(f"DROP TABLE {lines}")
    rows = int(wh.scalar(f"SELECT count(*) FROM {table}"))
    if rows == 0 and not malformed:
        wh.execute(f"DROP TABLE {table}")
        raise DataValidationError("the file has no JSON lines", where=str(path))
    # JSONL ordinals are the physical line index, so no correction is needed.
    return StagedInput(table, str(path), list(fields), rows, malformed, 1, [])


def _path_list(fields: list[str]) -> str:
    paths = [exp.Literal.string(f"$.{json_key(f)}").sql(dialect="duckdb") for f in fields]
    return f"[{', '.join(paths)}]"


def json_key(field: str) -> str:
    """JSON key of a canonical field in Segment-shaped input (``message_id`` -> ``messageId``)."""
    return SEGMENT_FIELD_NAMES.get(field, field)


def stage_frame(wh: Warehouse, data: pa.Table, name: str) -> StagedInput:
    if data.num_rows == 0:
        raise DataValidationError("the data frame has no rows", where=f"frame:{name}")
    table = _staging_name("frame")
    view = f"{table}_view"
    wh.register(view, data)
    try:
        wh.execute(f"CREATE TEMP TABLE {table} AS SELECT *, {ORDINAL} FROM {view}")
    finally:
        wh.unregister(view)
    columns = list(data.column_names)
    return StagedInput(table, f"frame:{name}", columns, data.num_rows, [], 1, [])


def read_file(
    wh: Warehouse, path: Path, fmt: SourceFormat, *, delimiter: str, jsonl_fields: list[str]
) -> StagedInput:
    if fmt is SourceFormat.csv:
        return stage_csv(wh, path, delimiter=delimiter)
    if fmt is SourceFormat.parquet:
        return stage_parquet(wh, path)
    return stage_jsonl(wh, path, jsonl_fields)


def _check_not_empty(path: Path) -> None:
    if path.stat().st_size == 0:
        raise DataValidationError("the file is empty", where=str(path))


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
