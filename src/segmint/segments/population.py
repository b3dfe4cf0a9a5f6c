"""Rules that turn a feature snapshot into the population a model scores.

Shared by the batch pipeline and the real-time re-scorer, so both see a
customer the same way.
"""

from __future__ import annotations

__all__ = ["FALLBACK_NAME", "FALLBACK_SEGMENT", "NEVER_IS_LONGEST"]

#: Segment of customers matching the fallback rule (too little data to cluster).
FALLBACK_SEGMENT = -2
FALLBACK_NAME = "Too Little Data"
#: "Days since" features are NULL when the thing never happened; for clustering, never
#: is treated as at least as long ago as the longest observed gap (not a typical value).
NEVER_IS_LONGEST = ("recency_days", "days_since_last_visit")
