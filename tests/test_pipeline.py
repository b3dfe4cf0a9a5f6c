"""The whole pipeline on generated data: planted segments recovered, versions, report, rules."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from sklearn.metrics import adjusted_rand_score

from segmint.cli.common import EXIT_USER_ERROR
from segmint.data.demo import write_demo_project
from segmint.data.synthetic import generate
from segmint.project import Project
from segmint.segments import registry


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pipeline")
    data = generate(folder / "data", customers=3_000, seed=11, fmt="csv")
    path = write_demo_project(data.files, folder)
    with path.open("a") as handle:
        handle.write(
            "segmentation:\n  k_max: 8\n  bootstrap: 5\n"
            "rule_segments:\n"
            "  - name: High Value\n    rule: monetary >= 1000 AND recency_days < 60\n"
            "  - name: Browsers\n    rule: frequency = 0 AND sessions > 0\n    subdivide: 2\n"
        )
    project = Project(path)
    project.ingest()
    result = project.run()
    yield project, result, data
    project.close()


def test_planted_segments_are_recovered(demo):
    project, result, data = demo
    truth = pd.read_csv(data.files["truth"])
    assigned = project.assignments().merge(truth, on="customer_id")
    assert len(assigned) >= 0.95 * len(truth)  # the rest were quarantined as dirt
    score = adjusted_rand_score(assigned["segment"], assigned["segment_id"])
    assert score >= 0.9, f"adjusted Rand index {score:.3f}"
    assert result.k == 6


@pytest.mark.skipif(__import__("sys").platform != "linux", reason="peaks read from /proc")
def test_every_stage_reports_its_time_and_peak_memory(demo):
    _, result, _ = demo
    assert set(result.peak_memory_mb) == set(result.timings) >= {"features", "fit", "score"}
    assert all(peak > 0 for peak in result.peak_memory_mb.values())


def test_every_customer_gets_a_named_segment(demo):
    project, result, _ = demo
    customers = project.warehouse.scalar("SELECT count(*) FROM customers")
    assignments = project.assignments()
    assert len(assignments) == customers
    assert assignments["segment_name"].notna().all()
    names = result.summary["name"].tolist()
    assert len(set(names)) == len(names)
    assert abs(result.summary["share"].sum() - 1) < 1e-9


def test_in_engine_scoring_matches_the_model_on_the_sample(demo):
    project, result, _ = demo
    version = registry.get_version(project.warehouse, result.version)
    sizes = registry.segment_sizes(project.warehouse, result.version)
    assert sum(sizes.values()) == len(project.assignments())
    assert version.lineage.to_dict()["seed"] == 0
    assert "numpy" in version.lineage.to_dict()["libraries"]


def test_rule_and_hierarchical_segments(demo):
    project, result, _ = demo
    members = project.warehouse.df(
        "SELECT segment, parent, count(*) AS n FROM rule_segment_members GROUP BY ALL"
    )
    sizes = dict(zip(members["segment"], members["n"], strict=True))
    assert sizes["High Value"] == project.warehouse.scalar(
        "SELECT count(*) FROM features WHERE snapshot_id = ? AND monetary >= 1000 "
        "AND recency_days < 60",
        [result.features.snapshot_id],
    )
    children = members[members["parent"] == "Browsers"]
    assert set(children["segment"]) == {"Browsers 1", "Browsers 2"}
    assert children["n"].sum() == sizes["Browsers"]


def test_report_models_and_rollback_from_the_cli(demo, cli, tmp_path):
    project, result, _ = demo
    folder = project.base_dir
    out = tmp_path / "report.html"
    cli("report", "--project", folder, "--out", out)
    html = out.read_text()
    assert "<script src=" not in html and result.profiles.name_of(0) in html
    second = project.run()
    assert second.version != result.version
    migration = json.loads(
        cli(
            "models", "migration", result.version, second.version, "--project", folder, "--json"
        ).stdout
    )
    assert sum(map(sum, migration["data"])) == len(project.assignments())
    cli("models", "rollback", result.version, "--project", folder)
    assert registry.active_version(project.warehouse).version == result.version
    cli("models", "rollback", "v9999", "--project", folder, exit_code=EXIT_USER_ERROR)
    assert "v0001" in cli("models", "list", "--project", folder).stdout


def test_why_a_customer_is_in_their_segment(demo, cli):
    project, result, _ = demo
    active = registry.active_version(project.warehouse).version
    assigned = project.warehouse.df(
        "SELECT customer_id, segment_id, segment_name FROM segment_assignments "
        "WHERE model_version = ? AND segment_id >= 0 ORDER BY customer_id LIMIT 3",
        [active],
    )
    for row in assigned.itertuples():
        answer = project.why(row.customer_id)
        assert answer["segment"] == row.segment_id
        assert answer["text"].startswith(f"In {row.segment_name}")
        assert answer["margin"] >= 0
    out = cli("why", assigned.customer_id[0], "--project", project.base_dir, "--json").stdout
    assert json.loads(out)["customer_id"] == assigned.customer_id[0]
    cli("why", "nobody", "--project", project.base_dir, exit_code=EXIT_USER_ERROR)
