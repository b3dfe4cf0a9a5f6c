"""Reading one input (file or data frame) into a staged relation of source columns.

Every staged row keeps its position in the input (``_ordinal``, 0-based among the
rows that could be read) so quarantined rows can name their line. Lines that could
not be parsed at all are returned as :class:`MalformedLine` records.

The staged relation is read once by validation, so it is not copied when it need
not be: CSV files are read in parallel into one temporary table (its row id is the
ordinal), Parquet files and data frames are scanned where they are, and JSON Lines
files are streamed through a view that parses each line once. A streamed input can
be scanned only once; its row count and malformed lines are known after that scan
(see :func:`finish_staging`).
"""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
import hashlib
import itertools
import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import sqlglot.expressions as exp

from segmint.config import SourceFormat
from segmint.engine import Warehouse
from segmint.engine.dialect import quote
from segmint.errors import DataValidationError, EngineError

logger = logging.getLogger(__name__)

# Segment's camelCase field names for the canonical snake_case event columns.
SEGMENT_FIELD_NAMES = {
    "message_id": "messageId",
    "user_id": "userId",
    "anonymous_id": "anonymousId",
    "sent_at": "sentAt",
    "received_at": "receivedAt",
}

_JSON_NESTED = {"properties", "traits", "context"}

#: Column of a streamed staged relation holding the raw text of a line that is not a
#: JSON object (NULL for good lines).
MALFORMED = "_malformed"

#: Bytes read from a JSON Lines file per Arrow batch.
BLOCK_SIZE = 16 << 20

_UTF8_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class MalformedLine:
    line: int
    raw: str
    message: str


#: Columns every staged relation has besides the source columns.
_POSITION = ("_ordinal", "_line")

#: Up to this many malformed lines in a CSV file, the file line of each row is found
#: with a binary search in SQL; beyond, with an ASOF join.
LINE_SEARCH_LIMIT = 1024


@dataclass(frozen=True)
class StagedInput:
    """A staged input: ``table`` has one column per source column, ``_ordinal``, the
    row's 0-based position among the input's readable rows, and ``_line``, its line
    (CSV / JSON Lines, header is line 1) or row (Parquet, data frames) in the input.

    ``column_types`` gives the engine type of source columns that arrive typed
    (Parquet, data frames, nested JSON); the others are text. ``single_scan`` marks a
    streamed relation that can be read only once. With ``malformed_in_rows`` (JSON
    Lines) the rows are unknown (-1) and the malformed lines are rows with a non-null
    ``_malformed`` column until :func:`finish_staging` has run over the validated table.
    """

    table: str
    file: str
    columns: list[str]
    rows: int
    malformed: list[MalformedLine]
    first_data_line: int  # line of ordinal 0 in the file (2 for CSV with header)
    line_offsets: list[int]  # sorted "good rows before each malformed line" (CSV correction)
    column_types: dict[str, str] = field(default_factory=dict)
    single_scan: bool = False
    malformed_in_rows: bool = False  # malformed lines are rows with a non-null _malformed
    temp_tables: tuple[str, ...] = ()  # dropped when the load is done
    temp_views: tuple[str, ...] = ()
    registered: tuple[str, ...] = ()  # Arrow objects registered on the connection
    read_errors: list[Exception] = field(default_factory=list)  # filled while streaming

    def line_of(self, ordinal: int) -> int:
        """The file line of the row with the given ordinal."""
        shift = 0
        for good_before in self.line_offsets:
            if good_before <= ordinal:
                shift += 1
            else:
                break
        return ordinal + self.first_data_line + shift


#: Bytes hashed per step when fingerprinting a file.
FINGERPRINT_CHUNK = 16 << 20


def fingerprint_file(path: Path) -> str:
    """SHA-256 of a file's bytes (hex).

    The file is read and hashed in large chunks: both steps release the GIL, and a
    thread hashing a big file needs it only once per chunk, so it keeps its pace while
    other threads run Python (``hashlib.file_digest`` takes it every 256 KiB).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "x.csv"
    >>> _ = path.write_bytes(b"abc")
    >>> fingerprint_file(path)[:16]
    'ba7816bf8f01cfea'
    """
    digest = hashlib.sha256()
    buffer = bytearray(FINGERPRINT_CHUNK)
    view = memoryview(buffer)
    with path.open("rb", buffering=0) as handle:
        while size := handle.readinto(buffer):
            digest.update(view[:size])
    return digest.hexdigest()


def fingerprint_frame(table: pa.Table) -> str:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()


_counter = itertools.count()


def _staging_name(prefix: str) -> str:
    return f"_stg_{prefix}_{next(_counter)}"


def _literal(text: str) -> str:
    """A SQL string literal escaped by SQLGlot (for views, which take no parameters)."""
    return str(exp.Literal.string(text).sql(dialect="duckdb"))


def stage_csv(wh: Warehouse, path: Path, *, delimiter: str = ",") -> StagedInput:
    """Stage a CSV file; lines with the wrong number of fields become malformed lines."""
    _check_not_empty(path)
    base = _staging_name("csv")
    rejects, scans = f"{base}_rej", f"{base}_scan"
    # A parallel, order-preserving read: the table's row ids are the rows' ordinals.
    ordered = bool(wh.scalar("SELECT current_setting('preserve_insertion_order')"))
    if not ordered:
        wh.execute("SET preserve_insertion_order = true")
    try:
        wh.execute(
            f"CREATE TEMP TABLE {base} AS SELECT * FROM read_csv(?, "
            f"all_varchar = true, "
            f"header = true, delim = ?, quote = '\"', escape = '\"', auto_detect = true, "
            f"strict_mode = true, null_padding = false, store_rejects = true, "
            f"rejects_table = '{rejects}', rejects_scan = '{scans}')",
            [str(path), delimiter],
        )
    except EngineError as e:
        # The failed statement ends the transaction; whoever changed the setting restores it.
        raise DataValidationError(f"cannot read CSV: {_first_line(e)}", where=str(path)) from e
    if not ordered:
        wh.execute("SET preserve_insertion_order = false")
    rejected = wh.fetchall(
        f"SELECT line, error_type, csv_line, error_message FROM {rejects} ORDER BY line"
    )
    wh.execute(f"DROP TABLE IF EXISTS {rejects}")
    wh.execute(f"DROP TABLE IF EXISTS {scans}")
    for line, error_type, _raw, message in rejected:
        if error_type == "INVALID ENCODING" or "unicode" in str(message).lower():
            wh.execute(f"DROP TABLE {base}")
            raise DataValidationError(
                "undecodable bytes: the file is not valid UTF-8", where=f"{path}:{line}"
            )
    columns = wh.columns(base)
    rows = int(wh.scalar(f"SELECT count(*) FROM {base}"))
    # Each malformed line shifts the file line of the good rows after it by one.
    seen: dict[int, MalformedLine] = {}
    for line, _type, raw, message in rejected:
        seen.setdefault(int(line), MalformedLine(int(line), str(raw), str(message)))
    malformed = sorted(seen.values(), key=lambda m: m.line)
    offsets = [m.line - 2 - index for index, m in enumerate(malformed)]
    if rows == 0 and not malformed:
        wh.execute(f"DROP TABLE {base}")
        raise DataValidationError("the file has a header but no data rows", where=str(path))
    # Row ids count up from a start that depends on the transaction state.
    first = int(wh.scalar(f"SELECT coalesce(min(rowid), 0) FROM {base}"))
    ordinal = f"(b.rowid - {first})"
    view = f"{base}_v"
    registered: tuple[str, ...] = ()
    if len(offsets) <= LINE_SEARCH_LIMIT:
        line = line_expression(ordinal, 2, offsets)
        join = ""
    else:
        registered = (f"{base}_offsets",)
        wh.register(registered[0], _shift_table(offsets))
        line = f"({ordinal} + 2 + coalesce(o.shift, 0))"
        join = f"ASOF LEFT JOIN {registered[0]} o ON {ordinal} >= o.good_before"
    wh.execute(
        f"CREATE TEMP VIEW {view} AS SELECT {ordinal} AS _ordinal, {line} AS _line, b.* "
        f"FROM {base} b {join}"
    )
    return StagedInput(
        view,
        str(path),
        columns,
        rows,
        malformed,
        2,
        offsets,
        temp_tables=(base,),
        temp_views=(view,),
        registered=registered,
    )


def line_expression(ordinal: str, first_data_line: int, offsets: Sequence[int]) -> str:
    """SQL giving the file line of the row whose ordinal is the SQL ``ordinal``.

    ``offsets`` are sorted "good rows before each malformed line": every malformed
    line before a row moves it down one line. Their number is found by a binary
    search written as nested ``CASE`` (a handful of comparisons per row, no join).

    Examples
    --------
    >>> line_expression("o", 2, [])
    '(o + 2 + 0)'
    >>> line_expression("o", 2, [5])
    '(o + 2 + CASE WHEN o >= 5 THEN 1 ELSE 0 END)'
    """

    def shift(low: int, high: int) -> str:
        # The count of offsets <= ordinal lies in [low, high].
        if low == high:
            return str(low)
        middle = (low + high) // 2
        return (
            f"CASE WHEN {ordinal} >= {int(offsets[middle])} THEN {shift(middle + 1, high)} "
            f"ELSE {shift(low, middle)} END"
        )

    return f"({ordinal} + {int(first_data_line)} + {shift(0, len(offsets))})"


def _shift_table(offsets: Sequence[int]) -> pa.Table:
    """Distinct offsets with the number of offsets at or below each (for an ASOF join)."""
    values = sorted(set(offsets))
    shifts = [bisect.bisect_right(offsets, v) for v in values]
    return pa.table(
        {"good_before": pa.array(values, pa.int64()), "shift": pa.array(shifts, pa.int64())}
    )


def stage_parquet(wh: Warehouse, path: Path) -> StagedInput:
    """Stage a Parquet file as a view: its rows keep their types and are not copied."""
    _check_not_empty(path)
    view = _staging_name("pq")
    try:
        wh.execute(
            f"CREATE TEMP VIEW {view} AS SELECT * EXCLUDE (file_row_number), "
            f"file_row_number AS _ordinal, file_row_number + 1 AS _line "
            f"FROM read_parquet({_literal(str(path))}, file_row_number = true)"
        )
        types = {c: t for c, t in _column_types(wh, view).items() if c not in _POSITION}
        rows = int(wh.scalar(f"SELECT count(*) FROM {view}"))
    except EngineError as e:
        wh.execute(f"DROP VIEW IF EXISTS {view}")
        raise DataValidationError(f"cannot read Parquet: {_first_line(e)}", where=str(path)) from e
    if rows == 0:
        wh.execute(f"DROP VIEW {view}")
        raise DataValidationError("the file has no rows", where=str(path))
    columns = list(types)
    return StagedInput(
        view, str(path), columns, rows, [], 1, [], column_types=types, temp_views=(view,)
    )


def stage_jsonl(
    wh: Warehouse, path: Path, fields: list[str], *, replayable: bool = False
) -> StagedInput:
    """Stage JSON Lines: one object per line; ``fields`` are the keys to extract.

    The file is streamed in blocks (no whole file in memory) and each line is parsed
    once. Without ``replayable`` the staged relation is a view that can be scanned
    once; with it, the parsed lines are copied into a temporary table that can be
    scanned again (its malformed lines are taken out and its rows counted at once).

    Canonical fields are read from their Segment keys (``message_id`` from
    ``messageId``, see :func:`json_key`); ``properties``, ``traits`` and ``context``
    stay JSON. Lines that are not JSON objects are kept in ``_malformed`` and taken
    out by :func:`finish_staging`; empty lines are skipped.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "events.jsonl"
    >>> _ = path.write_text('{"messageId": "m1", "properties": {"a": 1}}\\n[2]\\n')
    >>> wh = Warehouse(":memory:")
    >>> staged = stage_jsonl(wh, path, ["message_id", "properties"])
    >>> wh.fetchall(f"SELECT _line, _malformed, message_id, properties FROM {staged.table} "
    ...             "ORDER BY _line")
    [(1, None, 'm1', '{"a":1}'), (2, '[2]', None, None)]
    """
    _check_not_empty(path)
    lines = LineBatches(path)
    stream = _staging_name("jl_lines")
    wh.register(stream, pa.RecordBatchReader.from_batches(LineBatches.SCHEMA, lines.batches()))
    view = _staging_name("jl")
    wh.execute(f"CREATE TEMP VIEW {view} AS {_parse_lines_sql(stream, fields)}")
    nested = {f: "JSON" for f in fields if f in _JSON_NESTED}
    staged = StagedInput(
        view,
        str(path),
        list(fields),
        -1,
        [],
        1,
        [],
        column_types=nested,
        single_scan=True,
        malformed_in_rows=True,
        temp_views=(view,),
        registered=(stream,),
        read_errors=lines.errors,
    )
    if not replayable:
        return staged
    table = f"{view}_t"
    try:
        wh.execute(f"CREATE TEMP TABLE {table} AS SELECT * FROM {view}")
    except EngineError as e:
        forget_staging(wh, staged)
        raise read_error(staged, e) from e
    drop_staging(wh, staged)
    copied = dataclasses.replace(
        staged, table=table, single_scan=False, temp_tables=(table,), temp_views=(), registered=()
    )
    try:
        return finish_staging(wh, copied, table)
    except BaseException:
        drop_staging(wh, copied)
        raise


def _parse_lines_sql(stream: str, fields: list[str]) -> str:
    """SQL parsing each line of ``stream`` once into the requested fields.

    A line is good when it is valid JSON and an object; the fields of a good line are
    read with one ``from_json`` call (keys absent from the line give NULL, nested
    values stay JSON). Other lines keep their raw text in ``_malformed``.

    A line shaped like an object (``{`` first, ``}`` last: nearly every line) is
    parsed once, the parse itself telling whether it is valid JSON; only other lines
    are checked apart (valid JSON? an object?) before being read.
    """
    nested = {json_key(f) for f in fields if f in _JSON_NESTED}
    keys = dict.fromkeys(json_key(f) for f in fields)
    spec = _literal(json.dumps({k: "JSON" if k in nested else "VARCHAR" for k in keys}))
    select = ", ".join(f"_j.{quote(json_key(f))} AS {quote(f)}" for f in fields)
    ends = " OR ".join(f"suffix(line, e'{end}')" for end in ("}", "}\\n", "}\\r\\n"))
    shaped = f"prefix(line, '{{') AND ({ends})"
    # CASE (not AND / OR) so each test only runs on the lines the previous one let through.
    good = (
        "CASE WHEN _parsed IS NOT NULL THEN true WHEN _shaped THEN false "
        "WHEN NOT json_valid(line) THEN false ELSE json_type(line) = 'OBJECT' END"
    )
    return (
        f"SELECT _ordinal, _ordinal + 1 AS _line, "
        f"CASE WHEN NOT _ok THEN rtrim(line, e'\\r\\n') END AS {MALFORMED}"
        f"{', ' if select else ''}{select} FROM (SELECT _ordinal, line, _ok, "
        f"CASE WHEN _parsed IS NOT NULL THEN _parsed WHEN _ok THEN from_json(line, {spec}) "
        f"END AS _j FROM (SELECT _ordinal, line, _parsed, {good} AS _ok FROM (SELECT _ordinal, "
        f"line, _shaped, CASE WHEN _shaped THEN try(from_json(line, {spec})) END AS _parsed "
        f"FROM (SELECT _ordinal, line, {shaped} AS _shaped FROM {stream} "
        f"WHERE line IS NOT NULL))))"
    )


class LineBatches:
    """Split a text file into Arrow batches of ``(_ordinal, line)``, block by block.

    Lines are cut with numpy over the raw bytes and become a string array over the
    same buffer (no Python object per line). ``_ordinal`` is the 0-based physical
    line index; empty lines are NULL. Each line keeps its line terminator. Bytes that
    are not UTF-8 stop the stream with a :class:`DataValidationError`, which is also
    kept in ``errors`` (the engine reports the failure in its own words).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "x.jsonl"
    >>> _ = path.write_text('{"a": 1}\\n\\n[2]')
    >>> reader = LineBatches(path)
    >>> pa.Table.from_batches(reader.batches(), LineBatches.SCHEMA).to_pydict()
    {'_ordinal': [0, 1, 2], 'line': ['{"a": 1}\\n', None, '[2]']}
    """

    SCHEMA = pa.schema([("_ordinal", pa.int64()), ("line", pa.large_string())])

    def __init__(self, path: Path, block_size: int = BLOCK_SIZE) -> None:
        self.path = path
        self.block_size = block_size
        self.errors: list[Exception] = []

    def batches(self) -> Iterator[pa.RecordBatch]:
        ordinal = 0
        pending: list[bytes] = []
        with self.path.open("rb") as handle:
            first = True
            while block := handle.read(self.block_size):
                if first and block.startswith(_UTF8_BOM):
                    block = block[len(_UTF8_BOM) :]
                first = False
                cut = block.rfind(b"\n") + 1
                if cut == 0:
                    pending.append(block)
                    continue
                # The block's complete lines, without a copy unless a line spans blocks.
                data = b"".join([*pending, block[:cut]]) if pending else memoryview(block)[:cut]
                pending = [block[cut:]] if cut < len(block) else []
                batch = self._batch(data, ordinal)
                ordinal += batch.num_rows
                yield batch
            if pending:
                yield self._batch(b"".join(pending), ordinal)

    def _batch(self, data: bytes | memoryview, ordinal: int) -> pa.RecordBatch:
        raw = np.frombuffer(data, dtype=np.uint8)
        ends = np.flatnonzero(raw == 10)
        if not len(ends) or ends[-1] != len(raw) - 1:
            ends = np.append(ends, len(raw))  # the last line has no terminator
        n = len(ends)
        offsets = np.empty(n + 1, dtype=np.int64)
        offsets[0] = 0
        np.minimum(ends + 1, len(raw), out=offsets[1:])
        starts = offsets[:-1]
        content_end = ends - ((ends > starts) & (raw[np.maximum(ends - 1, 0)] == 13))
        empty = content_end == starts
        lines = pa.LargeStringArray.from_buffers(
            n,
            pa.py_buffer(offsets),
            pa.py_buffer(data),
            pa.py_buffer(np.packbits(~empty, bitorder="little")),
            int(empty.sum()),
        )
        try:
            lines.validate(full=True)
        except pa.ArrowInvalid as e:
            error = DataValidationError(
                "undecodable bytes: the file is not valid UTF-8", where=str(self.path)
            )
            self.errors.append(error)
            raise error from e
        positions = np.arange(ordinal, ordinal + n, dtype=np.int64)
        ordinals = pa.Array.from_buffers(pa.int64(), n, [None, pa.py_buffer(positions)])
        return pa.RecordBatch.from_arrays([ordinals, lines], schema=self.SCHEMA)


def read_error(staged: StagedInput, error: EngineError) -> Exception:
    """The error to raise when scanning ``staged`` failed: the reader's own, if any."""
    if staged.read_errors:
        return staged.read_errors[0]
    return error


def json_key(field: str) -> str:
    """JSON key of a canonical field in Segment-shaped input (``message_id`` -> ``messageId``)."""
    return SEGMENT_FIELD_NAMES.get(field, field)


def stage_frame(wh: Warehouse, data: pa.Table, name: str) -> StagedInput:
    """Stage an Arrow table: registered with an ordinal column, not copied."""
    if data.num_rows == 0:
        raise DataValidationError("the data frame has no rows", where=f"frame:{name}")
    view = _staging_name("frame")
    columns = list(data.column_names)
    ordinals = np.arange(data.num_rows, dtype=np.int64)
    positions = data.append_column("_ordinal", pa.array(ordinals))
    wh.register(view, positions.append_column("_line", pa.array(ordinals + 1)))
    types = {c: t for c, t in _column_types(wh, view).items() if c not in _POSITION}
    return StagedInput(
        view,
        f"frame:{name}",
        columns,
        data.num_rows,
        [],
        1,
        [],
        column_types=types,
        registered=(view,),
    )


def read_file(
    wh: Warehouse,
    path: Path,
    fmt: SourceFormat,
    *,
    delimiter: str,
    jsonl_fields: list[str],
    replayable: bool = False,
) -> StagedInput:
    """Stage one file; ``replayable`` asks for a relation that can be scanned twice."""
    if fmt is SourceFormat.csv:
        return stage_csv(wh, path, delimiter=delimiter)
    if fmt is SourceFormat.parquet:
        return stage_parquet(wh, path)
    return stage_jsonl(wh, path, jsonl_fields, replayable=replayable)


def finish_staging(wh: Warehouse, staged: StagedInput, checked: str) -> StagedInput:
    """Complete a staged input once ``checked`` (its validated rows) exists.

    For JSON Lines, the lines that are not JSON objects are taken out of ``checked``
    into ``malformed`` and the rows are counted; an input with no lines at all is an
    error. Other inputs are returned unchanged.

    Raises
    ------
    DataValidationError
        The JSON Lines file has no lines (only empty ones).
    """
    if not staged.malformed_in_rows:
        return staged
    bad = wh.fetchall(
        f"SELECT _ordinal + 1, {MALFORMED} FROM {checked} WHERE {MALFORMED} IS NOT NULL "
        f"ORDER BY _ordinal"
    )
    if bad:
        wh.execute(f"DELETE FROM {checked} WHERE {MALFORMED} IS NOT NULL")
    malformed = [MalformedLine(int(n), str(raw), "not a JSON object") for n, raw in bad]
    rows = int(wh.scalar(f"SELECT count(*) FROM {checked}"))
    if rows == 0 and not malformed:
        raise DataValidationError("the file has no JSON lines", where=staged.file)
    return dataclasses.replace(staged, rows=rows, malformed=malformed, malformed_in_rows=False)


def drop_staging(wh: Warehouse, staged: StagedInput) -> None:
    """Drop the temporary tables and views of a staged input and unregister its data."""
    for view in staged.temp_views:
        wh.execute(f"DROP VIEW IF EXISTS {view}")
    for table in staged.temp_tables:
        wh.execute(f"DROP TABLE IF EXISTS {table}")
    for name in staged.registered:
        wh.unregister(name)


def forget_staging(wh: Warehouse, staged: StagedInput) -> None:
    """Release what a staged input registered, after a failure.

    Temporary tables and views go with the rolled-back transaction; registered Arrow
    data (an open file stream) is released here, ignoring errors of the aborted
    transaction.
    """
    for name in staged.registered:
        with contextlib.suppress(Exception):
            wh.unregister(name)


def _column_types(wh: Warehouse, relation: str) -> dict[str, str]:
    return {str(r[0]): str(r[1]) for r in wh.fetchall(f"DESCRIBE {relation}")}


def _check_not_empty(path: Path) -> None:
    if path.stat().st_size == 0:
        raise DataValidationError("the file is empty", where=str(path))


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
