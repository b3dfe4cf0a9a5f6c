"""View builders for the technical sections: quality, features, k, validation, explanation.

Each builder takes the raw (JSON-like) value of its key and returns a view-model
object, or ``None`` when the value is missing, so the template says "not available".
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from segmint.errors import UserInputError
from segmint.report._coerce import flag, integer, items, mapping, number, numbers, text, texts
from segmint.report.business import verdict
from segmint.report.formatting import MISSING, fmt_int, fmt_num, fmt_pct
from segmint.report.viewmodel import (
    Column,
    Explanation,
    FeatureDef,
    Features,
    KSelection,
    MetricRow,
    ModelInfo,
    Profile,
    Projection,
    Quality,
    Separation,
    Silhouette,
    Stability,
    StabilityRow,
    Table,
)
from segmint.segments.validation import stability_verdict

#: Clustering metrics shown for k selection: key -> (label, how to read it).
METRICS: dict[str, tuple[str, str]] = {
    "silhouette": ("Silhouette", "higher is better"),
    "calinski_harabasz": ("Calinski-Harabasz", "higher is better"),
    "davies_bouldin": ("Davies-Bouldin", "lower is better"),
    "inertia": ("Inertia", "look for the elbow"),
    "bic": ("BIC", "lower is better"),
    "min_share": ("Smallest segment share", "must stay above the size floor"),
}


def _rows(raw: Any, where: str) -> list[tuple[str, Mapping[str, Any]]]:
    """The mappings of a list with their key paths (``None`` entries skipped)."""
    result = []
    for i, entry in enumerate(items(raw, where) or []):
        row = mapping(entry, f"{where}[{i}]")
        if row is not None:
            result.append((f"{where}[{i}]", row))
    return result


def _cell(row: Mapping[str, Any], key: str, where: str, kind: str) -> str:
    value = row.get(key)
    if kind == "int":
        return fmt_int(integer(value, f"{where}.{key}"))
    if kind == "pct":
        return fmt_pct(number(value, f"{where}.{key}"))
    if kind == "num":
        return fmt_num(number(value, f"{where}.{key}"))
    return text(value, f"{where}.{key}") or MISSING


def _table(raw: Any, where: str, spec: tuple[tuple[str, str, str], ...]) -> Table | None:
    """A table of a list of records; ``spec`` is (key, header, int|pct|num|text) per column."""
    if items(raw, where) is None:
        return None
    records = _rows(raw, where)
    return Table(
        columns=tuple(
            Column(label, "text" if kind == "text" else "num") for _, label, kind in spec
        ),
        rows=tuple(
            tuple(_cell(row, key, here, kind) for key, _, kind in spec) for here, row in records
        ),
    )


def build_quality(raw: Any) -> Quality | None:
    """Read ``data["quality"]`` (a data-quality report dict; extra keys are ignored).

    Examples
    --------
    >>> q = build_quality({"overall_score": 0.93, "tables": [{"table": "orders", "score": 0.9}]})
    >>> q.overall_score, q.tables.rows[0][:2]
    (0.93, ('orders', '90.0%'))
    """
    quality = mapping(raw, "report.quality")
    if quality is None:
        return None
    sources = _rows(quality.get("sources"), "report.quality.sources")
    source_table = None
    if items(quality.get("sources"), "report.quality.sources") is not None:
        body = []
        for where, row in sources:
            read = integer(row.get("rows_read"), f"{where}.rows_read")
            quarantined = integer(row.get("rows_quarantined"), f"{where}.rows_quarantined")
            rate = number(row.get("quarantine_rate"), f"{where}.quarantine_rate")
            if rate is None and read and quarantined is not None:
                rate = quarantined / read
            body.append(
                (
                    text(row.get("source"), f"{where}.source") or MISSING,
                    text(row.get("table"), f"{where}.table") or MISSING,
                    fmt_int(read),
                    _cell(row, "rows_loaded", where, "int"),
                    fmt_int(quarantined),
                    _cell(row, "rows_duplicate", where, "int"),
                    fmt_pct(rate),
                )
            )
        source_table = Table(
            columns=(
                Column("Source"),
                Column("Table"),
                Column("Rows read", "num"),
                Column("Loaded", "num"),
                Column("Quarantined", "num"),
                Column("Duplicates", "num"),
                Column("Quarantine rate", "num"),
            ),
            rows=tuple(body),
        )
    return Quality(
        overall_score=number(quality.get("overall_score"), "report.quality.overall_score"),
        sources=source_table,
        tables=_table(
            quality.get("tables"),
            "report.quality.tables",
            (
                ("table", "Table", "text"),
                ("score", "Score", "pct"),
                ("rows", "Rows", "int"),
                ("completeness", "Completeness", "pct"),
                ("validity", "Validity", "pct"),
            ),
        ),
        quarantine=_table(
            quality.get("quarantine"),
            "report.quality.quarantine",
            (
                ("source", "Source", "text"),
                ("rule", "Rule", "text"),
                ("column", "Column", "text"),
                ("rows", "Rows", "int"),
            ),
        ),
    )


def build_features(raw: Any) -> Features | None:
    """Read ``data["features"]``: the dictionary and per-feature value samples.

    Examples
    --------
    >>> f = build_features({"samples": {"recency_days": [1, 5, None, 9]}})
    >>> f.samples, f.dictionary
    ({'recency_days': [1.0, 5.0, 9.0]}, None)
    """
    features = mapping(raw, "report.features")
    if features is None:
        return None
    dictionary = None
    if items(features.get("dictionary"), "report.features.dictionary") is not None:
        dictionary = tuple(
            FeatureDef(
                name=text(row.get("name"), f"{where}.name") or MISSING,
                description=text(row.get("description"), f"{where}.description"),
                sql=text(row.get("sql"), f"{where}.sql"),
                transform=text(row.get("transform"), f"{where}.transform"),
            )
            for where, row in _rows(features.get("dictionary"), "report.features.dictionary")
        )
    samples = None
    raw_samples = mapping(features.get("samples"), "report.features.samples")
    if raw_samples is not None:
        samples = {}
        for name, values in raw_samples.items():
            finite = numbers(values, f"report.features.samples.{name}") or []
            kept = [v for v in finite if v is not None]
            if kept:
                samples[str(name)] = kept
    if dictionary is None and samples is None:
        return None
    return Features(dictionary=dictionary, samples=samples)


def build_k_selection(raw: Any) -> KSelection | None:
    """Read ``data["k_selection"]``: the chosen k, why, and the metrics per k.

    Examples
    --------
    >>> ks = build_k_selection({"k": 3, "metrics": [{"k": 2, "silhouette": 0.4},
    ...                                             {"k": 3, "silhouette": 0.5}]})
    >>> [m.k for m in ks.metrics], ks.table.rows[1]
    ([2, 3], ('3', '0.500', 'chosen'))
    """
    selection = mapping(raw, "report.k_selection")
    if selection is None:
        return None
    k = integer(selection.get("k"), "report.k_selection.k")
    elbow = integer(selection.get("elbow_k"), "report.k_selection.elbow_k")
    metrics = []
    for where, row in _rows(selection.get("metrics"), "report.k_selection.metrics"):
        row_k = integer(row.get("k"), f"{where}.k")
        if row_k is None:
            raise UserInputError("every metrics row needs its k", where=f"{where}.k")
        values = {key: number(row.get(key), f"{where}.{key}") for key in METRICS}
        metrics.append(MetricRow(row_k, values))
    metrics.sort(key=lambda m: m.k)
    shown = [key for key in METRICS if any(m.values[key] is not None for m in metrics)]
    table = None
    if metrics:
        marks = {k: "chosen", elbow: "elbow"} if elbow != k else {k: "chosen and elbow"}
        table = Table(
            columns=(Column("k", "num"),)
            + tuple(Column(METRICS[key][0], "num") for key in shown)
            + (Column(""),),
            rows=tuple(
                (
                    str(m.k),
                    *(
                        fmt_pct(m.values[key]) if key == "min_share" else fmt_num(m.values[key])
                        for key in shown
                    ),
                    marks.get(m.k, ""),
                )
                for m in metrics
            ),
        )
    return KSelection(
        k=k,
        reason=text(selection.get("reason"), "report.k_selection.reason"),
        elbow_k=elbow,
        criterion=text(selection.get("criterion"), "report.k_selection.criterion"),
        metrics=tuple(metrics),
        table=table,
    )


def build_silhouette(raw: Any) -> Silhouette | None:
    """Read ``data["silhouette"]``: silhouette values of a sample, per segment name.

    Examples
    --------
    >>> build_silhouette({"per_segment": {"A": [0.5, None]}, "mean": 0.5}).per_segment
    {'A': [0.5]}
    """
    silhouette = mapping(raw, "report.silhouette")
    if silhouette is None:
        return None
    per_segment: dict[str, list[float]] = {}
    raw_segments = mapping(silhouette.get("per_segment"), "report.silhouette.per_segment") or {}
    for name, values in raw_segments.items():
        where = f"report.silhouette.per_segment.{name}"
        per_segment[str(name)] = [v for v in numbers(values, where) or [] if v is not None]
    mean = number(silhouette.get("mean"), "report.silhouette.mean")
    if mean is None and not per_segment:
        return None
    return Silhouette(mean=mean, per_segment=per_segment)


def build_stability(raw: Any) -> Stability | None:
    """Read ``data["stability"]``; a missing verdict is derived from the mean Jaccard.

    Examples
    --------
    >>> s = build_stability({"mean_ari": 0.8, "segments": [{"segment": 0, "mean_jaccard": 0.7}]})
    >>> s.segments[0].verdict, s.segments[0].name
    ('doubtful', 'Segment 0')
    """
    stability = mapping(raw, "report.stability")
    if stability is None:
        return None
    rows = []
    for where, row in _rows(stability.get("segments"), "report.stability.segments"):
        segment = text(row.get("segment"), f"{where}.segment") or MISSING
        jaccard = number(row.get("mean_jaccard"), f"{where}.mean_jaccard")
        row_verdict = verdict(row.get("verdict"), f"{where}.verdict")
        if row_verdict is None and jaccard is not None:
            row_verdict = stability_verdict(jaccard)
        name = text(row.get("name"), f"{where}.name") or f"Segment {segment}"
        rows.append(StabilityRow(segment, name, jaccard, row_verdict))
    table = None
    if rows:
        table = Table(
            columns=(Column("Segment"), Column("Mean Jaccard", "num"), Column("Verdict")),
            rows=tuple((r.name, fmt_num(r.mean_jaccard), r.verdict or MISSING) for r in rows),
        )
    return Stability(
        mean_ari=number(stability.get("mean_ari"), "report.stability.mean_ari"),
        segments=tuple(rows),
        table=table,
    )


def build_separation(raw: Any) -> Separation | None:
    """Read ``data["separation"]``: Kruskal-Wallis test and effect size per feature.

    Examples
    --------
    >>> s = build_separation([{"feature": "monetary", "kruskal_p": 1e-9, "separating": True}])
    >>> s.separating, s.table.rows[0][2], s.table.rows[0][4]
    (1, '1.0e-09', 'yes')
    """
    entries = items(raw, "report.separation")
    if entries is None:
        return None
    body = []
    separating = 0
    for where, row in _rows(entries, "report.separation"):
        separates = flag(row.get("separating"), f"{where}.separating")
        separating += separates is True
        body.append(
            (
                text(row.get("feature"), f"{where}.feature") or MISSING,
                _cell(row, "kruskal_h", where, "num"),
                _cell(row, "kruskal_p", where, "num"),
                _cell(row, "epsilon_squared", where, "num"),
                MISSING if separates is None else ("yes" if separates else "no"),
            )
        )
    table = Table(
        columns=(
            Column("Feature"),
            Column("Kruskal-Wallis H", "num"),
            Column("p-value", "num"),
            Column("Effect size (ε²)", "num"),
            Column("Separates segments"),
        ),
        rows=tuple(body),
    )
    return Separation(table=table, separating=separating, tested=len(body))


def _matrix(raw: Any, where: str, n_rows: int, n_cols: int) -> tuple[tuple[float | None, ...], ...]:
    rows = items(raw, where) or []
    if len(rows) != n_rows:
        raise UserInputError(
            f"expected {n_rows} rows (one per segment), got {len(rows)}", where=where
        )
    result = []
    for i, row in enumerate(rows):
        values = numbers(row, f"{where}[{i}]") or []
        if len(values) != n_cols:
            raise UserInputError(
                f"expected {n_cols} values (one per feature), got {len(values)}",
                where=f"{where}[{i}]",
            )
        result.append(tuple(values))
    return tuple(result)


def build_profile(raw: Any) -> Profile | None:
    """Read ``data["profile"]``: z-scores (and optional means), segment x feature.

    Examples
    --------
    >>> p = build_profile({"features": ["f"], "segments": ["A", "B"], "zscores": [[1], [-1]]})
    >>> p.zscores
    ((1.0,), (-1.0,))
    """
    profile = mapping(raw, "report.profile")
    if profile is None:
        return None
    features = texts(profile.get("features"), "report.profile.features") or []
    segments = texts(profile.get("segments"), "report.profile.segments") or []
    if profile.get("zscores") is None or not features or not segments:
        return None
    zscores = _matrix(
        profile.get("zscores"), "report.profile.zscores", len(segments), len(features)
    )
    means = None
    if profile.get("means") is not None:
        means = _matrix(profile.get("means"), "report.profile.means", len(segments), len(features))
    return Profile(tuple(features), tuple(segments), zscores, means)


def build_projection(raw: Any) -> Projection | None:
    """Read ``data["projection"]``: 2-D coordinates of a sample, with segment names.

    Examples
    --------
    >>> build_projection({"x": [0.1], "y": [0.2], "segment": ["A"]}).method
    'PCA'
    """
    projection = mapping(raw, "report.projection")
    if projection is None:
        return None
    x = numbers(projection.get("x"), "report.projection.x") or []
    y = numbers(projection.get("y"), "report.projection.y") or []
    segment = texts(projection.get("segment"), "report.projection.segment") or []
    if not (len(x) == len(y) == len(segment)):
        raise UserInputError(
            f"x, y and segment must have the same length, got {len(x)}, {len(y)}, {len(segment)}",
            where="report.projection",
        )
    if not x:
        return None
    method = text(projection.get("method"), "report.projection.method") or "PCA"
    return Projection(tuple(x), tuple(y), tuple(segment), method)


def build_explanation(raw: Any) -> Explanation | None:
    """Read ``data["explanation"]``: fidelity, depth and rules per segment name.

    ``fidelity`` may also be a dict with an ``accuracy`` key.

    Examples
    --------
    >>> e = build_explanation({"fidelity": {"accuracy": 0.93}, "depth": 3,
    ...                        "rules": {"A": ["x > 1"]}})
    >>> e.fidelity, e.rules
    (0.93, {'A': ('x > 1',)})
    """
    explanation = mapping(raw, "report.explanation")
    if explanation is None:
        return None
    fidelity_raw = explanation.get("fidelity")
    if isinstance(fidelity_raw, Mapping):
        fidelity_raw = fidelity_raw.get("accuracy")
    rules_raw = mapping(explanation.get("rules"), "report.explanation.rules") or {}
    rules = {
        str(name): tuple(texts(value, f"report.explanation.rules.{name}") or ())
        for name, value in rules_raw.items()
    }
    return Explanation(
        fidelity=number(fidelity_raw, "report.explanation.fidelity"),
        depth=integer(explanation.get("depth"), "report.explanation.depth"),
        rules=rules,
    )


def _flatten(value: Any, prefix: str) -> list[tuple[str, str]]:
    if isinstance(value, Mapping) and value:
        rows: list[tuple[str, str]] = []
        for key, inner in value.items():
            rows.extend(_flatten(inner, f"{prefix}.{key}" if prefix else str(key)))
        return rows
    if value is None:
        return [(prefix, MISSING)]
    if isinstance(value, str):
        return [(prefix, value)]
    if isinstance(value, list | tuple) and all(
        isinstance(v, str | int | float | bool) for v in value
    ):
        return [(prefix, ", ".join(str(v) for v in value))]
    if isinstance(value, int | float | bool):
        return [(prefix, str(value))]
    return [(prefix, json.dumps(value, sort_keys=True, default=str))]


def build_lineage(raw: Any, model: ModelInfo | None) -> Table | None:
    """Model identity and its lineage record, flattened to ``key.path -> value`` rows.

    Examples
    --------
    >>> t = build_lineage({"lineage": {"data": {"fingerprint": "ab12"}}}, None)
    >>> t.rows
    (('data.fingerprint', 'ab12'),)
    """
    model_raw = mapping(raw, "report.model")
    if model_raw is None:
        return None
    rows: list[tuple[str, str]] = []
    if model is not None:
        for label, value in (
            ("version", model.version),
            ("algorithm", model.algorithm),
            ("k", model.k),
            ("as of", model.as_of),
            ("seed", model.seed),
        ):
            if value is not None:
                rows.append((label, str(value)))
    lineage = mapping(model_raw.get("lineage"), "report.model.lineage")
    if lineage:
        rows.extend(_flatten(lineage, ""))
    if not rows:
        return None
    return Table(columns=(Column("Item"), Column("Value", "code")), rows=tuple(rows))
