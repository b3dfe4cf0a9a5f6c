from segmint.engine import Warehouse


def test_reopen_keeps_settings_and_sees_the_rewritten_file(tmp_path):
    wh = Warehouse(tmp_path / "w.duckdb", memory_limit="1GB")
    wh.execute("CREATE TABLE t AS SELECT 1 AS x")
    wh.reopen()
    assert wh.scalar("SELECT x FROM t") == 1
    assert wh.scalar("SELECT current_setting('TimeZone')") == "UTC"
    assert wh.scalar("SELECT current_setting('memory_limit')").startswith("953")  # 1GB in MiB
    wh.close()
