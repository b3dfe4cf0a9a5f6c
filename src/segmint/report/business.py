"""View builders for the sections everyone reads: model, segments, summary, warnings, migration.

Each builder takes the raw (JSON-like) value of its key and returns a view-model
object, or ``None`` when the value is missing, so the template says "not available".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from segmint.errors import UserInputError
from segmint.report._coerce import integer, items, mapping, number, text, texts
from segmint.report.formatting import fmt_int
from segmint.report.viewmodel import (
    Column,
    Driver,
    Explanation,
    Flow,
    Migration,
    ModelInfo,
    SegmentView,
    Stability,
    Summary,
    Table,
    WarningView,
)

#: Verdicts with a badge of their own; anything else shows as "not tested".
VERDICTS = ("stable", "doubtful", "unstable")
#: Drivers shown on a segment card.
MAX_DRIVERS = 5
#: Largest moves between segments spelled out in the migration section.
MAX_MOVES = 3
#: Warning codes shown in red rather than amber.
DANGER_CODES = frozenset({"unstable", "too_small"})


def build_model(raw: Any) -> ModelInfo | None:
    """Read ``data["model"]``.

    Examples
    --------
    >>> build_model({"version": "v0003", "k": 6}).k
    6
    """
    model = mapping(raw, "report.model")
    if model is None:
        return None
    return ModelInfo(
        version=text(model.get("version"), "report.model.version"),
        algorithm=text(model.get("algorithm"), "report.model.algorithm"),
        k=integer(model.get("k"), "report.model.k"),
        as_of=text(model.get("as_of"), "report.model.as_of"),
        seed=integer(model.get("seed"), "report.model.seed"),
    )


def verdict(value: Any, where: str) -> str | None:
    """Normalise a stability verdict; unknown or missing verdicts are ``None``.

    Examples
    --------
    >>> verdict("Stable", "x"), verdict(None, "x"), verdict("maybe", "x")
    ('stable', None, None)
    """
    word = text(value, where)
    if word is None:
        return None
    word = word.strip().lower()
    return word if word in VERDICTS else None


def _drivers(raw: Any, where: str) -> tuple[Driver, ...]:
    drivers = []
    for i, entry in enumerate(items(raw, where) or []):
        here = f"{where}[{i}]"
        driver = mapping(entry, here)
        if driver is None:
            continue
        feature = text(driver.get("feature"), f"{here}.feature") or "?"
        zscore = number(driver.get("zscore"), f"{here}.zscore")
        direction = (text(driver.get("direction"), f"{here}.direction") or "").lower()
        if direction not in ("high", "low"):
            direction = "" if zscore is None or zscore == 0 else ("high" if zscore > 0 else "low")
        drivers.append(Driver(feature, zscore, direction))
    drivers.sort(key=lambda d: -abs(d.zscore) if d.zscore is not None else 0.0)
    return tuple(drivers[:MAX_DRIVERS])


def build_segments(
    raw: Any,
    *,
    stability: Stability | None,
    explanation: Explanation | None,
    colour_of: Callable[[str], str],
) -> tuple[SegmentView, ...] | None:
    """Read ``data["segments"]``; stability and rules fall back on their own sections.

    Examples
    --------
    >>> segs = build_segments([{"id": 0, "name": "Loyal", "size": 10}],
    ...                       stability=None, explanation=None, colour_of=lambda n: "#000")
    >>> segs[0].name, segs[0].size, segs[0].stability, segs[0].share
    ('Loyal', 10, None, 1.0)
    """
    entries = items(raw, "report.segments")
    if entries is None:
        return None
    verdict_by_key: dict[str, str | None] = {}
    if stability is not None:
        for row in stability.segments:
            verdict_by_key.setdefault(f"id:{row.segment}", row.verdict)
            verdict_by_key.setdefault(f"name:{row.name}", row.verdict)
    views = []
    for i, entry in enumerate(entries):
        where = f"report.segments[{i}]"
        segment = mapping(entry, where)
        if segment is None:
            continue
        seg_id = text(segment.get("id"), f"{where}.id")
        name = text(segment.get("name"), f"{where}.name") or f"Segment {seg_id or i + 1}"
        seg_verdict = verdict(segment.get("stability"), f"{where}.stability")
        if seg_verdict is None:
            seg_verdict = verdict_by_key.get(f"id:{seg_id}") or verdict_by_key.get(f"name:{name}")
        rules = texts(segment.get("rules"), f"{where}.rules")
        if rules is None and explanation is not None:
            rules = list(explanation.rules.get(name, ()))
        views.append(
            SegmentView(
                anchor=f"segment-{i + 1}",
                id=seg_id,
                name=name,
                description=text(segment.get("description"), f"{where}.description"),
                size=integer(segment.get("size"), f"{where}.size"),
                share=number(segment.get("share"), f"{where}.share"),
                revenue_share=number(segment.get("revenue_share"), f"{where}.revenue_share"),
                stability=seg_verdict,
                drivers=_drivers(segment.get("drivers"), f"{where}.drivers"),
                rules=tuple(rules or ()),
                colour=colour_of(name),
            )
        )
    return _fill_shares(views)


def _fill_shares(views: list[SegmentView]) -> tuple[SegmentView, ...]:
    """Derive missing shares of customers from sizes, when every size is known."""
    sizes = [v.size for v in views]
    if None in sizes or not any(v.share is None for v in views):
        return tuple(views)
    total = sum(s for s in sizes if s is not None)
    if total <= 0:
        return tuple(views)
    return tuple(
        v if v.share is not None else replace(v, share=(v.size or 0) / total) for v in views
    )


def build_summary(
    segments: tuple[SegmentView, ...] | None,
    *,
    model: ModelInfo | None,
    k: int | None,
    quality_score: float | None,
    mean_ari: float | None,
    silhouette: float | None,
    fidelity: float | None,
) -> Summary | None:
    """Gather the headline facts; ``None`` when there are neither segments nor a model.

    Examples
    --------
    >>> seg = SegmentView("segment-1", "0", "Loyal", None, 30, 0.3, 0.5, "stable", (), (), "#000")
    >>> s = build_summary((seg,), model=None, k=None, quality_score=0.9, mean_ari=None,
    ...                   silhouette=None, fidelity=None)
    >>> s.k, s.customers, s.largest.name, s.stable
    (1, 30, 'Loyal', 1)
    """
    if segments is None and model is None:
        return None
    segs = segments or ()
    sizes = [s.size for s in segs]
    customers = sum(s for s in sizes if s is not None) if segs and None not in sizes else None
    sized = [s for s in segs if s.size is not None or s.share is not None]
    largest = max(sized, key=lambda s: (s.size or 0, s.share or 0.0), default=None)
    earning = [s for s in segs if s.revenue_share is not None]
    top_revenue = max(earning, key=lambda s: s.revenue_share or 0.0, default=None)
    tested = [s for s in segs if s.stability is not None]
    count = (model.k if model is not None else None) or k or (len(segs) if segs else None)
    return Summary(
        k=count,
        customers=customers,
        segments=segs,
        largest=largest,
        top_revenue=top_revenue,
        stable=sum(1 for s in tested if s.stability == "stable"),
        tested=len(tested),
        quality_score=quality_score,
        mean_ari=mean_ari,
        silhouette=silhouette,
        fidelity=fidelity,
    )


def build_warnings(
    raw: Any, segments: Sequence[SegmentView] | None
) -> tuple[WarningView, ...] | None:
    """Read ``data["warnings"]``; segments given by id are shown by their names.

    Each warning names its segment with ``segment`` (one id or name) or
    ``segments`` (a list, as :meth:`segmint.segments.validation.SegmentWarning.to_dict`
    gives).

    Examples
    --------
    >>> w = build_warnings([{"code": "unstable", "segment": 2, "message": "Re-check."},
    ...                     {"code": "not_distinguished", "segments": [0, 1]}], None)
    >>> [(x.severity, x.segments, x.message) for x in w]
    [('danger', ('2',), 'Re-check.'), ('warning', ('0', '1'), 'not distinguished')]
    """
    entries = items(raw, "report.warnings")
    if entries is None:
        return None
    names = {s.id: s.name for s in segments or () if s.id is not None}
    views = []
    for i, entry in enumerate(entries):
        where = f"report.warnings[{i}]"
        warning = mapping(entry, where)
        if warning is None:
            continue
        code = text(warning.get("code"), f"{where}.code") or "warning"
        concerned = texts(warning.get("segments"), f"{where}.segments") or []
        single = text(warning.get("segment"), f"{where}.segment")
        if single is not None:
            concerned = [single, *concerned]
        message = text(warning.get("message"), f"{where}.message") or code.replace("_", " ")
        severity = "danger" if code in DANGER_CODES else "warning"
        views.append(
            WarningView(code, tuple(names.get(s, s) for s in concerned), message, severity)
        )
    return tuple(views)


def _count_matrix(
    raw: Any, rows: Sequence[str], columns: Sequence[str]
) -> tuple[tuple[int, ...], ...]:
    matrix = items(raw, "report.migration.counts") or []
    if len(matrix) != len(rows):
        raise UserInputError(
            f"expected {len(rows)} rows of counts (one per 'rows' name), got {len(matrix)}",
            where="report.migration.counts",
        )
    result = []
    for i, row in enumerate(matrix):
        where = f"report.migration.counts[{i}]"
        values = items(row, where) or []
        if len(values) != len(columns):
            raise UserInputError(
                f"expected {len(columns)} counts (one per 'columns' name), got {len(values)}",
                where=where,
            )
        result.append(tuple(integer(v, f"{where}[{j}]") or 0 for j, v in enumerate(values)))
    return tuple(result)


def build_migration(raw: Any) -> Migration | None:
    """Read ``data["migration"]``: counts of customers from old to new segments.

    Examples
    --------
    >>> m = build_migration({"from": "v1", "to": "v2", "rows": ["A", "B"],
    ...                      "columns": ["A", "B"], "counts": [[8, 2], [0, 10]]})
    >>> m.total, m.same_name, m.top_moves[0]
    (20, 18, Flow(source='A', target='B', count=2))
    """
    migration = mapping(raw, "report.migration")
    if migration is None:
        return None
    rows = texts(migration.get("rows"), "report.migration.rows") or []
    columns = texts(migration.get("columns"), "report.migration.columns") or []
    counts = _count_matrix(migration.get("counts"), rows, columns)
    total = sum(sum(row) for row in counts)
    same_name = sum(
        count
        for source, row in zip(rows, counts, strict=True)
        for target, count in zip(columns, row, strict=True)
        if source == target
    )
    moves = [
        Flow(source, target, count)
        for source, row in zip(rows, counts, strict=True)
        for target, count in zip(columns, row, strict=True)
        if source != target and count > 0
    ]
    moves.sort(key=lambda f: -f.count)  # stable: ties keep matrix order
    table = Table(
        columns=(Column("From \\ to"),)
        + tuple(Column(c, "num") for c in columns)
        + (Column("Total", "num"),),
        rows=tuple(
            (source, *(fmt_int(c) for c in row), fmt_int(sum(row)))
            for source, row in zip(rows, counts, strict=True)
        ),
    )
    return Migration(
        from_version=text(migration.get("from"), "report.migration.from"),
        to_version=text(migration.get("to"), "report.migration.to"),
        rows=tuple(rows),
        columns=tuple(columns),
        counts=counts,
        total=total,
        same_name=same_name,
        matched_names=bool(set(rows) & set(columns)),
        top_moves=tuple(moves[:MAX_MOVES]),
        table=table,
    )
