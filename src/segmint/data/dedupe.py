"""Deduplication and survivorship when new rows meet each other and the table.

Rows that share any dedupe key (a column or a group of columns) describe the same
record. Events are immutable: the first copy of a ``message_id`` wins and later
copies are duplicates. Every other table merges a group into one row:

* **survivorship** — per column, the most recent observed (non-null, non-imputed)
  value wins; "most recent" orders by the table's timestamp column (``updated_at``
  for customers, ``ordered_at`` for orders), then newer loads, then later lines;
* the survivor keeps the **first-seen identifier** (an existing row's id, else the
  earliest line of the batch), so ids stay stable across loads;
* every merged row is recorded in ``dedupe_merges`` with what it matched on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from segmint.data.schema import Table
from segmint.engine import Warehouse
from segmint.engine.dialect import quote


@dataclass(frozen=True)
class MergeStats:
    loaded: int  # rows written (new records, or existing records updated)
    duplicates: int  # batch rows merged into another row


def merge_batch(
    wh: Warehouse, table: Table, batch: str, keys: list[tuple[str, ...]], load_id: str, now: Any
) -> MergeStats:
    """Write the validated rows of ``batch`` into ``table``.

    Parameters
    ----------
    wh
        The warehouse (inside the load's transaction).
    table
        The canonical table written.
    batch
        A relation with the table's columns and ``_ordinal`` (the row's position in
        the input). A view is fine: it is read a few times, narrowly, to find the
        duplicates, and once in full to write the rows.
    keys
        Dedupe keys, each a tuple of columns; keys whose columns the batch lacks are
        ignored, and with none left every row is appended.
    load_id, now
        Recorded with every merge in ``dedupe_merges``.

    Returns
    -------
    MergeStats
        Rows written (new or updated records) and batch rows merged into another.

    Examples
    --------
    >>> from segmint.data.schema import TABLES
    >>> from segmint.data.store import ensure_tables
    >>> wh = Warehouse(":memory:")
    >>> ensure_tables(wh)
    >>> wh.execute("CREATE TEMP TABLE b AS SELECT *, 0::BIGINT AS _ordinal FROM orders")
    >>> wh.execute(
    ...     "INSERT INTO b (order_id, customer_id, _ordinal) "
    ...     "VALUES ('o1', 'c1', 0), ('o2', 'c1', 1), ('o1', 'c1', 2)"
    ... )
    >>> merge_batch(wh, TABLES["orders"], "b", [("order_id",)], "load1", None)
    MergeStats(loaded=2, duplicates=1)
    """
    batch_columns = wh.columns(batch)
    keys = [k for k in keys if all(c in batch_columns for c in k)]
    if not keys:
        loaded = _count(
            wh.fetchall(
                f"INSERT INTO {quote(table.name)} BY NAME SELECT * EXCLUDE (_ordinal) FROM {batch}"
            )
        )
        return MergeStats(loaded, 0)
    if table.name == "events":
        return _append_new_events(wh, table, batch, keys[0], load_id, now)
    return _merge_with_survivorship(wh, table, batch, keys, load_id, now)


def _count(rows: list[Any]) -> int:
    """The row count an INSERT / DELETE statement returns."""
    return int(rows[0][0]) if rows else 0


def _key_sql(key: tuple[str, ...], alias: str = "") -> str:
    prefix = f"{alias}." if alias else ""
    if len(key) == 1:
        return f"CAST({prefix}{quote(key[0])} AS VARCHAR)"
    parts = ", ".join(f"CAST({prefix}{quote(c)} AS VARCHAR)" for c in key)
    return f"concat_ws('|', {parts})"


def _key_name(key: tuple[str, ...]) -> str:
    return "+".join(key)


def _is_empty(wh: Warehouse, table: Table) -> bool:
    return wh.scalar(f"SELECT count(*) FROM (SELECT 1 FROM {quote(table.name)} LIMIT 1)") == 0


def _append_new_events(
    wh: Warehouse, table: Table, batch: str, key: tuple[str, ...], load_id: str, now: Any
) -> MergeStats:
    """Append the batch's events except repeats: the first copy of a key in the batch
    wins, and keys already in the table are skipped.

    Only the (narrow) keys are read to find repeats: one aggregate of 64-bit hashes
    over the batch (the exact keys are compared only for the rare hashes seen twice)
    and, unless the table is empty, one semi-join of the table's keys. With no repeat
    (the usual case) the batch is then written in one pass as it is; otherwise the
    repeated rows are recorded and left out.
    """
    k = _key_sql(key, "b")
    hashes, repeated = f"{batch}_hashes", f"{batch}_repeated"
    seen, dups = f"{batch}_seen", f"{batch}_dups"
    scratch = [hashes]
    wh.execute(
        f"CREATE TEMP TABLE {hashes} AS SELECT hash({k}) AS _h FROM {batch} b "
        f"GROUP BY ALL HAVING count(*) > 1"
    )
    found: list[str] = []
    if _has_rows(wh, hashes):
        scratch.append(repeated)
        wh.execute(
            f"CREATE TEMP TABLE {repeated} AS SELECT {k} AS _key, min(b._ordinal) AS _first "
            f"FROM {batch} b WHERE hash({k}) IN (SELECT _h FROM {hashes}) "
            f"GROUP BY ALL HAVING count(*) > 1"
        )
        if _has_rows(wh, repeated):
            found.append(
                f"SELECT b._ordinal, {k} AS _key, b._file, b._line, false AS _seen "
                f"FROM {batch} b JOIN {repeated} r ON r._key IS NOT DISTINCT FROM {k} "
                f"WHERE b._ordinal <> r._first"
            )
    if not _is_empty(wh, table):
        t = _key_sql(key, "t")
        scratch.append(seen)
        wh.execute(
            f"CREATE TEMP TABLE {seen} AS SELECT DISTINCT {t} AS _key "
            f"FROM {quote(table.name)} t WHERE {t} IN (SELECT {k} FROM {batch} b)"
        )
        if _has_rows(wh, seen):
            # A key already loaded is skipped in every copy (a repeat or not).
            found = [
                f"SELECT b._ordinal, {k} AS _key, b._file, b._line, true AS _seen "
                f"FROM {batch} b JOIN {seen} s ON s._key = {k}",
                *(f"{q} AND {k} NOT IN (SELECT _key FROM {seen})" for q in found),
            ]
    duplicates = 0
    if found:
        scratch.append(dups)
        wh.execute(f"CREATE TEMP TABLE {dups} AS {' UNION ALL '.join(found)}")
        duplicates = int(wh.scalar(f"SELECT count(*) FROM {dups}"))
    if duplicates:
        wh.execute(
            f"INSERT INTO dedupe_merges SELECT ?, ?, _key, _key, "
            f"CASE WHEN _seen THEN 'already loaded: ' ELSE 'repeated in file: ' END || ?, "
            f"_file, _line, ? FROM {dups} ORDER BY _ordinal",
            [load_id, table.name, _key_name(key), now],
        )
    new_rows = f"ANTI JOIN {dups} d ON d._ordinal = b._ordinal" if duplicates else ""
    loaded = _count(
        wh.fetchall(
            f"INSERT INTO {quote(table.name)} BY NAME SELECT b.* EXCLUDE (_ordinal) "
            f"FROM {batch} b {new_rows}"
        )
    )
    # Scratch made inside the load's transaction: dropped here, or rolled back with it
    # (a cleanup after a failed statement would only hide that statement's error).
    for temp in reversed(scratch):
        wh.execute(f"DROP TABLE {temp}")
    return MergeStats(loaded, duplicates)


def _has_rows(wh: Warehouse, relation: str) -> bool:
    return bool(wh.scalar(f"SELECT count(*) FROM (SELECT 1 FROM {relation} LIMIT 1)"))


def _merge_with_survivorship(
    wh: Warehouse, table: Table, batch: str, keys: list[tuple[str, ...]], load_id: str, now: Any
) -> MergeStats:
    """Merge the batch into the table by the keys, with survivorship.

    Rows sharing no key value with another batch row or an existing row (nearly all
    of them) are written straight from the batch. Only the rows that do -- and the
    existing rows they match -- are grouped and merged.
    """
    name = quote(table.name)
    columns = [c.name for c in table.columns]
    cols = ", ".join(quote(c) for c in columns)
    shared: list[str] = []
    linked_any: list[str] = []
    for i, key in enumerate(keys):
        values = f"{batch}_shared{i}"
        shared.append(values)
        kb, kt = _key_sql(key, "b"), _key_sql(key, "t")
        # With several keys a missing value links nothing; one key groups missing values.
        present = "WHERE _k IS NOT NULL" if len(keys) > 1 else ""
        wh.execute(
            f"CREATE TEMP TABLE {values} AS SELECT _k FROM (SELECT {kb} AS _k FROM {batch} b "
            f"UNION ALL SELECT {kt} FROM {name} t WHERE {kt} IN (SELECT {kb} FROM {batch} b)) "
            f"{present} GROUP BY _k HAVING count(*) > 1"
        )
        linked_any.append(f"EXISTS (SELECT 1 FROM {values} x WHERE x._k IS NOT DISTINCT FROM {kb})")
    linked = " OR ".join(linked_any)
    singles = _count(
        wh.fetchall(
            f"INSERT INTO {name} ({cols}) SELECT {', '.join('b.' + quote(c) for c in columns)} "
            f"FROM {batch} b WHERE NOT ({linked})"
        )
    )
    # Existing rows matching a batch key have that key value among the shared values.
    existing_match = " OR ".join(
        f"{_key_sql(k, 't')} IN (SELECT _k FROM {values})"
        for k, values in zip(keys, shared, strict=True)
    )
    cand = f"{batch}_cand"
    wh.execute(
        f"CREATE TEMP TABLE {cand} AS "
        f"SELECT {', '.join('b.' + quote(c) for c in columns)}, 1 AS _batch, b._ordinal, "
        f"NULL::BIGINT AS _wrid FROM {batch} b WHERE {linked} "
        f"UNION ALL SELECT {', '.join('t.' + quote(c) for c in columns)}, 0, -1, t.rowid "
        f"FROM {name} t WHERE {existing_match}"
    )
    for values in shared:
        wh.execute(f"DROP TABLE {values}")
    if not wh.scalar(f"SELECT count(*) FROM {cand}"):
        wh.execute(f"DROP TABLE {cand}")
        return MergeStats(singles, 0)
    wh.execute(f"ALTER TABLE {cand} ADD COLUMN _rid BIGINT")
    wh.execute(f"ALTER TABLE {cand} ADD COLUMN _group BIGINT")
    wh.execute(f"UPDATE {cand} SET _rid = rowid")
    _assign_groups(wh, cand, keys)
    sizes = f"{cand}_sizes"
    wh.execute(
        f"CREATE TEMP TABLE {sizes} AS SELECT _group, count(*) AS n, max(_batch) AS has_batch, "
        f"min(_batch) = 0 AS has_existing FROM {cand} GROUP BY _group"
    )
    # Groups of one new row pass straight through.
    wh.execute(
        f"INSERT INTO {name} ({cols}) SELECT {cols} FROM {cand} JOIN {sizes} USING (_group) "
        f"WHERE n = 1 AND _batch = 1"
    )
    order_by = []
    if table.timestamp_column:
        order_by.append(f"{quote(table.timestamp_column)} DESC NULLS LAST")
    order_by += ["_batch DESC", "_ordinal DESC"]
    ranked = f"{cand}_ranked"
    wh.execute(
        f"CREATE TEMP TABLE {ranked} AS SELECT c.*, row_number() OVER (PARTITION BY c._group "
        f"ORDER BY {', '.join(order_by)}) AS _recency, row_number() OVER (PARTITION BY c._group "
        f"ORDER BY _batch ASC, _ordinal ASC) AS _first FROM {cand} c JOIN {sizes} s "
        f"USING (_group) WHERE s.n > 1"
    )
    id_column = keys[0][0]
    survivor_columns = []
    for column in columns:
        if column == id_column:
            expr = f"arg_min({quote(column)}, _first)"
        elif column in ("_imputed",):
            expr = "NULL::VARCHAR[]"
        elif column.startswith("_"):
            expr = f"arg_min({quote(column)}, _recency)"
        else:
            observed = (
                f"{quote(column)} IS NOT NULL AND NOT "
                f"list_contains(coalesce(_imputed, []::VARCHAR[]), '{column}')"
            )
            expr = f"arg_min({quote(column)}, _recency) FILTER (WHERE {observed})"
        survivor_columns.append(f"{expr} AS {quote(column)}")
    survivors = f"{cand}_surv"
    wh.execute(
        f"CREATE TEMP TABLE {survivors} AS SELECT _group, {', '.join(survivor_columns)} "
        f"FROM {ranked} GROUP BY _group"
    )
    key_checks = " ".join(
        f"WHEN {_key_sql(k, 'r')} = {_key_sql(k, 's')} THEN '{_key_name(k)}'" for k in keys
    )
    observed = ", ".join(quote(c) for c in columns if not c.startswith("_"))
    row_hash = f"md5(CAST(struct_pack({observed}) AS VARCHAR))"
    wh.execute(
        f"INSERT INTO dedupe_merges SELECT ?, ?, s.{quote(id_column)}, r.{quote(id_column)}, "
        f"CASE WHEN r._hash = r._survivor_hash THEN 'exact' {key_checks} ELSE 'linked' END, "
        f"r._file, r._line, ? FROM (SELECT *, {row_hash} AS _hash, "
        f"first({row_hash}) OVER (PARTITION BY _group ORDER BY _first) AS _survivor_hash "
        f"FROM {ranked}) r JOIN {survivors} s USING (_group) WHERE r._first > 1",
        [load_id, table.name, now],
    )
    wh.execute(f"DELETE FROM {name} WHERE rowid IN (SELECT _wrid FROM {ranked} WHERE _batch = 0)")
    wh.execute(f"INSERT INTO {name} ({cols}) SELECT {cols} FROM {survivors}")
    loaded, batch_rows = wh.fetchall(
        f"SELECT count(*) FILTER (WHERE has_batch = 1), "
        f"(SELECT count(*) FROM {cand} WHERE _batch = 1) FROM {sizes}"
    )[0]
    for temp in (ranked, survivors, sizes, cand):
        wh.execute(f"DROP TABLE {temp}")
    return MergeStats(singles + int(loaded), int(batch_rows) - int(loaded))


def _assign_groups(wh: Warehouse, cand: str, keys: list[tuple[str, ...]]) -> None:
    """Set ``_group``: connected components of rows linked by any shared key."""
    if len(keys) == 1:
        wh.execute(
            f"UPDATE {cand} SET _group = g.grp FROM (SELECT _rid, dense_rank() OVER "
            f"(ORDER BY {_key_sql(keys[0])}) AS grp FROM {cand}) g WHERE {cand}._rid = g._rid"
        )
        return
    key_exprs = ", ".join(f"{_key_sql(k)} AS k{i}" for i, k in enumerate(keys))
    data = wh.arrow(f"SELECT _rid, {key_exprs} FROM {cand} ORDER BY _rid")
    n = data.num_rows
    rids = data.column("_rid").to_numpy()
    rows, nodes = [], []
    offset = n
    for i in range(len(keys)):
        values = data.column(f"k{i}").to_pandas()
        codes, uniques = values.factorize()
        present = codes >= 0
        rows.append(np.nonzero(present)[0])
        nodes.append(codes[present] + offset)
        offset += len(uniques)
    src = np.concatenate(rows)
    dst = np.concatenate(nodes)
    graph = coo_matrix((np.ones(len(src), dtype=np.int8), (src, dst)), shape=(offset, offset))
    _, labels = connected_components(graph, directed=False)
    groups = pa.table({"_rid": rids, "grp": labels[:n].astype(np.int64)})
    wh.register("_dedupe_groups", groups)
    try:
        wh.execute(
            f"UPDATE {cand} SET _group = g.grp FROM _dedupe_groups g WHERE {cand}._rid = g._rid"
        )
    finally:
        wh.unregister("_dedupe_groups")
