"""Pseudonymisation: keyed, normalised, the same in Python and SQL; the key is never stored."""

from __future__ import annotations

import hashlib
import hmac
import logging
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from segmint.data.privacy import (
    KEY_ENV,
    KEY_FILE_ENV,
    PrivacySettings,
    create_pseudonymised_view,
    erase,
    load_key,
    pseudonymise,
    pseudonymise_array,
    register_pseudonymise_function,
    require_key,
)
from segmint.data.store import ensure_tables
from segmint.engine import Warehouse
from segmint.errors import UserInputError

KEY = b"a-secret-pseudonymisation-key-0042"


def test_pseudonym_is_hmac_sha256_of_the_normalised_identifier():
    expected = hmac.new(KEY, b"ada@example.org", hashlib.sha256).hexdigest()
    assert pseudonymise("  Ada@Example.ORG ", KEY) == expected
    assert pseudonymise("C-1", KEY) != pseudonymise("c-1", KEY)  # ids keep their case
    assert pseudonymise("C-1", KEY) != pseudonymise("C-1", KEY[::-1])
    with pytest.raises(UserInputError, match="empty"):
        pseudonymise("  ", KEY)


def test_key_from_environment_or_file(tmp_path: Path, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    monkeypatch.delenv(KEY_FILE_ENV, raising=False)
    assert load_key() is None
    with pytest.raises(UserInputError, match=KEY_ENV):
        require_key()

    monkeypatch.setenv(KEY_ENV, KEY.decode())
    assert require_key() == KEY

    key_file = tmp_path / "key"
    key_file.write_bytes(KEY + b"\n")
    monkeypatch.setenv(KEY_FILE_ENV, str(key_file))
    with pytest.raises(UserInputError, match="not both"):
        load_key()
    monkeypatch.delenv(KEY_ENV)
    assert load_key() == KEY

    key_file.write_bytes(b"short")
    with pytest.raises(UserInputError, match="too short"):
        load_key()
    monkeypatch.setenv(KEY_FILE_ENV, str(tmp_path / "missing"))
    with pytest.raises(UserInputError, match="cannot read"):
        load_key()


def test_settings_never_show_the_key():
    settings_ = PrivacySettings(pseudonymization_key=KEY.decode())
    assert KEY.decode() not in repr(settings_) and KEY.decode() not in str(settings_)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.none(), st.text(max_size=20)), max_size=20))
def test_sql_function_agrees_with_python(values):
    wh = Warehouse(":memory:")
    register_pseudonymise_function(wh, KEY)
    wh.register("v", pa.table({"x": pa.array(values, pa.string())}))
    got = [r[0] for r in wh.fetchall("SELECT pseudonymise(x) FROM v")]
    expected = pseudonymise_array(pa.array(values, pa.string()), KEY).to_pylist()
    assert got == expected
    for value, pseudonym in zip(values, got, strict=True):
        if value is None or not value.strip():
            assert pseudonym is None
        else:
            assert pseudonym == pseudonymise(value, KEY)


def _customers(wh: Warehouse) -> None:
    ensure_tables(wh)
    wh.execute(
        "INSERT INTO customers (customer_id, email, first_name, birth_date, age, country) VALUES "
        "('c1', 'ada@example.org', 'Ada', DATE '1815-12-10', 36, 'GB'), "
        "('c2', NULL, 'Bob', NULL, 41, 'US')"
    )


def test_view_pseudonymises_identifiers_and_leaves_out_other_pii():
    wh = Warehouse(":memory:")
    _customers(wh)
    view = create_pseudonymised_view(wh, "customers", key=KEY)
    rows = wh.df(f"SELECT * FROM {view} ORDER BY age")
    assert "birth_date" not in rows.columns  # personal data that is no identifier: left out
    assert rows["customer_id"].tolist() == [pseudonymise("c1", KEY), pseudonymise("c2", KEY)]
    assert rows["email"].tolist()[0] == pseudonymise("ada@example.org", KEY)
    assert rows["email"].isna().tolist()[1]
    assert rows["age"].tolist() == [36, 41] and rows["country"].tolist() == ["GB", "US"]
    # A pseudonymised export joins back to other pseudonymised data, not to the raw ids.
    other = create_pseudonymised_view(wh, "customers", ["customer_id"], KEY, view="ids_only")
    assert wh.scalar(f"SELECT count(*) FROM {view} a JOIN {other} b USING (customer_id)") == 2


def test_view_rejects_unknown_tables_and_columns():
    wh = Warehouse(":memory:")
    _customers(wh)
    with pytest.raises(UserInputError, match="unknown table"):
        create_pseudonymised_view(wh, "nope", key=KEY)
    with pytest.raises(UserInputError, match="'nope' not in customers"):
        create_pseudonymised_view(wh, "customers", ["nope"], KEY)


def test_view_needs_a_key(monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    monkeypatch.delenv(KEY_FILE_ENV, raising=False)
    wh = Warehouse(":memory:")
    _customers(wh)
    with pytest.raises(UserInputError, match=KEY_ENV):
        create_pseudonymised_view(wh, "customers")


def test_the_key_never_reaches_the_database_file_or_the_logs(tmp_path: Path, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv(KEY_ENV, KEY.decode())
    path = tmp_path / "w.duckdb"
    wh = Warehouse(path)
    wh.execute("SET force_compression = 'uncompressed'")
    _customers(wh)
    view = create_pseudonymised_view(wh, "customers")
    wh.execute(f"CREATE TABLE export AS SELECT * FROM {view}")
    wh.execute(f"COPY (SELECT * FROM {view}) TO '{tmp_path / 'export.parquet'}'")
    erase(wh, customer_id="c2")  # suppression hashes under the key, then compaction
    wh.checkpoint()
    data = path.read_bytes()
    wal = Path(f"{path}.wal")
    data += wal.read_bytes() if wal.exists() else b""
    data += (tmp_path / "export.parquet").read_bytes()
    assert pseudonymise("c1", KEY).encode() in data  # the export is there ...
    for secret in (KEY, KEY.hex().encode(), KEY.upper()):
        assert secret not in data  # ... the key is not
    assert KEY.decode() not in caplog.text
    wh.close()
