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
    """Write the validated rows of ``batch`` (a temp table) into ``table``."""
    keys = [k for k in keys if all(c in wh.columns(batch) for c in k)]
    if not keys:
        wh.execute(
            f"INSERT INTO {quote(table.name)} BY NAME SELECT * EXCLUDE (_ordinal) FROM {batch}"
        )
        return MergeStats(int(wh.scalar(f"SELECT count(*) FROM {batch}")), 0)
    if table.name == "events":
        return _append_new_events(wh, table, batch, keys[0], load_id, now)
    return _merge_with_survivorship(wh, table, batch, keys, load_id, now)


def _key_sql(key: tuple[str, ...], alias: str = "") -> str:
    prefix = f"{alias}." if alias else ""
    if len(key) == 1:
        return f"CAST({prefix}{quote(key[0])} AS VARCHAR)"
    parts = ", ".join(f"CAST({prefix}{quote(c)} AS VARCHAR)" for c in key)
    return f"concat_ws('|', {parts})"


def _key_name(key: tuple[str, ...]) -> str:
    return "+".join(key)


def _append_new_events(
    wh: Warehouse, table: Table, batch: str, key: tuple[str, ...], load_id: str, now: Any
) -> MergeStats:
    k = _key_sql(key, "b")
    ranked = f"{batch}_ranked"
    wh.execute(
        f"CREATE TEMP TABLE {ranked} AS SELECT b.*, {k} AS _key, "
        f"row_number() OVER (PARTITION BY {k} ORDER BY b._ordinal) AS _copy, "
        f"EXISTS (SELECT 1 FROM {quote(table.name)} t WHERE {_key_sql(key, 't')} = {k}) "
        f"AS _seen FROM {batch} b"
    )
    wh.execute(
        f"INSERT INTO dedupe_merges SELECT ?, ?, _key, _key, "
        f"CASE WHEN _seen THEN 'already loaded: ' ELSE 'repeated in file: ' END || ?, "
        f"_file, _line, ? FROM {ranked} WHERE _seen OR _copy > 1",
        [load_id, table.name, _key_name(key), now],
    )
    wh.execute(
        f"INSERT INTO {quote(table.name)} BY NAME SELECT * EXCLUDE (_ordinal, _key, _copy, _seen) "
        f"FROM {ranked} WHERE NOT _seen AND _copy = 1"
    )
    loaded, duplicates = wh.fetchall(
        f"SELECT count(*) FILTER (WHERE NOT _seen AND _copy = 1), "
        f"count(*) FILTER (WHERE _seen OR _copy > 1) FROM {ranked}"
    )[0]
    wh.execute(f"DROP TABLE {ranked}")
    return MergeStats(int(loaded), int(duplicates))


def _merge_with_survivorship(
    wh: Warehouse, table: Table, batch: str, keys: list[tuple[str, ...]], load_id: str, now: Any
) -> MergeStats:
    name = quote(table.name)
    columns = [c.name for c in table.columns]
    cols = ", ".join(quote(c) for c in columns)
    existing_match = " OR ".join(
        f"{_key_sql(k, 't')} IN (SELECT {_key_sql(k)} FROM {batch})" for k in keys
    )
    cand = f"{batch}_cand"
    wh.execute(
        f"CREATE TEMP TABLE {cand} AS "
        f"SELECT {cols}, 1 AS _batch, _ordinal, NULL::BIGINT AS _wrid FROM {batch} "
        f"UNION ALL SELECT {', '.join('t.' + quote(c) for c in columns)}, 0, -1, t.rowid "
        f"FROM {name} t WHERE {existing_match}"
    )
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
        f"SELECT count(*) FILTER (WHERE has_batch = 1), (SELECT count(*) FROM {batch}) FROM {sizes}"
    )[0]
    for temp in (ranked, survivors, sizes, cand):
        wh.execute(f"DROP TABLE {temp}")
    return MergeStats(int(loaded), int(batch_rows) - int(loaded))


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
