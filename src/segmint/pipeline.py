"""The batch pipeline: features -> fit (algorithm, k) -> validate -> explain -> score -> publish.

Fitting runs on a bounded in-memory sample; every customer is scored inside the engine
by the model compiled to SQL (DESIGN.md §4). Each stage is a function of its own so the
Python API can call them one by one; :func:`run_pipeline` chains them and records timings.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from segmint.config import Project as ProjectFile
from segmint.engine import Warehouse
from segmint.engine.dialect import quote
from segmint.features.clv_features import ClvResult, add_clv_features
from segmint.features.compute import FeatureSet, compute_features
from segmint.features.transforms import FeatureTransformer
from segmint.memory import peak_rss_mb, reset_peak_rss
from segmint.report_data import build_report_data
from segmint.segments import registry
from segmint.segments.estimators import UNASSIGNED, make_segmenter
from segmint.segments.explain import SurrogateTree, fit_surrogate_tree
from segmint.segments.naming import SegmentName, name_segments
from segmint.segments.population import FALLBACK_NAME, FALLBACK_SEGMENT, NEVER_IS_LONGEST
from segmint.segments.profiles import SegmentProfiles, profile_segments_sql
from segmint.segments.rule_segments import RuleSegmentResult, assign_rule_segments, field_types
from segmint.segments.rules import parse_rule
from segmint.segments.scoring import spec_from_model
from segmint.segments.selection import KSelection, select_k
from segmint.segments.validation import (
    SegmentWarning,
    StabilityResult,
    bootstrap_stability,
    segment_warnings,
    separation_tests,
)

logger = logging.getLogger(__name__)

SNAPSHOT_VIEW = "_pipeline_population"

# Clustered on by default when present: behaviour, not demographics.
DEFAULT_FEATURES = (
    "recency_days",
    "frequency",
    "monetary",
    "avg_order_value",
    "discount_share",
    "sessions",
    "product_views",
    "cart_adds",
    "email_open_rate",
    "days_since_last_visit",
    "tenure_days",
)
SELECTION_SAMPLE = 20_000
STABILITY_SAMPLE = 5_000
PROJECTION_SAMPLE = 3_000


@dataclass
class PipelineResult:
    """Everything one run produced; ``summary`` is the table users see first."""

    version: str
    algorithm: str
    k: int
    features: FeatureSet
    clv: ClvResult | None
    selection: KSelection | None
    stability: StabilityResult | None
    separation: pd.DataFrame
    warnings: list[SegmentWarning]
    profiles: SegmentProfiles
    names: dict[int, SegmentName]
    surrogate: SurrogateTree
    rule_segments: RuleSegmentResult | None
    summary: pd.DataFrame
    report_data: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    #: Peak resident memory of the process per stage, MB (empty where the OS cannot say).
    peak_memory_mb: dict[str, float] = field(default_factory=dict)


class _Stages:
    def __init__(self, on_stage: Callable[[str], None] | None) -> None:
        self.timings: dict[str, float] = {}
        self.peak_memory_mb: dict[str, float] = {}
        self.on_stage = on_stage

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        if self.on_stage is not None:
            self.on_stage(name)
        reset_peak_rss()
        started = time.perf_counter()
        yield
        self.timings[name] = round(time.perf_counter() - started, 3)
        peak = peak_rss_mb()
        if peak is not None:
            self.peak_memory_mb[name] = round(peak, 1)
        logger.info("stage %s took %.2fs (peak memory %s MB)", name, self.timings[name], peak)


def clustering_features(available: list[str], configured: list[str] | None) -> list[str]:
    """The configured features (all must exist), else the defaults that exist."""
    if configured:
        missing = [f for f in configured if f not in available]
        if missing:
            from segmint.errors import ConfigError

            raise ConfigError(
                f"unknown features {', '.join(missing)} (available: {', '.join(available)})",
                where="segmentation.features",
            )
        return list(configured)
    return [f for f in DEFAULT_FEATURES if f in available]


def run_pipeline(
    wh: Warehouse,
    config: ProjectFile,
    *,
    as_of: datetime | None = None,
    on_stage: Callable[[str], None] | None = None,
) -> PipelineResult:
    """Run every stage and publish a new model version; returns what it produced."""
    seg = config.segmentation
    stages = _Stages(on_stage)
    with stages.stage("features"):
        features = compute_features(
            wh,
            as_of=as_of,
            user_features=config.features.custom or None,
            session_gap_minutes=config.features.session_gap_minutes,
        )
    with stages.stage("clv"):
        clv = add_clv_features(
            wh,
            snapshot_id=features.snapshot_id,
            as_of=features.as_of,
            horizon_days=config.features.clv_horizon_days,
            sample_size=seg.sample_size,
            seed=seg.seed,
        )
    numeric = [c for c, kind in features.kinds.items() if kind == "numeric"]
    available = numeric + [c for c in clv.columns if clv.bgnbd is not None]
    columns = clustering_features(available, seg.features)
    fields = field_types(wh, features.table)
    fallback = parse_rule(seg.fallback_rule, fields)
    with stages.stage("sample"):
        _create_population(wh, features, fallback.to_sql())
        sample = (
            wh.df(
                f"SELECT * FROM {SNAPSHOT_VIEW} WHERE NOT _fallback "
                f"USING SAMPLE reservoir({int(seg.sample_size)} ROWS) REPEATABLE ({int(seg.seed)})"
            )
            .sort_values("customer_id", kind="stable")
            .reset_index(drop=True)
        )
        if len(sample) < max(seg.k_min * 5, 20):
            from segmint.errors import DataValidationError

            raise DataValidationError(
                f"only {len(sample)} customers have enough data to segment; ingest more data "
                f"or relax segmentation.fallback_rule"
            )
    with stages.stage("transform"):
        transformer = FeatureTransformer(scaling=seg.scaling, hints=features.transform_hints).fit(
            sample[columns]
        )
        X = np.asarray(transformer.transform(sample[columns]), dtype=float)
        input_names = list(transformer.get_feature_names_out())

    def make_estimator(k: int) -> Any:
        return make_segmenter(seg.algorithm, k, seg.seed)

    selection: KSelection | None = None
    k = seg.k
    with stages.stage("choose k"):
        if k is None and seg.algorithm not in ("hdbscan", "dbscan"):
            selection = select_k(
                X,
                make_estimator,
                k_range=range(seg.k_min, seg.k_max + 1),
                sample_size=SELECTION_SAMPLE,
                min_share=seg.min_share,
                max_k=seg.k_max,
                random_state=seg.seed,
            )
            k = selection.k
    with stages.stage("fit"):
        model = (
            make_segmenter(seg.algorithm, None, seg.seed) if k is None else make_estimator(k)
        ).fit(X)
        labels = np.asarray(model.predict(X))
        k = int(len(model.cluster_centers_))
    with stages.stage("validate"):
        stability = None
        if seg.bootstrap and seg.algorithm not in ("hdbscan", "dbscan"):
            stability = bootstrap_stability(
                X,
                make_estimator,
                k,
                n_boot=seg.bootstrap,
                sample_size=STABILITY_SAMPLE,
                random_state=seg.seed,
                base_model=model,
            )
        separation = separation_tests(sample[columns], labels, random_state=seg.seed)
    with stages.stage("explain"):
        surrogate = fit_surrogate_tree(
            sample[columns], labels, features=columns, random_state=seg.seed
        )
    with stages.stage("score"):
        spec = spec_from_model(model, feature_names=input_names)
        inputs = transformer.to_sql({c: quote(c) for c in columns})
        lineage = registry.Lineage(
            algorithm=seg.algorithm,
            parameters={
                "k": k,
                "sample_size": seg.sample_size,
                "min_share": seg.min_share,
                "k_range": [seg.k_min, seg.k_max],
                "fallback_rule": seg.fallback_rule,
                "estimator": model.get_params(),
            },
            seed=seg.seed,
            features={
                d.name: (d.query or d.sql()) for d in features.definitions if d.name in columns
            },
            transforms={n: str(v) for n, v in transformer.transforms_.items()},
            as_of=features.as_of.isoformat(),
            data_fingerprint=registry.data_fingerprint(wh, ["customers", "orders", "events"]),
            metrics=_metrics(selection, stability),
            extra={
                "snapshot_id": features.snapshot_id,
                "clv": clv.to_dict(),
                "surrogate_fidelity": surrogate.fidelity_.accuracy,
            },
        )
        provisional = {i: f"Segment {i}" for i in range(k)}
        version = registry.publish_version(
            wh,
            spec=spec,
            inputs=inputs,
            lineage=lineage,
            names=provisional,
            algorithm=seg.algorithm,
            k=k,
            source=SNAPSHOT_VIEW,
        )
        _assign_fallback(wh, version)
    with stages.stage("profile"):
        profiles = profile_segments_sql(
            wh,
            assignments_sql="SELECT customer_id, segment_id AS segment FROM "
            "segment_assignments WHERE model_version = ?",
            features_table=SNAPSHOT_VIEW,
            features=columns,
            params=[version],
            on=("customer_id",),
            revenue="monetary" if "monetary" in columns else None,
        )
        overrides = {i: n for i, n in seg.names.items()}
        overrides.setdefault(FALLBACK_SEGMENT, FALLBACK_NAME)
        names = name_segments(
            profiles, overrides={i: n for i, n in overrides.items() if i in profiles.segments}
        )
        registry.rename_segments(
            wh,
            version,
            {i: n.name for i, n in names.items()},
            {i: n.description for i, n in names.items()},
        )
        profiles = profiles.with_names({i: n.name for i, n in names.items()})
    with stages.stage("rules"):
        rule_result = (
            assign_rule_segments(
                wh, config.rule_segments, features, transformer, columns, seed=seg.seed
            )
            if config.rule_segments
            else None
        )
    _assign_merged_customers(wh, version)
    warnings = segment_warnings(_sizes(profiles), stability, separation, min_share=seg.min_share)
    summary = _summary(profiles, names, stability)
    result = PipelineResult(
        version=version,
        algorithm=seg.algorithm,
        k=k,
        features=features,
        clv=clv,
        selection=selection,
        stability=stability,
        separation=separation,
        warnings=warnings,
        profiles=profiles,
        names=names,
        surrogate=surrogate,
        rule_segments=rule_result,
        summary=summary,
        timings=stages.timings,
        peak_memory_mb=stages.peak_memory_mb,
    )
    wh.execute(f"DROP TABLE IF EXISTS {SNAPSHOT_VIEW}")
    logger.info("published %s with k=%d", version, k)
    result.report_data = build_report_data(
        wh, result, sample=sample, X=X, labels=labels, columns=columns
    )
    return result


def population_sql(features_table: str, columns: list[str]) -> str:
    """One snapshot's rows as the model sees them (bound parameter: the snapshot id)."""
    never = [c for c in NEVER_IS_LONGEST if c in columns]
    replace = ", ".join(
        f"coalesce({quote(c)}, max({quote(c)}) OVER ()) AS {quote(c)}" for c in never
    )
    star = f"* REPLACE ({replace})" if never else "*"
    return f"SELECT {star} FROM {quote(features_table)} WHERE snapshot_id = ?"


def _create_population(wh: Warehouse, features: FeatureSet, fallback_sql: str) -> None:
    """The snapshot's rows, flagged ``_fallback`` when they have too little data."""
    wh.execute(f"DROP TABLE IF EXISTS {SNAPSHOT_VIEW}")
    wh.execute(
        f"CREATE TEMP TABLE {SNAPSHOT_VIEW} AS SELECT *, coalesce(({fallback_sql}), false) "
        f"AS _fallback FROM ({population_sql(features.table, features.columns)})",
        [features.snapshot_id],
    )


def explain_customer(wh: Warehouse, customer_id: str, *, top: int = 5) -> dict[str, Any]:
    """Why a customer is in its segment under the active model: the features that pull it
    to its centroid rather than the runner-up's."""
    from segmint.errors import UserInputError
    from segmint.segments.explain import why_segment

    version = registry.active_version(wh)
    if version is None:
        raise UserInputError("no model version yet: run `segmint run` first")
    snapshot = version.lineage.extra.get("snapshot_id")
    raw_columns = list(version.lineage.features)
    inputs = ", ".join(f"({sql}) AS {quote(name)}" for name, sql in version.inputs.items())
    raw = ", ".join(quote(c) for c in raw_columns)
    rows = wh.fetchall(
        f"SELECT {inputs}, {raw} FROM ({population_sql('features', raw_columns)}) p "
        f"WHERE customer_id = ?",
        [snapshot, representative_of(wh, customer_id)],
    )
    if not rows:
        raise UserInputError(f"customer {customer_id!r} is not in the model's feature snapshot")
    n_inputs = len(version.inputs)
    x = np.array(rows[0][:n_inputs], dtype=float)
    raw_values = dict(zip(raw_columns, rows[0][n_inputs:], strict=True))
    assigned = wh.scalar(
        "SELECT segment_id FROM segment_assignments WHERE model_version = ? AND customer_id = ?",
        [version.version, customer_id],
    )
    names = {s: n.name for s, n in version.names.items()}
    if assigned is None or int(assigned) < 0 or version.spec.kind == "gaussian_mixture":
        return {
            "customer_id": customer_id,
            "segment": assigned,
            "segment_name": names.get(assigned) if assigned is not None else None,
            "text": "This customer is not placed by nearest centroid "
            "(fallback, unassigned or mixture model).",
        }
    explanation = why_segment(
        x,
        np.asarray(version.spec.centers, dtype=float),
        list(version.inputs),
        raw_values=raw_values,
        top=top,
        segment=int(assigned),
        segment_names=names,
    )
    return {
        "customer_id": customer_id,
        "segment_name": names.get(int(assigned)),
        "version": version.version,
        **explanation.to_dict(),
    }


def representative_of(wh: Warehouse, customer_id: str) -> str:
    """The customer id whose feature row stands for this customer's person (itself if none)."""
    rep = wh.scalar(
        "SELECT min(representative) FROM identifier_representative "
        "WHERE identifier_type = 'customer_id' AND identifier_value = ?",
        [customer_id],
    )
    return str(rep) if rep is not None else customer_id


def _assign_merged_customers(wh: Warehouse, version: str) -> None:
    """Customers merged into a person get their person's segment (scored once, on the
    representative's row; profiles count the person once)."""
    wh.execute(
        "INSERT INTO segment_assignments (customer_id, model_version, segment_id, segment_name, "
        "probability, distance, assigned_at) "
        "SELECT r.identifier_value, a.model_version, a.segment_id, a.segment_name, "
        "a.probability, a.distance, a.assigned_at FROM segment_assignments a "
        "JOIN identifier_representative r ON r.representative = a.customer_id "
        "AND r.identifier_type = 'customer_id' AND r.identifier_value <> r.representative "
        "WHERE a.model_version = ?",
        [version],
    )


def _assign_fallback(wh: Warehouse, version: str) -> None:
    """Customers with too little data were not scored: give them the fallback segment."""
    wh.execute(
        "DELETE FROM segment_assignments WHERE model_version = ? AND customer_id IN "
        f"(SELECT customer_id FROM {SNAPSHOT_VIEW} WHERE _fallback)",
        [version],
    )
    wh.execute(
        "INSERT INTO segment_assignments (customer_id, model_version, segment_id, segment_name, "
        f"probability, distance, assigned_at) SELECT customer_id, ?, ?, ?, NULL, NULL, ? "
        f"FROM {SNAPSHOT_VIEW} WHERE _fallback",
        [version, FALLBACK_SEGMENT, FALLBACK_NAME, datetime.now(UTC).replace(tzinfo=None)],
    )


def _metrics(selection: KSelection | None, stability: StabilityResult | None) -> dict[str, Any]:
    metrics: dict[str, Any] = {}
    if selection is not None:
        row: dict[Any, Any] = selection.metrics.loc[selection.k].to_dict()
        metrics.update(
            {
                f"{m}": float(row[m])
                for m in ("silhouette", "calinski_harabasz", "davies_bouldin", "min_share")
            }
        )
        metrics["k_reason"] = selection.reason
    if stability is not None:
        metrics["bootstrap_mean_ari"] = float(stability.mean_ari)
        metrics["bootstrap_mean_jaccard"] = {
            str(s.segment): float(s.mean_jaccard) for s in stability.segments
        }
    return metrics


def _sizes(profiles: SegmentProfiles) -> dict[int, int]:
    records: list[dict[Any, Any]] = profiles.table.to_dict("records")
    return {int(r["segment_id"]): int(r["size"]) for r in records if int(r["segment_id"]) >= 0}


def _summary(
    profiles: SegmentProfiles, names: dict[int, SegmentName], stability: StabilityResult | None
) -> pd.DataFrame:
    verdicts = {s.segment: s.verdict for s in stability.segments} if stability else {}
    jaccard = {s.segment: s.mean_jaccard for s in stability.segments} if stability else {}
    rows = []
    records: list[dict[Any, Any]] = profiles.table.to_dict("records")
    for r in records:
        sid = int(r["segment_id"])
        rows.append(
            {
                "segment": sid,
                "name": names[sid].name if sid in names else profiles.name_of(sid),
                "size": int(r["size"]),
                "share": float(r["share"]),
                "revenue_share": float(r["revenue_share"])
                if r["revenue_share"] == r["revenue_share"]
                else None,
                "stability": (
                    f"{jaccard[sid]:.2f} {verdicts[sid]}"
                    if sid in verdicts
                    else ("-" if sid in (UNASSIGNED, FALLBACK_SEGMENT) else "n/a")
                ),
            }
        )
    return pd.DataFrame(rows)
