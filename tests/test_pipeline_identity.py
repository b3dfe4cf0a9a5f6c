"""Features and segments follow identity resolution: a merge joins, an unmerge splits."""

from __future__ import annotations

import pytest

from segmint.data.demo import write_demo_project
from segmint.data.identity import merge_persons, person_of, resolve_identities, unmerge
from segmint.data.synthetic import generate
from segmint.project import Project


def _segments(project: Project) -> dict[str, int]:
    frame = project.assignments()
    return dict(zip(frame["customer_id"], frame["segment_id"], strict=True))


def _snapshot(project: Project, snapshot_id: str) -> dict[str, tuple[float, float]]:
    rows = project.warehouse.fetchall(
        "SELECT customer_id, frequency, monetary FROM features WHERE snapshot_id = ?",
        [snapshot_id],
    )
    return {c: (float(freq), round(float(money), 6)) for c, freq, money in rows}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    folder = tmp_path_factory.mktemp("identity_pipeline")
    data = generate(folder / "data", customers=1_200, seed=5, fmt="csv")
    path = write_demo_project(data.files, folder)
    with path.open("a") as handle:
        handle.write("segmentation:\n  k: 4\n  bootstrap: 0\n")
    proj = Project(path)
    proj.ingest()
    resolve_identities(proj.warehouse)
    yield proj
    proj.close()


def test_merge_joins_features_and_segments_and_unmerge_restores_them(project):
    wh = project.warehouse
    first = project.run()
    before = _segments(project)
    features = _snapshot(project, first.features.snapshot_id)
    buyers = sorted(c for c, (freq, _) in features.items() if freq > 0)
    by_segment: dict[int, str] = {}
    for customer in buyers:
        by_segment.setdefault(before[customer], customer)
    a, b = sorted(list(by_segment.values())[:2])
    assert before[a] != before[b]

    record = merge_persons(
        wh, person_of(wh, "customer_id", a), person_of(wh, "customer_id", b), reason="test"
    )
    merged_run = project.run()
    merged = _snapshot(project, merged_run.features.snapshot_id)
    assert b not in merged  # one feature row per person, keyed by its smallest customer id
    assert merged[a][0] == pytest.approx(features[a][0] + features[b][0])
    assert merged[a][1] == pytest.approx(features[a][1] + features[b][1])
    after_merge = _segments(project)
    assert after_merge[a] == after_merge[b]
    assert set(after_merge) == set(before)  # every customer still has a segment

    unmerge(wh, record.merge_id)
    split_run = project.run()
    assert _snapshot(project, split_run.features.snapshot_id) == features
    assert _segments(project) == before
