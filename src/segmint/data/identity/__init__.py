"""Identity resolution: finding the records that describe the same person."""

from __future__ import annotations

from segmint.data.identity.probabilistic import (
    CUSTOMERS_COLUMNS,
    FEBRL_COLUMNS,
    ROLES,
    MatchConfig,
    MatchResult,
    ProbabilisticMatcher,
    split_pairs,
)

__all__ = [
    "CUSTOMERS_COLUMNS",
    "FEBRL_COLUMNS",
    "ROLES",
    "MatchConfig",
    "MatchResult",
    "ProbabilisticMatcher",
    "split_pairs",
]
