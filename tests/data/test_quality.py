"""The data-quality report, checked against figures computed by hand on tiny files."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pytest
import typer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from segmint.cli import quality_cmd
from segmint.cli.main import _SegmintGroup
from segmint.data.quality import (
    QualityReport,
    compare,
    list_runs,
    load_run,
    quality_report,
    save_run,
)
from segmint.data.store import ensure_tables
from segmint.engine import Warehouse
from segmint.errors import UserInputError
from segmint.project import Project

NOW = datetime(2024, 1, 10)

SOURCES = """
sources:
  - name: crm
    kind: customers
    path: data/customers*.csv
    validation:
      age: {min: 0, max: 120}
  - name: shop
    kind: orders
    path: data/orders.csv
"""

# Line 2..8. Loaded: c1, c2, c4, c6 (4 rows; c2 has no email and is the newest).
# Quarantined: c3 (age 200 > max), line 7 (3 fields: malformed). Duplicate: the second c4.
CUSTOMERS_1 = """
customer_id,email,age,country,updated_at
c1,a@x.com,30,US,2024-01-01 00:00:00
c2,,40,US,2024-01-06 00:00:00
c3,c@x.com,200,US,2024-01-03 00:00:00
c4,d@x.com,50,FR,2024-01-04 00:00:00
c4,d@x.com,50,FR,2024-01-04 00:00:00
c5,e@x.com,60
c6,f@x.com,25,DE,2024-01-05 12:00:00
"""

# Worse: two more rows without email, one age below min, one above max.
CUSTOMERS_2 = """
customer_id,email,age,country,updated_at
c7,,30,US,2024-01-07 00:00:00
c8,,35,US,2024-01-07 00:00:00
c9,g@x.com,-5,US,2024-01-07 00:00:00
c10,h@x.com,130,US,2024-01-07 00:00:00
"""

# o3 fails amount min 0 (default rule); o2 has no currency.
ORDERS = """
order_id,customer_id,ordered_at,amount,currency
o1,c1,2024-01-02 10:00:00,10.5,EUR
o2,c1,2024-01-03 10:00:00,20,
o3,c4,2024-01-04 10:00:00,-1,EUR
"""


@pytest.fixture
def project(make_project: Callable[..., Project]) -> Project:
    proj = make_project(SOURCES, {"data/customers_1.csv": CUSTOMERS_1, "data/orders.csv": ORDERS})
    proj.ingest()
    return proj


@pytest.fixture
def report(project: Project) -> QualityReport:
    return quality_report(project.warehouse, project.config, now=NOW)


# --------------------------------------------------------------------------- figures


def test_source_summary_counts_rows_from_loads(report: QualityReport) -> None:
    crm = report.source("crm")
    assert (crm.table, crm.files, crm.rows_read, crm.rows_loaded) == ("customers", 1, 7, 4)
    assert (crm.rows_quarantined, crm.rows_duplicate, crm.rows) == (2, 1, 4)
    assert crm.duplicate_rate == pytest.approx(1 / 7)
    assert crm.quarantine_rate == pytest.approx(2 / 7)
    assert crm.last_load_at is not None
    shop = report.source("shop")
    assert (shop.rows_read, shop.rows_loaded, shop.rows_quarantined) == (3, 2, 1)
    assert shop.duplicate_rate == 0.0


def test_quarantine_is_broken_down_by_rule_and_column(report: QualityReport) -> None:
    counts = {(q.source, q.rule, q.column): q.rows for q in report.quarantine}
    assert counts == {
        ("crm", "max", "age"): 1,
        ("crm", "malformed", None): 1,
        ("shop", "min", "amount"): 1,
    }


def test_completeness_is_the_share_of_non_null_values(report: QualityReport) -> None:
    email = report.column("customers", "email", source="crm")
    assert (email.rows, email.non_null, email.completeness) == (4, 3, 0.75)
    assert report.column("customers", "email").completeness == 0.75  # all sources
    assert report.column("customers", "phone", source="crm").completeness == 0.0
    assert report.column("customers", "age", source="crm").completeness == 1.0
    assert report.column("orders", "currency", source="shop").completeness == 0.5


def test_validity_is_one_minus_failures_over_rows_read(report: QualityReport) -> None:
    max_age = report.rule("crm", "age", "max")
    assert (max_age.failures, max_age.rows_read) == (1, 7)
    assert max_age.pass_rate == pytest.approx(6 / 7)
    assert report.rule("crm", None, "malformed").pass_rate == pytest.approx(6 / 7)
    assert report.rule("shop", "amount", "min").pass_rate == pytest.approx(2 / 3)
    # Configured rules that never failed are listed with a pass rate of 1, min: 0 included.
    assert report.rule("crm", "age", "min").pass_rate == 1.0
    assert report.rule("crm", "email", "regex").pass_rate == 1.0
    assert report.rule("crm", "customer_id", "required").pass_rate == 1.0
    assert report.rule("crm", "income", "min").pass_rate == 1.0


def test_freshness_is_measured_against_now(report: QualityReport) -> None:
    customers = report.freshness_of("customers", "crm")
    assert customers.timestamp_column == "updated_at"
    assert customers.newest == datetime(2024, 1, 6)
    assert customers.age_hours == pytest.approx(96.0)
    assert customers.age_days == pytest.approx(4.0)
    assert customers.last_loaded_at is not None
    orders = report.freshness_of("orders")
    assert orders.newest == datetime(2024, 1, 3, 10)
    assert orders.age_hours == pytest.approx(6 * 24 + 14)
    # Tables without a timestamp column fall back to the load time; empty ones have none.
    products = report.freshness_of("products")
    assert (products.timestamp_column, products.newest, products.age_hours) == (
        "_loaded_at",
        None,
        None,
    )


def test_inventory_gives_coverage_and_newest_value_per_attribute(report: QualityReport) -> None:
    email = report.cell("crm", "email")
    # c2 (2024-01-06) has no email, so the newest e-mail is c6's (2024-01-05 12:00).
    assert (email.coverage, email.newest) == (0.75, datetime(2024, 1, 5, 12))
    age = report.cell("crm", "age")
    assert (age.coverage, age.newest) == (1.0, datetime(2024, 1, 6))
    phone = report.cell("crm", "phone")
    assert (phone.coverage, phone.newest) == (0.0, None)
    assert {c.source for c in report.inventory} == {"crm", "shop"}


def test_value_ranges(report: QualityReport) -> None:
    age = report.value_range("customers", "age")
    assert (age.min, age.max, age.mean) == (25, 50, pytest.approx(36.25))
    updated = report.value_range("customers", "updated_at")
    assert (updated.min, updated.max) == ("2024-01-01T00:00:00", "2024-01-06T00:00:00")
    country = report.value_range("customers", "country")
    assert (country.distinct, country.distinct_exact) == (3, True)
    amount = report.value_range("orders", "amount")
    assert (amount.min, amount.max, amount.mean) == (10.5, 20.0, pytest.approx(15.25))


def test_table_score_is_completeness_times_validity(report: QualityReport) -> None:
    customers = report.table("customers")
    assert customers.scored_columns == ("customer_id", "email", "age", "country", "updated_at")
    assert customers.completeness == pytest.approx((1 + 0.75 + 1 + 1 + 1) / 5)
    assert customers.validity == pytest.approx(5 / 7)
    assert customers.score == pytest.approx(0.95 * 5 / 7)
    orders = report.table("orders")
    assert orders.score == pytest.approx((4 + 0.5) / 5 * 2 / 3)
    assert report.table("products").score == 0.0
    assert report.overall_score == pytest.approx((customers.score + orders.score) / 2)


def test_imputed_values_are_counted_apart(make_project: Callable[..., Project]) -> None:
    project = make_project(
        """
        sources:
          - name: crm
            kind: customers
            path: customers.csv
            impute: {age: median}
        """,
        {"customers.csv": "customer_id,age\nc1,30\nc2,\nc3,50\n"},
    )
    project.ingest()
    age = quality_report(project.warehouse, project.config, now=NOW).column("customers", "age")
    assert (age.completeness, age.imputed) == (1.0, 1)
    assert age.imputed_share == pytest.approx(1 / 3)
    assert age.observed == pytest.approx(2 / 3)


# --------------------------------------------------------------------------- empty data


def _assert_all_zero(report: QualityReport) -> None:
    assert report.overall_score == 0.0
    assert {t.table for t in report.tables} >= {"customers", "orders", "events"}
    assert all(t.rows == 0 and t.score == 0.0 for t in report.tables)
    assert all(c.completeness == 0.0 for c in report.columns)
    assert report.quarantine == ()
    assert QualityReport.from_json(report.to_json()) == report


def test_empty_warehouse_without_tables_reports_zeros() -> None:
    with Warehouse(":memory:") as wh:
        report = quality_report(wh, now=NOW)
    _assert_all_zero(report)
    assert report.sources == ()


def test_configured_sources_without_data_report_zeros(
    make_project: Callable[..., Project],
) -> None:
    project = make_project(SOURCES)
    report = quality_report(project.warehouse, project.config, now=NOW)
    _assert_all_zero(report)
    crm = report.source("crm")
    assert (crm.rows_read, crm.rows, crm.duplicate_rate) == (0, 0, 0.0)
    assert report.rule("crm", "age", "max").rows_read == 0
    assert report.cell("crm", "email").coverage == 0.0


# --------------------------------------------------------------------------- runs


def test_saved_run_round_trips(project: Project, report: QualityReport) -> None:
    wh = project.warehouse
    run_id = save_run(wh, report)
    assert load_run(wh, run_id) == report
    runs = list_runs(wh)
    assert [r.run_id for r in runs] == [run_id]
    assert runs[0].run_at == NOW
    assert runs[0].overall_score == pytest.approx(report.overall_score)
    json.loads(report.to_json())  # plain JSON, no custom types


def test_unknown_run_is_a_user_error(project: Project) -> None:
    with pytest.raises(UserInputError, match="no quality run"):
        load_run(project.warehouse, "nope")


def test_compare_flags_drops_after_a_worse_file(
    project: Project, report: QualityReport, write: Callable[[str, str], Path]
) -> None:
    save_run(project.warehouse, report)
    write("data/customers_2.csv", CUSTOMERS_2)
    project.ingest()
    later = quality_report(project.warehouse, project.config, now=NOW)
    assert later.column("customers", "email", source="crm").completeness == 0.5  # 3 of 6

    changes = {(c.metric, c.source, c.column, c.rule): c for c in compare(report, later)}
    email = changes[("completeness", "crm", "email", None)]
    assert (email.before, email.after, email.worse) == (0.75, 0.5, True)
    age_min = changes[("validity", "crm", "age", "min")]
    assert age_min.before == 1.0
    assert age_min.after == pytest.approx(10 / 11)
    assert age_min.worse
    assert changes[("quarantine_rate", "crm", None, None)].worse
    assert changes[("score", None, None, None)].worse
    # age max went from 6/7 to 9/11: a drop of 0.039, under the default threshold of 0.05.
    assert ("validity", "crm", "age", "max") not in changes
    finer = compare(report, later, threshold=0.01)
    assert any(c.metric == "validity" and c.rule == "max" and c.worse for c in finer)
    # Orders did not change.
    assert not any(c.table == "orders" for c in changes.values())
    assert "completeness of customers.email [crm]: 75.0% -> 50.0%" in email.describe()
    assert compare(later, later) == []


def test_compare_rejects_a_bad_threshold(report: QualityReport) -> None:
    with pytest.raises(UserInputError):
        compare(report, report, threshold=2)


# --------------------------------------------------------------------------- properties

_rows = st.lists(
    st.tuples(
        st.sampled_from(["a", "b"]),
        st.none() | st.emails(),
        st.none() | st.integers(min_value=0, max_value=120),
        st.booleans(),  # whether age was imputed (only meaningful when age is set)
    ),
    max_size=12,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=_rows)
def test_completeness_matches_a_count_by_hand(
    rows: list[tuple[str, str | None, int | None, bool]],
) -> None:
    data = pa.table(
        {
            "customer_id": [f"c{i}" for i in range(len(rows))],
            "email": pa.array([r[1] for r in rows], pa.string()),
            "age": pa.array([r[2] for r in rows], pa.int64()),
            "_source": [r[0] for r in rows],
            "_imputed": pa.array(
                [["age"] if r[2] is not None and r[3] else None for r in rows],
                pa.list_(pa.string()),
            ),
        }
    )
    with Warehouse(":memory:") as wh:
        ensure_tables(wh)
        wh.register("frame", data)
        wh.execute("INSERT INTO customers BY NAME SELECT * FROM frame")
        report = quality_report(wh, now=NOW)
    for source in {r[0] for r in rows}:
        mine = [r for r in rows if r[0] == source]
        email = report.column("customers", "email", source=source)
        assert email.non_null == sum(r[1] is not None for r in mine)
        assert email.completeness == pytest.approx(email.non_null / len(mine))
        age = report.column("customers", "age", source=source)
        assert age.imputed == sum(r[2] is not None and r[3] for r in mine)
        assert age.observed <= age.completeness
        assert report.cell(source, "email").coverage == email.completeness
    for column in report.columns:
        assert 0.0 <= column.observed <= column.completeness <= 1.0
    assert 0.0 <= report.table("customers").score <= 1.0
    assert QualityReport.from_json(report.to_json()) == report
    assert compare(report, report) == []


# --------------------------------------------------------------------------- CLI


@pytest.fixture
def app() -> typer.Typer:
    app = typer.Typer(cls=_SegmintGroup)

    @app.callback()
    def _main() -> None:
        """segmint (test app)."""

    quality_cmd.register(app)
    return app


def test_cli_prints_tables_and_writes_the_report(
    app: typer.Typer, project: Project, tmp_path: Path
) -> None:
    project.close()
    out = tmp_path / "reports" / "q.json"
    result = CliRunner().invoke(app, ["quality", "--project", str(tmp_path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "inventory" in result.stdout and "freshness" in result.stdout
    written = QualityReport.from_json(out.read_text(encoding="utf-8"))
    assert written.source("crm").rows_read == 7
    with Project(tmp_path) as reopened:
        assert len(list_runs(reopened.warehouse)) == 1


def test_cli_json_default_path_and_compare(
    app: typer.Typer, project: Project, tmp_path: Path
) -> None:
    project.close()
    runner = CliRunner()
    first = runner.invoke(app, ["quality", "-p", str(tmp_path), "--json"])
    assert first.exit_code == 0, first.output
    payload = json.loads(first.stdout)
    assert Path(payload["file"]) == tmp_path / "quality" / f"quality-{payload['run_id']}.json"
    assert json.loads(Path(payload["file"]).read_text(encoding="utf-8")) == payload["report"]
    assert payload["changes"] is None

    second = runner.invoke(app, ["quality", "-p", str(tmp_path), "--json", "--compare"])
    assert second.exit_code == 0, second.output
    again = json.loads(second.stdout)
    assert again["previous_run_id"] == payload["run_id"]
    assert again["changes"] == []

    shown = runner.invoke(app, ["quality", "-p", str(tmp_path), "--compare"])
    assert shown.exit_code == 0, shown.output
    assert "no change beyond the threshold" in shown.stdout


def test_cli_bad_project_path_exits_with_2(app: typer.Typer, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["quality", "--project", str(tmp_path / "missing")])
    assert result.exit_code == 2
    assert "no project file" in result.stderr


def test_cli_bad_threshold_exits_with_2(app: typer.Typer, project: Project, tmp_path: Path) -> None:
    project.close()
    result = CliRunner().invoke(
        app, ["quality", "-p", str(tmp_path), "--compare", "--threshold", "5"]
    )
    assert result.exit_code == 2
    assert "threshold" in result.stderr


@pytest.mark.parametrize("second_source", [False, True])
def test_per_source_figures_add_up_to_the_table(
    make_project: Callable[..., Project], second_source: bool
) -> None:
    """One source is aggregated once, several with a total; both give the same figures."""
    sources = """
        sources:
          - name: crm
            kind: customers
            path: crm.csv
    """
    if second_source:
        sources += """
          - name: shop
            kind: customers
            path: shop.csv
        """
    project = make_project(
        sources,
        {
            "crm.csv": "customer_id,email,age\nc1,a@x.com,30\nc2,,40\n",
            "shop.csv": "customer_id,email,age\nc3,c@x.com,\nc4,d@x.com,20\n",
        },
    )
    project.ingest()
    report = quality_report(project.warehouse, project.config, now=NOW)
    crm = report.cell("crm", "email")
    assert (crm.rows, crm.coverage) == (2, 0.5)
    assert report.column("customers", "email", "crm").completeness == 0.5
    email = report.column("customers", "email")
    age = report.column("customers", "age")
    if second_source:
        assert (report.cell("shop", "email").rows, report.cell("shop", "age").coverage) == (2, 0.5)
        assert (email.completeness, age.completeness) == (0.75, 0.75)
    else:
        assert (email.completeness, age.completeness) == (0.5, 1.0)
