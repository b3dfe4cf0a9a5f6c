from hypothesis import given, settings
from hypothesis import strategies as st

from segmint.engine import Warehouse


def test_reopen_keeps_settings_and_sees_the_rewritten_file(tmp_path):
    wh = Warehouse(tmp_path / "w.duckdb", memory_limit="1GB")
    wh.execute("CREATE TABLE t AS SELECT 1 AS x")
    wh.reopen()
    assert wh.scalar("SELECT x FROM t") == 1
    assert wh.scalar("SELECT current_setting('TimeZone')") == "UTC"
    assert wh.scalar("SELECT current_setting('memory_limit')").startswith("953")  # 1GB in MiB
    wh.close()


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(st.tuples(st.sampled_from("abcd"), st.integers(0, 40)), max_size=250),
    keys=st.lists(st.tuples(st.sampled_from("abcde"), st.integers(0, 40)), max_size=250),
)
def test_delete_rows_removes_exactly_the_matching_rows(rows, keys):
    """Few keys (OR-ed equalities), some (VALUES) and many (Arrow) delete the same rows."""
    with Warehouse(":memory:") as wh:
        wh.execute("CREATE TABLE t (a VARCHAR, b BIGINT)")
        wh.insert_rows("t", ["a", "b"], rows)
        wh.delete_rows("t", ["a", "b"], keys)
        gone = set(keys)
        assert sorted(wh.fetchall("SELECT a, b FROM t")) == sorted(r for r in rows if r not in gone)
