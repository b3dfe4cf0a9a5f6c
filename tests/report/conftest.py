"""Realistic fake report data, shaped like the pipeline's output (the report data contract)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

SEGMENTS = (
    ("Loyal big spenders", "Frequent buyers with high basket values who bought recently."),
    ("New customers", "Joined in the last two months; one or two orders so far."),
    ("At-risk regulars", "Used to buy monthly; nothing for three months."),
    ("Bargain hunters", "Buy mostly on discount, open most promotional emails."),
    ("Dormant", "No order and no visit for more than a year."),
    ("Occasional browsers", "Visit often, rarely buy."),
)
FEATURES = (
    "recency_days",
    "frequency",
    "monetary",
    "avg_order_value",
    "tenure_days",
    "sessions_30d",
    "email_open_rate",
    "discount_share",
)
#: A segment name that would run a script if it reached the page unescaped.
XSS = "<script>alert(1)</script>"
#: The charts a complete report has.
CHART_IDS = (
    "chart-segment-sizes",
    "chart-migration",
    "chart-features",
    "chart-k-selection",
    "chart-profile",
    "chart-projection",
    "chart-silhouette",
    "chart-stability",
)


def _r(value: float, digits: int = 4) -> float:
    return round(float(value), digits)


def _feature_samples(rng: np.random.Generator, n: int) -> dict[str, list[float]]:
    draws = {
        "recency_days": rng.exponential(90, n),
        "frequency": rng.poisson(3, n) + 1,
        "monetary": rng.lognormal(5, 1.2, n),  # long upper tail
        "avg_order_value": rng.lognormal(3.8, 0.5, n),
        "tenure_days": rng.uniform(10, 1500, n),
        "sessions_30d": rng.poisson(4, n),
        "email_open_rate": rng.beta(2, 5, n),
        "discount_share": rng.beta(1, 3, n),
    }
    return {name: [_r(v) for v in values] for name, values in draws.items()}


def make_report_data(seed: int = 7, *, names: tuple[str, ...] | None = None) -> dict[str, Any]:
    """A complete report-data dict for 6 segments (names replaceable), JSON round-tripped."""
    rng = np.random.default_rng(seed)
    names = names or tuple(name for name, _ in SEGMENTS)
    k = len(names)
    descriptions = [SEGMENTS[i % len(SEGMENTS)][1] for i in range(k)]
    sizes = rng.integers(800, 15_000, k)
    sizes[-1] = 300  # one small segment
    shares = sizes / sizes.sum()
    revenue = rng.dirichlet(np.ones(k) * 2)
    jaccard = np.clip(rng.uniform(0.78, 0.95, k), 0, 1)
    jaccard[1 : min(k, 3)] = (0.66, 0.52)[: min(k, 3) - 1]  # one doubtful, one unstable
    verdicts = ["stable" if j >= 0.75 else "doubtful" if j >= 0.6 else "unstable" for j in jaccard]
    zscores = rng.normal(0, 1.1, (k, len(FEATURES)))
    means = rng.lognormal(2, 1, (k, len(FEATURES)))
    segments = []
    rules: dict[str, list[str]] = {}
    for i, name in enumerate(names):
        order = np.argsort(-np.abs(zscores[i]))[:4]
        drivers = [
            {
                "feature": FEATURES[j],
                "zscore": _r(zscores[i, j], 3),
                "direction": "high" if zscores[i, j] > 0 else "low",
            }
            for j in order
        ]
        rules[name] = [
            f"{FEATURES[order[0]]} {'>' if zscores[i, order[0]] > 0 else '<='} {10 * (i + 1)}"
            f" AND {FEATURES[order[1]]} <= {5 + i}",
            f"{FEATURES[order[2]]} > {i + 0.5}",
        ]
        segments.append(
            {
                "id": i,
                "name": name,
                "description": descriptions[i],
                "size": int(sizes[i]),
                "share": _r(shares[i]),
                "revenue_share": _r(revenue[i]),
                "stability": verdicts[i],
                "drivers": drivers,
                "rules": rules[name],
            }
        )
    ks = list(range(2, 11))
    metrics = []
    for kk in ks:
        metrics.append(
            {
                "k": kk,
                "silhouette": _r(0.42 - 0.012 * (kk - k) ** 2 + rng.normal(0, 0.005)),
                "inertia": _r(1e6 / kk**0.9),
                "calinski_harabasz": _r(5000 - 120 * (kk - k) ** 2),
                "davies_bouldin": _r(0.9 + 0.03 * (kk - k) ** 2),
                "bic": None,
                "min_share": _r(0.3 / kk),
                "eligible": True,
            }
        )
    centres = rng.normal(0, 3, (k, 2))
    per_point = 250
    projection_segments = [names[i] for i in range(k) for _ in range(per_point)]
    xy = np.concatenate([rng.normal(centres[i], 1.0, (per_point, 2)) for i in range(k)])
    kept = min(k, 4)
    old_names = [*names[:kept], "Lapsed VIPs"]
    counts = rng.integers(0, 300, (len(old_names), k))
    for i in range(kept):
        counts[i, i] += 4000
    data: dict[str, Any] = {
        "title": "Customer segments — spring review",
        "generated_at": "2026-11-23T20:15:00+00:00",
        "model": {
            "version": "v0003",
            "algorithm": "kmeans",
            "k": k,
            "as_of": "2026-11-22",
            "seed": 0,
            "lineage": {
                "training_window": {"start": "2025-11-22", "end": "2026-11-22"},
                "data_fingerprint": "sha256:9f2c4e",
                "features": list(FEATURES),
                "parameters": {"n_init": 10, "max_iter": 300},
                "library_versions": {"segmint": "0.1.0", "scikit-learn": "1.6.1"},
            },
        },
        "quality": {
            "generated_at": "2026-11-23T20:00:00",
            "overall_score": 0.912,
            "version": 1,
            "sources": [
                {
                    "source": "crm",
                    "table": "customers",
                    "files": 1,
                    "rows_read": 52000,
                    "rows_loaded": 51200,
                    "rows_quarantined": 420,
                    "rows_duplicate": 380,
                    "rows": 51200,
                    "quarantine_rate": 0.0081,
                    "duplicate_rate": 0.0073,
                    "last_load_at": "2026-11-23T19:00:00",
                },
                {
                    "source": "shop",
                    "table": "orders",
                    "files": 3,
                    "rows_read": 310000,
                    "rows_loaded": 309100,
                    "rows_quarantined": 900,
                    "rows_duplicate": 0,
                },
            ],
            "tables": [
                {
                    "table": "customers",
                    "rows": 51200,
                    "score": 0.93,
                    "completeness": 0.94,
                    "validity": 0.99,
                    "scored_columns": ["email", "phone"],
                },
                {
                    "table": "orders",
                    "rows": 309100,
                    "score": 0.89,
                    "completeness": 0.9,
                    "validity": 0.99,
                },
            ],
            "quarantine": [
                {
                    "source": "crm",
                    "table": "customers",
                    "rule": "regex",
                    "column": "email",
                    "rows": 400,
                },
                {
                    "source": "crm",
                    "table": "customers",
                    "rule": "malformed",
                    "column": None,
                    "rows": 20,
                },
                {
                    "source": "shop",
                    "table": "orders",
                    "rule": "min",
                    "column": "amount",
                    "rows": 900,
                },
            ],
            "columns": [],
        },
        "features": {
            "dictionary": [
                {
                    "name": name,
                    "description": f"The customer's {name.replace('_', ' ')}.",
                    "sql": f"SELECT person_id, {name} FROM features WHERE {name} IS NOT NULL",
                    "transform": "log1p + standardise" if name == "monetary" else "standardise",
                }
                for name in FEATURES
            ],
            "samples": _feature_samples(rng, 2000),
        },
        "k_selection": {
            "k": k,
            "reason": f"k={k} has the best silhouette among k with every segment above 2%",
            "elbow_k": k - 1,
            "criterion": "silhouette",
            "metrics": metrics,
        },
        "silhouette": {
            "per_segment": {
                name: [
                    _r(v) for v in np.clip(rng.normal(0.45 - 0.05 * i, 0.15, 400 + 100 * i), -1, 1)
                ]
                for i, name in enumerate(names)
            },
            "mean": 0.38,
        },
        "stability": {
            "mean_ari": 0.81,
            "segments": [
                {"segment": i, "name": name, "mean_jaccard": _r(jaccard[i]), "verdict": verdicts[i]}
                for i, name in enumerate(names)
            ],
        },
        "segments": segments,
        "profile": {
            "features": list(FEATURES),
            "segments": list(names),
            "zscores": [[_r(v, 3) for v in row] for row in zscores],
            "means": [[_r(v, 3) for v in row] for row in means],
        },
        "projection": {
            "x": [_r(v) for v in xy[:, 0]],
            "y": [_r(v) for v in xy[:, 1]],
            "segment": projection_segments,
            "method": "PCA",
        },
        "explanation": {"fidelity": 0.934, "depth": 3, "rules": rules},
        "separation": [
            {
                "feature": name,
                "kruskal_h": _r(rng.uniform(5, 4000), 2),
                "kruskal_p": float(10 ** -rng.uniform(1, 30)),
                "epsilon_squared": _r(rng.uniform(0.001, 0.6)),
                "separating": bool(i % 4),
            }
            for i, name in enumerate(FEATURES)
        ],
        "warnings": [
            {
                "code": "unstable",
                "segment": 2,
                "message": "This segment changes a lot between resamples; do not target it yet.",
            },
            {
                "code": "too_small",
                "segment": k - 1,
                "message": "Fewer than 2% of customers; results for it are noisy.",
            },
        ],
        "migration": {
            "from": "v0002",
            "to": "v0003",
            "rows": old_names,
            "columns": list(names),
            "counts": counts.tolist(),
        },
    }
    return json.loads(json.dumps(data))


def make_hostile_data() -> dict[str, Any]:
    """Complete report data whose every user-provided text tries to inject markup."""
    names = (XSS, '"><img src=x onerror=alert(2)>', "<b>Bold</b> & co", "Normal", "O'Brien", "$x$")
    data = make_report_data(names=names)
    data["title"] = "<script>alert('title')</script>"
    data["segments"][3]["description"] = "</p><script>alert(3)</script>"
    data["segments"][3]["rules"] = ["x > 1 </code><script>alert(4)</script>"]
    data["features"]["dictionary"][0]["sql"] = "SELECT 1 </pre><script>alert(5)</script>"
    data["warnings"][0]["message"] = "<img src=x onerror=alert(6)>"
    data["quality"]["sources"][0]["source"] = "<iframe src=//evil.example>"
    data["model"]["lineage"]["note"] = "<a href='https://evil.example'>x</a>"
    data["features"]["samples"]["<svg onload=alert(7)>"] = [1.0, 2.0, 3.0]
    return data


@pytest.fixture(scope="session")
def report_data() -> dict[str, Any]:
    """A complete report for six segments; copy before changing it."""
    return make_report_data()
