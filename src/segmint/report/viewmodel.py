"""The report's view model: normalised, typed data ready for the template and the charts.

:func:`segmint.report.view.build_view` turns the loosely typed report data into
these frozen dataclasses. A section that the data does not provide is ``None``
and the template shows a "not available" note in its place. Nothing here is
HTML: user text stays plain text, and the template escapes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Column:
    """A table column: its header and how its cells are aligned and styled."""

    label: str
    kind: str = "text"  # text | num | code


@dataclass(frozen=True)
class Table:
    """A simple table of pre-formatted text cells.

    Examples
    --------
    >>> t = Table((Column("Segment"), Column("Customers", "num")), (("Loyal", "1,200"),))
    >>> t.columns[1].kind, len(t.rows)
    ('num', 1)
    """

    columns: tuple[Column, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class ModelInfo:
    """Which model the report describes."""

    version: str | None
    algorithm: str | None
    k: int | None
    as_of: str | None
    seed: int | None


@dataclass(frozen=True)
class Driver:
    """A feature on which a segment differs most from everyone (``zscore`` in SDs)."""

    feature: str
    zscore: float | None
    direction: str  # high | low | "" when unknown


@dataclass(frozen=True)
class SegmentView:
    """One segment card."""

    anchor: str
    id: str | None
    name: str
    description: str | None
    size: int | None
    share: float | None
    revenue_share: float | None
    stability: str | None  # stable | doubtful | unstable | None (not tested)
    drivers: tuple[Driver, ...]
    rules: tuple[str, ...]
    colour: str


@dataclass(frozen=True)
class Summary:
    """Facts for the plain-language summary at the top."""

    k: int | None
    customers: int | None
    segments: tuple[SegmentView, ...]
    largest: SegmentView | None
    top_revenue: SegmentView | None
    stable: int
    tested: int
    quality_score: float | None
    mean_ari: float | None
    silhouette: float | None
    fidelity: float | None


@dataclass(frozen=True)
class WarningView:
    """A prominent callout."""

    code: str
    segments: tuple[str, ...]  # names of the segments concerned (empty: the whole model)
    message: str
    severity: str  # danger | warning


@dataclass(frozen=True)
class Flow:
    """Customers who moved from one segment to another between model versions."""

    source: str
    target: str
    count: int


@dataclass(frozen=True)
class Migration:
    """How customers moved between two model versions."""

    from_version: str | None
    to_version: str | None
    rows: tuple[str, ...]
    columns: tuple[str, ...]
    counts: tuple[tuple[int, ...], ...]
    total: int
    same_name: int  # customers whose segment kept its name
    matched_names: bool  # at least one segment name exists in both versions
    top_moves: tuple[Flow, ...]
    table: Table


@dataclass(frozen=True)
class Quality:
    """Data-quality summary."""

    overall_score: float | None
    sources: Table | None
    tables: Table | None
    quarantine: Table | None


@dataclass(frozen=True)
class FeatureDef:
    """One entry of the feature dictionary."""

    name: str
    description: str | None
    sql: str | None
    transform: str | None


@dataclass(frozen=True)
class Features:
    """Feature dictionary and value samples for the histograms."""

    dictionary: tuple[FeatureDef, ...] | None
    samples: dict[str, list[float]] | None


@dataclass(frozen=True)
class MetricRow:
    """Quality metrics of a clustering with ``k`` segments (``None``: not computed)."""

    k: int
    values: dict[str, float | None]


@dataclass(frozen=True)
class KSelection:
    """How the number of segments was chosen."""

    k: int | None
    reason: str | None
    elbow_k: int | None
    criterion: str | None
    metrics: tuple[MetricRow, ...]
    table: Table | None


@dataclass(frozen=True)
class Silhouette:
    """Silhouette values of a sample, per segment."""

    mean: float | None
    per_segment: dict[str, list[float]]


@dataclass(frozen=True)
class StabilityRow:
    """Bootstrap stability of one segment."""

    segment: str
    name: str
    mean_jaccard: float | None
    verdict: str | None


@dataclass(frozen=True)
class Stability:
    """Bootstrap stability of the segmentation."""

    mean_ari: float | None
    segments: tuple[StabilityRow, ...]
    table: Table | None


@dataclass(frozen=True)
class Separation:
    """Per-feature tests of whether the segments differ."""

    table: Table
    separating: int
    tested: int


@dataclass(frozen=True)
class Profile:
    """Segment x feature z-scores (and optional means)."""

    features: tuple[str, ...]
    segments: tuple[str, ...]
    zscores: tuple[tuple[float | None, ...], ...]
    means: tuple[tuple[float | None, ...], ...] | None


@dataclass(frozen=True)
class Projection:
    """A 2-D map of a sample of customers."""

    x: tuple[float | None, ...]
    y: tuple[float | None, ...]
    segment: tuple[str, ...]
    method: str


@dataclass(frozen=True)
class Explanation:
    """The surrogate rule tree."""

    fidelity: float | None
    depth: int | None
    rules: dict[str, tuple[str, ...]]


@dataclass(frozen=True)
class ReportView:
    """Everything the template needs; ``None`` sections are "not available"."""

    title: str
    generated_at: str | None
    model: ModelInfo | None
    lineage: Table | None
    summary: Summary | None
    warnings: tuple[WarningView, ...] | None
    segments: tuple[SegmentView, ...] | None
    migration: Migration | None
    quality: Quality | None
    features: Features | None
    k_selection: KSelection | None
    silhouette: Silhouette | None
    stability: Stability | None
    separation: Separation | None
    profile: Profile | None
    projection: Projection | None
    explanation: Explanation | None
    colours: dict[str, str] = field(default_factory=dict)
