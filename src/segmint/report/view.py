"""Turn the report data (a JSON-like dict) into the typed :class:`ReportView`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from segmint.errors import UserInputError
from segmint.report import business, technical
from segmint.report._coerce import text
from segmint.report.palette import ColourMap
from segmint.report.viewmodel import ReportView

#: Title used when the data has none.
DEFAULT_TITLE = "Customer segmentation report"


def build_view(data: Mapping[str, Any]) -> ReportView:
    """Read every section of the report data; missing sections become ``None``.

    Parameters
    ----------
    data
        The report data (see :func:`segmint.report.write_report` for its keys).

    Returns
    -------
    ReportView
        Normalised sections, plus a colour per segment name shared by all charts.

    Raises
    ------
    UserInputError
        When ``data`` is not a mapping or a value has the wrong type; ``where``
        names the key path.

    Examples
    --------
    >>> view = build_view({"segments": [{"id": 0, "name": "Loyal", "size": 120}]})
    >>> view.summary.customers, view.quality is None, view.colours
    (120, True, {'Loyal': '#4e79a7'})
    """
    if not isinstance(data, Mapping):
        raise UserInputError(
            f"report data must be a dict, got {type(data).__name__}", where="report"
        )
    colours = ColourMap()
    model = business.build_model(data.get("model"))
    quality = technical.build_quality(data.get("quality"))
    stability = technical.build_stability(data.get("stability"))
    explanation = technical.build_explanation(data.get("explanation"))
    k_selection = technical.build_k_selection(data.get("k_selection"))
    silhouette = technical.build_silhouette(data.get("silhouette"))
    segments = business.build_segments(
        data.get("segments"), stability=stability, explanation=explanation, colour_of=colours
    )
    profile = technical.build_profile(data.get("profile"))
    projection = technical.build_projection(data.get("projection"))
    migration = business.build_migration(data.get("migration"))
    # Segments named only outside data["segments"] (e.g. an old version) get later colours.
    for names in (
        profile.segments if profile else (),
        silhouette.per_segment if silhouette else (),
        [row.name for row in stability.segments] if stability else (),
        projection.segment if projection else (),
        migration.columns if migration else (),
        migration.rows if migration else (),
    ):
        for name in names:
            colours(name)
    summary = business.build_summary(
        segments,
        model=model,
        k=k_selection.k if k_selection else None,
        quality_score=quality.overall_score if quality else None,
        mean_ari=stability.mean_ari if stability else None,
        silhouette=silhouette.mean if silhouette else None,
        fidelity=explanation.fidelity if explanation else None,
    )
    return ReportView(
        title=text(data.get("title"), "report.title") or DEFAULT_TITLE,
        generated_at=text(data.get("generated_at"), "report.generated_at"),
        model=model,
        lineage=technical.build_lineage(data.get("model"), model),
        summary=summary,
        warnings=business.build_warnings(data.get("warnings"), segments),
        segments=segments,
        migration=migration,
        quality=quality,
        features=technical.build_features(data.get("features")),
        k_selection=k_selection,
        silhouette=silhouette,
        stability=stability,
        separation=technical.build_separation(data.get("separation")),
        profile=profile,
        projection=projection,
        explanation=explanation,
        colours=dict(colours.assigned),
    )
