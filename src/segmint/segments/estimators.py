"""Clustering estimators (scikit-learn API) whose predictions compile to SQL.

The implementation lives in :mod:`segmint.segments._estimators`; this module is
the public surface.

Examples
--------
>>> from segmint.segments.estimators import make_segmenter
>>> make_segmenter("fcm", 3, 0)
FuzzyCMeansSegmenter(n_clusters=3, random_state=0)
"""

from __future__ import annotations

from segmint.segments._estimators import (
    SEGMENTERS,
    UNASSIGNED,
    DensitySegmenter,
    FuzzyCMeansSegmenter,
    GaussianMixtureSegmenter,
    KMeansSegmenter,
    SegmenterValueError,
    WardSegmenter,
    fuzzy_memberships,
    make_segmenter,
    nearest_centroid,
    squared_distances,
)

__all__ = [
    "SEGMENTERS",
    "UNASSIGNED",
    "DensitySegmenter",
    "FuzzyCMeansSegmenter",
    "GaussianMixtureSegmenter",
    "KMeansSegmenter",
    "SegmenterValueError",
    "WardSegmenter",
    "fuzzy_memberships",
    "make_segmenter",
    "nearest_centroid",
    "squared_distances",
]
