"""Assemble the report's data (a JSON-serialisable dict) from a pipeline run.

Everything here works on bounded samples (silhouette, projection, distributions) so the
report's cost does not grow with the number of customers.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sklearn.decomposition import PCA
from sklearn.metrics import silhouette_samples

from segmint.data.quality import quality_report
from segmint.engine import Warehouse
from segmint.segments import registry

if TYPE_CHECKING:
    from segmint.pipeline import PipelineResult

REPORT_SAMPLE = 3_000
DISTRIBUTION_SAMPLE = 2_000


def _clean(value: Any) -> Any:
    """NaN/inf -> None and numpy scalars -> Python, recursively."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def build_report_data(
    wh: Warehouse,
    result: PipelineResult,
    *,
    sample: pd.DataFrame,
    X: np.ndarray,
    labels: np.ndarray,
    columns: list[str],
) -> dict[str, Any]:
    """The report contract of :func:`segmint.report.write_report` for one run."""
    version = registry.get_version(wh, result.version)
    name_of = {sid: n.name for sid, n in result.names.items()}
    rng = np.random.default_rng(0)
    rows = rng.choice(len(X), size=min(len(X), REPORT_SAMPLE), replace=False)
    rows.sort()
    data: dict[str, Any] = {
        "title": "segmint segmentation report",
        "generated_at": version.created_at.isoformat() if version.created_at else None,
        "model": {
            "version": result.version,
            "algorithm": result.algorithm,
            "k": result.k,
            "as_of": result.features.as_of.isoformat(),
            "lineage": version.lineage.to_dict(),
            "timings": result.timings,
        },
        "quality": quality_report(wh).to_dict(),
        "features": {
            "dictionary": result.features.dictionary()[
                ["name", "description", "sql", "transform"]
            ].to_dict("records"),
            "samples": {
                c: sample[c].dropna().astype(float).head(DISTRIBUTION_SAMPLE).tolist()
                for c in columns
            },
        },
        "k_selection": result.selection.to_dict() if result.selection else None,
        "stability": _stability(result, name_of),
        "segments": _segments(result, name_of),
        "profile": {
            "features": columns,
            "segments": [name_of.get(s, str(s)) for s in result.profiles.zscores.index],
            "zscores": result.profiles.zscores[columns].to_numpy().tolist(),
            "means": result.profiles.feature_means[columns].to_numpy().tolist(),
        },
        "explanation": {
            "fidelity": result.surrogate.fidelity_.accuracy,
            "depth": int(result.surrogate.estimator_.get_depth()),
            "rules": {
                name_of.get(int(seg), str(seg)): [r.text for r in rules]
                for seg, rules in result.surrogate.rules_.items()
            },
        },
        "separation": result.separation.reset_index()
        .rename(columns={"index": "feature"})
        .to_dict("records"),
        "warnings": [w.to_dict() for w in result.warnings],
        "migration": _migration(wh, version, name_of),
    }
    if len(set(labels[rows])) > 1:
        silhouettes = silhouette_samples(X[rows], labels[rows])
        data["silhouette"] = {
            "mean": float(silhouettes.mean()),
            "per_segment": {
                name_of.get(int(s), str(s)): silhouettes[labels[rows] == s].tolist()
                for s in sorted(set(labels[rows].tolist()))
            },
        }
        points = PCA(n_components=2, random_state=0).fit_transform(X[rows])
        data["projection"] = {
            "x": points[:, 0].tolist(),
            "y": points[:, 1].tolist(),
            "segment": [name_of.get(int(s), str(s)) for s in labels[rows]],
            "method": "PCA",
        }
    return _clean(data)


def _stability(result: PipelineResult, name_of: dict[int, str]) -> dict[str, Any] | None:
    if result.stability is None:
        return None
    return {
        "mean_ari": result.stability.mean_ari,
        "segments": [
            {
                "segment": s.segment,
                "name": name_of.get(s.segment, str(s.segment)),
                "mean_jaccard": s.mean_jaccard,
                "verdict": s.verdict,
            }
            for s in result.stability.segments
        ],
    }


def _segments(result: PipelineResult, name_of: dict[int, str]) -> list[dict[str, Any]]:
    verdicts = {s.segment: s.verdict for s in result.stability.segments} if result.stability else {}
    out = []
    records: list[dict[Any, Any]] = result.profiles.table.to_dict("records")
    for row in records:
        sid = int(row["segment_id"])
        out.append(
            {
                "id": sid,
                "name": name_of.get(sid, str(sid)),
                "description": result.names[sid].description if sid in result.names else "",
                "size": int(row["size"]),
                "share": float(row["share"]),
                "revenue_share": float(row["revenue_share"]),
                "stability": verdicts.get(sid),
                "drivers": [
                    {"feature": d.feature, "zscore": d.zscore, "direction": d.direction}
                    for d in result.profiles.drivers.get(sid, [])
                ],
                "rules": [r.text for r in result.surrogate.rules_.get(sid, [])],
            }
        )
    return out


def _migration(
    wh: Warehouse, version: registry.ModelVersion, name_of: dict[int, str]
) -> dict[str, Any] | None:
    if not version.parent_version:
        return None
    matrix = registry.migration_matrix(wh, version.parent_version, version.version)
    previous = registry.get_version(wh, version.parent_version)

    def label(value: Any, names: Any) -> str:
        return str(names(int(value))) if isinstance(value, int | np.integer) else str(value)

    return {
        "from": version.parent_version,
        "to": version.version,
        "rows": [label(v, previous.name_of) for v in matrix.index],
        "columns": [label(v, lambda s: name_of.get(s, version.name_of(s))) for v in matrix.columns],
        "counts": matrix.to_numpy().astype(int).tolist(),
    }
