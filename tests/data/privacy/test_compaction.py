"""Compaction: the same warehouse object goes on working on a file without deleted values."""

from __future__ import annotations

from pathlib import Path

from segmint.data.privacy import compact_database
from segmint.data.privacy.compaction import wal_path
from segmint.engine import Warehouse


def test_deleted_values_leave_the_file_and_the_object_keeps_working(tmp_path: Path):
    path = tmp_path / "w.duckdb"
    wh = Warehouse(path)
    wh.execute("SET force_compression = 'uncompressed'")
    wh.execute(
        "CREATE TABLE t AS SELECT 'secret-' || range || '-value' AS s, range AS i FROM range(500)"
    )
    wh.execute("CREATE VIEW v AS SELECT count(*) AS n FROM t")
    wh.checkpoint()
    wh.execute("DELETE FROM t WHERE i = 250")
    wh.checkpoint()
    assert b"secret-250-value" in path.read_bytes()  # DELETE alone leaves the bytes
    (tmp_path / "w.duckdb.compact").write_bytes(b"left over by a crash")

    result = compact_database(wh)

    assert result is not None and result.path == str(path)
    assert b"secret-250-value" not in path.read_bytes()
    assert not (tmp_path / "w.duckdb.compact").exists() and not wal_path(path).exists()
    assert wh.scalar("SELECT n FROM v") == 499  # views survive, same object, new connection
    assert wh.scalar("SELECT current_setting('TimeZone')") == "UTC"
    wh.execute("INSERT INTO t VALUES ('new', 1000)")
    wh.close()
    with Warehouse(path) as reopened:
        assert reopened.scalar("SELECT count(*) FROM t") == 500


def test_in_memory_warehouses_are_left_alone():
    wh = Warehouse(":memory:")
    wh.execute("CREATE TABLE t AS SELECT 1 AS x")
    assert compact_database(wh) is None
    assert wh.scalar("SELECT x FROM t") == 1
