"""Bad input through the CLI: one clear line on stderr, exit code 2, nothing written."""

from __future__ import annotations

import json

import duckdb
import pytest

from segmint.cli.common import EXIT_USER_ERROR

GOOD_SOURCE = """
sources:
  - name: crm
    kind: customers
    path: customers.csv
"""


def run_ingest(cli, tmp_path, yaml_text, files, *, exit_code=EXIT_USER_ERROR):
    (tmp_path / "segmint.yaml").write_text(yaml_text)
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    return cli("ingest", "--project", tmp_path, exit_code=exit_code)


def assert_clean_error(result, *fragments):
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:")
    for fragment in fragments:
        assert fragment in result.stderr


@pytest.mark.parametrize(
    ("yaml_text", "files", "fragments"),
    [
        (GOOD_SOURCE, {}, ["no file matches 'customers.csv'"]),
        (GOOD_SOURCE, {"customers.csv": b"customer_id\nc\xff1\n"}, ["customers.csv:2", "UTF-8"]),
        (
            GOOD_SOURCE,
            {"customers.csv": b"email\na@b.co\n"},
            ["customers.csv", "required column 'customer_id'"],
        ),
        (GOOD_SOURCE, {"customers.csv": b"customer_id,email\n"}, ["header but no data rows"]),
        (GOOD_SOURCE, {"customers.csv": b""}, ["the file is empty"]),
        (
            GOOD_SOURCE.replace("kind: customers", "kind: visitors"),
            {},
            ["segmint.yaml:4", "sources[crm].kind", "customers"],
        ),
        (
            GOOD_SOURCE + "    colums: {email: mail}\n",
            {},
            ["segmint.yaml:6", "sources[crm].colums: unknown key"],
        ),
        (
            GOOD_SOURCE + "    columns: {email: mail, phone: mail}\n",
            {},
            ["sources[crm].columns", "'mail' is mapped twice"],
        ),
        (
            GOOD_SOURCE + "    columns: {email: a, email: b}\n",
            {},
            ["segmint.yaml:6", "duplicate key 'email'"],
        ),
        (
            GOOD_SOURCE + "    validation: {age: {min: 5, max: 1}}\n",
            {},
            ["sources[crm].validation.age", "min (5.0) is greater than max (1.0)"],
        ),
        ("sources: [\n", {}, ["segmint.yaml", "invalid YAML"]),
    ],
)
def test_bad_input_gives_one_line_and_exit_code_2(cli, tmp_path, yaml_text, files, fragments):
    result = run_ingest(cli, tmp_path, yaml_text, files)
    assert_clean_error(result, *fragments)
    warehouse = tmp_path / "segmint.duckdb"
    if warehouse.exists():
        con = duckdb.connect(str(warehouse))
        tables = {
            r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()
        }
        for table in tables & {"customers", "loads", "quarantine"}:
            assert con.execute(f'SELECT count(*) FROM "{table}"').fetchone() == (0,)
        con.close()


def test_unknown_source_name(cli, tmp_path):
    (tmp_path / "segmint.yaml").write_text(GOOD_SOURCE)
    result = cli("ingest", "web", "--project", tmp_path, exit_code=EXIT_USER_ERROR)
    assert_clean_error(result, "unknown source 'web'", "crm")


def test_missing_project_file(cli, tmp_path):
    result = cli("ingest", "--project", tmp_path / "nope", exit_code=EXIT_USER_ERROR)
    assert_clean_error(result, "no project file", "segmint init")


def test_every_command_has_help(cli):
    import typer.main

    from segmint.cli.main import app

    group = typer.main.get_command(app)
    for name in group.commands:
        result = cli(name, "--help")
        assert "Usage" in result.stdout


def test_init_writes_a_valid_commented_project(cli, tmp_path):
    from segmint.config import load_project

    cli("init", tmp_path)
    text = (tmp_path / "segmint.yaml").read_text()
    assert text.startswith("#")
    project, _ = load_project(tmp_path)
    assert [s.name for s in project.sources] == ["crm", "orders"]
    result = cli("init", tmp_path, exit_code=EXIT_USER_ERROR)
    assert "already exists" in result.stderr


def test_schema_prints_the_data_dictionary(cli):
    import json

    rows = json.loads(cli("schema", "--json").stdout)
    email = next(r for r in rows if r["table"] == "customers" and r["column"] == "email")
    assert email["pii"] is True and email["type"] == "string"
    assert {r["table"] for r in rows} >= {
        "customers",
        "orders",
        "order_items",
        "events",
        "consents",
        "products",
        "quarantine",
    }
    cli("schema", "nope", exit_code=EXIT_USER_ERROR)


def test_ingest_prints_counts_per_source(cli, tmp_path):
    (tmp_path / "segmint.yaml").write_text(GOOD_SOURCE)
    (tmp_path / "customers.csv").write_text("customer_id,age\nc1,30\nc2,300\nc1,31\n")
    result = cli("ingest", "--project", tmp_path, "--json")
    import json

    [row] = json.loads(result.stdout)
    assert (row["rows_loaded"], row["rows_quarantined"], row["rows_duplicate"]) == (1, 1, 1)


def test_features_list_compute_and_stability(cli, tmp_path):
    (tmp_path / "segmint.yaml").write_text(
        "sources:\n  - {name: shop, kind: orders, path: orders.csv}\n"
        "  - {name: crm, kind: customers, path: customers.csv}\n"
        'features:\n  custom:\n    big_orders: "SELECT customer_id, count(*) AS value '
        'FROM orders WHERE amount > 50 GROUP BY 1"\n'
    )
    (tmp_path / "customers.csv").write_text("customer_id\nc1\nc2\n")
    (tmp_path / "orders.csv").write_text(
        "order_id,customer_id,ordered_at,amount\no1,c1,2024-01-01,80\no2,c2,2024-03-01,20\n"
    )
    listing = json.loads(cli("features", "list", "--project", tmp_path, "--sql", "--json").stdout)
    names = [f["name"] for f in listing]
    assert "recency_days" in names and "big_orders" in names
    assert all(f["sql"] for f in listing)
    cli("ingest", "--project", tmp_path)
    for as_of in ("2024-02-01", "2024-04-01"):
        assert (
            "2 customers"
            in cli("features", "compute", "--project", tmp_path, "--as-of", as_of).stdout
        )
    result = cli(
        "features", "stability", "2024-02-01T00:00:00", "2024-04-01T00:00:00", "--project", tmp_path
    )
    assert "freq" in result.stdout and "PSI" in result.stdout
