"""Names and plain-language descriptions of segments, derived from their profiles.

How a segment gets its name (deterministic: the same profiles give the same names):

1. **Overrides** from the project file win. Two overrides with the same name
   (compared case-insensitively), an empty name, or an override for a segment
   that does not exist are errors (:class:`~segmint.errors.UserInputError`).
   Archetypes whose name is taken by an override are not used automatically.
2. The unassigned segment ``-1`` is called "Unassigned".
3. **Archetypes.** Every other segment is scored against the archetypes below,
   using the z-scores of its profile (segment mean minus population mean, in
   population standard deviations, clipped to [-3, 3]). An archetype is a list
   of *signals*; a signal is a trait measured by one or more features and a
   direction (high or low). The value of a signal is the mean of
   ``direction x z`` over its features that exist; a signal none of whose
   features exist is skipped. An archetype *fits* a segment when

   - every required signal exists and has a value of at least
     ``MIN_SIGNAL_Z`` (0.25), and
   - the archetype's score, the mean value of its existing signals (required
     and optional), is at least ``MIN_ARCHETYPE_SCORE`` (0.5).

   Archetypes are then assigned to segments one-to-one by the Hungarian
   algorithm (``scipy.optimize.linear_sum_assignment``): first as many
   segments as possible get a fitting archetype, then the total score of the
   fitting pairs is maximised. Two segments never share an archetype.

   ====================== ======================================================
   archetype              signals (``+`` high, ``-`` low; optional in brackets)
   ====================== ======================================================
   Champions              -recency_days, +frequency, +monetary/expected_spend,
                          [+probability_alive/expected_purchases_90d]
   Loyal Regulars         +frequency, -recency_days, [+tenure_days],
                          [-interpurchase_mean_days]
   At-Risk Big Spenders   +monetary/avg_order_value, +recency_days,
                          [-probability_alive], [+days_since_last_visit]
   New Customers          -tenure_days, -recency_days, [-frequency]
   New Browsers           -tenure_days, -frequency,
                          [+sessions/product_views/pages_per_session],
                          [-days_since_last_visit]
   Bargain Hunters        +discount_share, [-avg_order_value]
   Window Shoppers        +cart_abandonment_rate/cart_adds, -frequency,
                          [+product_views/sessions], [-days_since_last_visit]
   Dormant Browsers       +sessions/product_views/pages_per_session, -frequency,
                          [+recency_days], [-monetary]
   Lapsed                 +recency_days, +days_since_last_visit,
                          [-probability_alive], [-monetary/avg_order_value]
   Hibernating            +recency_days, -frequency, [-monetary],
                          [-sessions/email_open_rate]
   Big-Ticket Buyers      +avg_order_value, -frequency
   Engaged Subscribers    +email_open_rate
   App-First Shoppers     +channel_share_app
   In-Store Shoppers      +channel_share_store
   Online Shoppers        +channel_share_web
   Category Explorers     +category_count/category_entropy
   ====================== ======================================================

4. **Descriptive names.** A segment left without an archetype (more segments
   than fitting archetypes, or only weak matches) is named after its top two
   drivers with ``|z| >= MIN_NAME_DRIVER_Z``: "High Sessions, Low Frequency";
   with no such driver it is "Typical Customers".
5. **Uniqueness.** Automatic names never repeat (case-insensitively): going
   through segments in id order, a name already taken is extended with the
   next driver, and failing that qualified with the segment id
   ("Typical Customers (Segment 4)").

Each segment also gets a one- or two-sentence description with actual numbers
from its profile, e.g. "12% of customers (1,200) bring 41% of revenue. They
bought 14 times on average (3.1x the average customer) and last ordered 9 days
ago on average (against 62 for the average customer)."

Examples
--------
>>> import pandas as pd
>>> from segmint.segments.profiles import profile_segments
>>> frame = pd.DataFrame({"discount_share": [0.9, 0.8, 0.1, 0.0, 0.1, 0.05]})
>>> names = name_segments(profile_segments(frame, [1, 1, 0, 0, 0, 0],
...                                        features=["discount_share"], revenue=None))
>>> names[1].name
'Bargain Hunters'
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment

from segmint.errors import UserInputError
from segmint.segments.profiles import UNASSIGNED_NAME, SegmentProfiles

logger = logging.getLogger(__name__)

__all__ = [
    "ARCHETYPES",
    "MIN_ARCHETYPE_SCORE",
    "MIN_NAME_DRIVER_Z",
    "MIN_SIGNAL_Z",
    "Archetype",
    "SegmentName",
    "Signal",
    "archetype_scores",
    "describe_segment",
    "feature_label",
    "name_segments",
]

#: Smallest value a required signal must reach for an archetype to fit.
MIN_SIGNAL_Z = 0.25
#: Smallest archetype score (mean signal value) for an archetype to fit.
MIN_ARCHETYPE_SCORE = 0.5
#: Smallest ``|z|`` of a driver used in descriptive names and descriptions.
MIN_NAME_DRIVER_Z = 0.25
#: z-scores are clipped to +/- this before scoring, so one extreme feature cannot
#: carry an archetype alone.
Z_CLIP = 3.0
_UNASSIGNED = -1
_TYPICAL = "Typical Customers"


@dataclass(frozen=True)
class Signal:
    """A trait of an archetype, measured by one or more features.

    Attributes
    ----------
    features
        Features measuring the trait; the value is the mean of
        ``direction x z`` over those that exist.
    direction
        ``+1`` for high, ``-1`` for low.
    required
        An archetype fits only if all its required signals exist and reach
        ``MIN_SIGNAL_Z``.

    Examples
    --------
    >>> Signal(("recency_days",), -1).direction
    -1
    """

    features: tuple[str, ...]
    direction: int
    required: bool = True


@dataclass(frozen=True)
class Archetype:
    """A named kind of customer that marketers recognise.

    Examples
    --------
    >>> ARCHETYPES[0].name
    'Champions'
    """

    key: str
    name: str
    signals: tuple[Signal, ...]


def _s(*features: str, high: bool, required: bool = True) -> Signal:
    return Signal(tuple(features), 1 if high else -1, required)


_BROWSING = ("sessions", "product_views", "pages_per_session")

#: The archetypes, in priority order (documented in the module docstring).
ARCHETYPES: tuple[Archetype, ...] = (
    Archetype(
        "champions",
        "Champions",
        (
            _s("recency_days", high=False),
            _s("frequency", high=True),
            _s("monetary", "expected_spend", high=True),
            _s("probability_alive", "expected_purchases_90d", high=True, required=False),
        ),
    ),
    Archetype(
        "loyal_regulars",
        "Loyal Regulars",
        (
            _s("frequency", high=True),
            _s("recency_days", high=False),
            _s("tenure_days", high=True, required=False),
            _s("interpurchase_mean_days", high=False, required=False),
        ),
    ),
    Archetype(
        "at_risk_big_spenders",
        "At-Risk Big Spenders",
        (
            _s("monetary", "avg_order_value", high=True),
            _s("recency_days", high=True),
            _s("probability_alive", high=False, required=False),
            _s("days_since_last_visit", high=True, required=False),
        ),
    ),
    Archetype(
        "new_customers",
        "New Customers",
        (
            _s("tenure_days", high=False),
            _s("recency_days", high=False),
            _s("frequency", high=False, required=False),
        ),
    ),
    Archetype(
        "new_browsers",
        "New Browsers",
        (
            _s("tenure_days", high=False),
            _s("frequency", high=False),
            _s(*_BROWSING, high=True, required=False),
            _s("days_since_last_visit", high=False, required=False),
        ),
    ),
    Archetype(
        "bargain_hunters",
        "Bargain Hunters",
        (
            _s("discount_share", high=True),
            _s("avg_order_value", high=False, required=False),
        ),
    ),
    Archetype(
        "window_shoppers",
        "Window Shoppers",
        (
            _s("cart_abandonment_rate", "cart_adds", high=True),
            _s("frequency", high=False),
            _s("product_views", "sessions", high=True, required=False),
            _s("days_since_last_visit", high=False, required=False),
        ),
    ),
    Archetype(
        "dormant_browsers",
        "Dormant Browsers",
        (
            _s(*_BROWSING, high=True),
            _s("frequency", high=False),
            _s("recency_days", high=True, required=False),
            _s("monetary", high=False, required=False),
        ),
    ),
    Archetype(
        "lapsed",
        "Lapsed",
        (
            _s("recency_days", high=True),
            _s("days_since_last_visit", high=True),
            _s("probability_alive", high=False, required=False),
            _s("monetary", "avg_order_value", high=False, required=False),
        ),
    ),
    Archetype(
        "hibernating",
        "Hibernating",
        (
            _s("recency_days", high=True),
            _s("frequency", high=False),
            _s("monetary", high=False, required=False),
            _s("sessions", "email_open_rate", high=False, required=False),
        ),
    ),
    Archetype(
        "big_ticket_buyers",
        "Big-Ticket Buyers",
        (_s("avg_order_value", high=True), _s("frequency", high=False)),
    ),
    Archetype("engaged_subscribers", "Engaged Subscribers", (_s("email_open_rate", high=True),)),
    Archetype("app_first", "App-First Shoppers", (_s("channel_share_app", high=True),)),
    Archetype("in_store", "In-Store Shoppers", (_s("channel_share_store", high=True),)),
    Archetype("online", "Online Shoppers", (_s("channel_share_web", high=True),)),
    Archetype(
        "category_explorers",
        "Category Explorers",
        (_s("category_count", "category_entropy", high=True),),
    ),
)


@dataclass(frozen=True)
class SegmentName:
    """The name and description of one segment.

    Attributes
    ----------
    name
        Unique display name.
    description
        One or two plain-language sentences with numbers from the profile.
    source
        How the name was chosen: "override", "unassigned", "archetype" or "drivers".
    archetype
        Key of the archetype, when ``source == "archetype"``.
    score
        The archetype's score, when ``source == "archetype"``.

    Examples
    --------
    >>> SegmentName("Champions", "5% of customers bring 30% of revenue.").name
    'Champions'
    """

    name: str
    description: str
    source: str = "drivers"
    archetype: str | None = None
    score: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict."""
        return {
            "name": self.name,
            "description": self.description,
            "source": self.source,
            "archetype": self.archetype,
            "score": None if self.score is None else float(self.score),
        }


# ======================================================================= scoring
def archetype_scores(profiles: SegmentProfiles) -> pd.DataFrame:
    """Score of every archetype for every segment (NaN where it does not fit).

    Rows are segment ids (the unassigned segment excluded), columns archetype keys.

    Examples
    --------
    >>> import pandas as pd
    >>> from segmint.segments.profiles import profile_segments
    >>> frame = pd.DataFrame({"email_open_rate": [0.9, 0.1, 0.2, 0.1]})
    >>> p = profile_segments(frame, [0, 1, 1, 1], features=["email_open_rate"], revenue=None)
    >>> archetype_scores(p)["engaged_subscribers"].notna().tolist()
    [True, False]
    """
    segments = [s for s in profiles.segments if s != _UNASSIGNED]
    scores = np.full((len(segments), len(ARCHETYPES)), np.nan)
    for i, seg in enumerate(segments):
        z = profiles.zscores.iloc[profiles.segments.index(seg)]
        for j, archetype in enumerate(ARCHETYPES):
            scores[i, j] = _score(archetype, z)
    return pd.DataFrame(
        scores,
        index=pd.Index(segments, name="segment_id", dtype=np.int64),
        columns=[a.key for a in ARCHETYPES],
    )


def _score(archetype: Archetype, z: pd.Series) -> float:
    values = []
    for signal in archetype.signals:
        present = [
            float(np.clip(z[f], -Z_CLIP, Z_CLIP))
            for f in signal.features
            if f in z.index and math.isfinite(z[f])
        ]
        if not present:
            if signal.required:
                return math.nan
            continue
        value = signal.direction * float(np.mean(present))
        if signal.required and value < MIN_SIGNAL_Z:
            return math.nan
        values.append(value)
    score = float(np.mean(values))
    return score if score >= MIN_ARCHETYPE_SCORE else math.nan


# ======================================================================= naming
def name_segments(
    profiles: SegmentProfiles, *, overrides: Mapping[int, str] | None = None
) -> dict[int, SegmentName]:
    """Give every segment a unique, readable name and a short description.

    Parameters
    ----------
    profiles
        Profiles from :func:`~segmint.segments.profiles.profile_segments`.
    overrides
        Names set by the user (segment id -> name); they win.

    Returns
    -------
    dict
        Segment id -> :class:`SegmentName`, in the order of ``profiles.segments``.

    Raises
    ------
    UserInputError
        If an override names an unknown segment, is empty, or repeats another
        override's name.

    Examples
    --------
    >>> import pandas as pd
    >>> from segmint.segments.profiles import profile_segments
    >>> frame = pd.DataFrame({"sessions": [30, 25, 2, 3, 1, 2], "frequency": [0, 1, 5, 4, 6, 5]})
    >>> p = profile_segments(frame, [0, 0, 1, 1, 1, 1], features=["sessions", "frequency"],
    ...                      revenue=None)
    >>> {s: n.name for s, n in name_segments(p, overrides={1: "Core Buyers"}).items()}
    {0: 'Dormant Browsers', 1: 'Core Buyers'}
    """
    overrides = _check_overrides(profiles, overrides or {})
    taken = {name.casefold() for name in overrides.values()}
    names: dict[int, tuple[str, str, str | None, float | None]] = {}
    for seg, name in overrides.items():
        names[seg] = (name, "override", None, None)

    if _UNASSIGNED in profiles.segments and _UNASSIGNED not in names:
        name = _unique(UNASSIGNED_NAME, [], _UNASSIGNED, taken)
        names[_UNASSIGNED] = (name, "unassigned", None, None)

    to_name = [s for s in profiles.segments if s not in names]
    scores = archetype_scores(profiles).reindex(to_name)
    usable = [j for j, a in enumerate(ARCHETYPES) if a.name.casefold() not in taken]
    for seg, j, fit in _assign(scores.to_numpy()[:, usable] if to_name else None, to_name):
        archetype = ARCHETYPES[usable[j]]
        taken.add(archetype.name.casefold())
        names[seg] = (archetype.name, "archetype", archetype.key, fit)

    for seg in to_name:
        if seg in names:
            continue
        phrases = [
            _driver_phrase(d.feature, d.direction)
            for d in profiles.drivers[seg]
            if abs(d.zscore) >= MIN_NAME_DRIVER_Z
        ]
        base = ", ".join(phrases[:2]) if phrases else _TYPICAL
        name = _unique(base, phrases[2:], seg, taken)
        names[seg] = (name, "drivers", None, None)

    result = {}
    for seg in profiles.segments:
        name, source, key, score = names[seg]
        result[seg] = SegmentName(
            name=name,
            description=describe_segment(profiles, seg),
            source=source,
            archetype=key,
            score=score,
        )
    logger.debug("named segments: %s", {s: n.name for s, n in result.items()})
    return result


def _check_overrides(profiles: SegmentProfiles, overrides: Mapping[int, str]) -> dict[int, str]:
    out: dict[int, str] = {}
    seen: dict[str, int] = {}
    for raw_seg, raw_name in sorted(overrides.items(), key=lambda kv: int(kv[0])):
        seg = int(raw_seg)
        where = f"segment_names.{seg}"
        if seg not in profiles.segments:
            raise UserInputError(
                f"there is no segment {seg}; segments are {profiles.segments}", where=where
            )
        if not isinstance(raw_name, str) or not raw_name.strip():
            raise UserInputError("a segment name must be a non-empty string", where=where)
        name = " ".join(raw_name.split())
        key = name.casefold()
        if key in seen:
            raise UserInputError(
                f"name {name!r} is also given to segment {seen[key]}; names must be unique",
                where=where,
            )
        seen[key] = seg
        out[seg] = name
    return out


def _assign(scores: np.ndarray | None, segments: list[int]) -> list[tuple[int, int, float]]:
    """One-to-one (segment, archetype column, score) pairs maximising the total score."""
    if scores is None or scores.size == 0:
        return []
    fits = np.isfinite(scores)
    if not fits.any():
        return []
    # Pairs that do not fit cost far more than any fitting pair can gain.
    penalty = 1e6
    cost = np.where(fits, -np.nan_to_num(scores, nan=0.0), penalty)
    rows, cols = linear_sum_assignment(cost)
    return [
        (segments[r], int(c), float(scores[r, c]))
        for r, c in zip(rows, cols, strict=True)
        if fits[r, c]
    ]


def _unique(base: str, extensions: list[str], segment_id: int, taken: set[str]) -> str:
    """``base``, else ``base`` extended with further drivers, else qualified with the id."""
    candidates = [base]
    for i in range(len(extensions)):
        candidates.append(", ".join([base, *extensions[: i + 1]]))
    candidates.append(f"{base} (Segment {segment_id})")
    for candidate in candidates:
        if candidate.casefold() not in taken:
            taken.add(candidate.casefold())
            return candidate
    n = 2
    while f"{base} (Segment {segment_id}, {n})".casefold() in taken:
        n += 1
    name = f"{base} (Segment {segment_id}, {n})"
    taken.add(name.casefold())
    return name


# ======================================================================= wording
_LABELS = {
    "recency_days": "Days Since Order",
    "frequency": "Frequency",
    "monetary": "Spend",
    "avg_order_value": "Order Value",
    "tenure_days": "Tenure",
    "interpurchase_mean_days": "Days Between Orders",
    "interpurchase_std_days": "Order Irregularity",
    "category_count": "Category Count",
    "category_entropy": "Category Variety",
    "discount_share": "Discount Share",
    "channel_share_web": "Web Share",
    "channel_share_app": "App Share",
    "channel_share_store": "Store Share",
    "sessions": "Sessions",
    "pages_per_session": "Pages per Session",
    "product_views": "Product Views",
    "cart_adds": "Cart Adds",
    "cart_abandonment_rate": "Cart Abandonment",
    "email_open_rate": "Email Opens",
    "days_since_last_visit": "Days Since Visit",
    "aov_per_visit": "Spend per Visit",
    "expected_purchases_90d": "Expected Purchases",
    "probability_alive": "Probability Active",
    "expected_spend": "Expected Spend",
}

_DIRECTED = {
    ("recency_days", "low"): "Recent Buyers",
    ("recency_days", "high"): "Long Since Last Order",
    ("days_since_last_visit", "low"): "Recent Visitors",
    ("days_since_last_visit", "high"): "Long Since Last Visit",
    ("tenure_days", "low"): "Short Tenure",
    ("tenure_days", "high"): "Long Tenure",
}

# feature -> (sentence fragment with {v} and {cmp}, kind of value)
_PHRASES: dict[str, tuple[str, str]] = {
    "recency_days": ("last ordered {v} days ago on average ({cmp})", "number"),
    "frequency": ("bought {v} times on average ({cmp})", "number"),
    "monetary": ("spent {v} on average ({cmp})", "number"),
    "avg_order_value": ("spend {v} per order on average ({cmp})", "number"),
    "tenure_days": ("have been customers for {v} days on average ({cmp})", "number"),
    "interpurchase_mean_days": ("order every {v} days on average ({cmp})", "number"),
    "discount_share": ("bought {v} of their items on discount ({cmp})", "share"),
    "channel_share_web": ("made {v} of their purchases on the web ({cmp})", "share"),
    "channel_share_app": ("made {v} of their purchases in the app ({cmp})", "share"),
    "channel_share_store": ("made {v} of their purchases in store ({cmp})", "share"),
    "sessions": ("had {v} sessions on average ({cmp})", "number"),
    "product_views": ("viewed {v} products on average ({cmp})", "number"),
    "cart_adds": ("added {v} items to their cart on average ({cmp})", "number"),
    "cart_abandonment_rate": ("abandoned {v} of their carts ({cmp})", "share"),
    "email_open_rate": ("opened {v} of their emails ({cmp})", "share"),
    "days_since_last_visit": ("last visited {v} days ago on average ({cmp})", "number"),
    "category_count": ("bought from {v} categories on average ({cmp})", "number"),
    "probability_alive": ("are {v} likely to still be active ({cmp})", "share"),
    "expected_purchases_90d": (
        "are expected to buy {v} times in the next 90 days ({cmp})",
        "number",
    ),
}


def feature_label(feature: str) -> str:
    """A short title-case label of a feature, for names and charts.

    Examples
    --------
    >>> feature_label("avg_order_value"), feature_label("loyalty_points")
    ('Order Value', 'Loyalty Points')
    """
    return _LABELS.get(feature) or feature.replace("_", " ").strip().title()


def _driver_phrase(feature: str, direction: str) -> str:
    directed = _DIRECTED.get((feature, direction))
    if directed:
        return directed
    return f"{'High' if direction == 'high' else 'Low'} {feature_label(feature)}"


def describe_segment(profiles: SegmentProfiles, segment_id: int) -> str:
    """One or two sentences describing a segment with numbers from its profile.

    Examples
    --------
    >>> import pandas as pd
    >>> from segmint.segments.profiles import profile_segments
    >>> frame = pd.DataFrame({"frequency": [12, 16, 2, 1, 2, 3],
    ...                       "monetary": [500, 700, 40, 20, 30, 50]})
    >>> p = profile_segments(frame, [0, 0, 1, 1, 1, 1], features=["frequency"])
    >>> describe_segment(p, 0)  # doctest: +NORMALIZE_WHITESPACE
    '33% of customers (2) bring 90% of revenue.
     They bought 14 times on average (2.3x the average customer).'
    """
    row = profiles.row(segment_id)
    share = _pct(row["share"])
    size = f"{row['size']:,}"
    has_revenue = not math.isnan(row["revenue_share"])
    if segment_id == _UNASSIGNED:
        first = f"{share} of customers ({size}) fit no segment closely"
        first += f"; they bring {_pct(row['revenue_share'])} of revenue." if has_revenue else "."
    elif has_revenue:
        first = f"{share} of customers ({size}) bring {_pct(row['revenue_share'])} of revenue."
    else:
        first = f"{share} of customers ({size})."
    drivers = [d for d in profiles.drivers[segment_id] if abs(d.zscore) >= MIN_NAME_DRIVER_Z]
    if not drivers:
        return f"{first} They look like the average customer on every profiled feature."
    parts = [_fact(profiles, segment_id, d.feature) for d in drivers[:2]]
    return f"{first} They {' and '.join(parts)}."


def _fact(profiles: SegmentProfiles, segment_id: int, feature: str) -> str:
    value = _cell(profiles.feature_means, segment_id, feature)
    overall = float(profiles.population_means.to_numpy()[profiles.features.index(feature)])
    lift = _cell(profiles.lift, segment_id, feature)
    template, kind = _PHRASES.get(
        feature, (f"have an average {feature_label(feature).lower()} of {{v}} ({{cmp}})", "number")
    )
    fmt = _pct if kind == "share" else _number
    if math.isfinite(lift) and overall > 0 and lift >= 1.05:
        cmp = f"{lift:.1f}x the average customer"
    else:
        cmp = f"against {fmt(overall)} for the average customer"
    return template.format(v=fmt(value), cmp=cmp)


def _cell(frame: pd.DataFrame, segment_id: int, feature: str) -> float:
    return float(frame[feature].to_numpy()[frame.index.get_loc(segment_id)])


def _number(value: float) -> str:
    if not math.isfinite(value):
        return "n/a"
    if abs(value) >= 10:
        return f"{value:,.0f}"
    return f"{value:.2g}" if abs(value) < 1 else f"{value:.1f}".rstrip("0").rstrip(".")


def _pct(value: float) -> str:
    if not math.isfinite(value):
        return "n/a"
    if 0 < abs(value) < 0.01:
        return f"{value:.1%}"
    return f"{value:.0%}"
