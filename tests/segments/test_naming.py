"""Tests of segmint.segments.naming: archetypes, uniqueness, overrides, descriptions."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import segmint.segments.naming as naming
from segmint.errors import UserInputError
from segmint.segments.naming import (
    ARCHETYPES,
    archetype_scores,
    describe_segment,
    feature_label,
    name_segments,
)
from segmint.segments.profiles import SegmentProfiles, profile_segments

# Typical raw values of five obvious kinds of customer.
CENTRES: dict[int, dict[str, float]] = {
    0: dict(
        recency_days=5,
        frequency=20,
        monetary=2000,
        avg_order_value=100,
        tenure_days=800,
        discount_share=0.1,
        sessions=30,
        product_views=60,
        days_since_last_visit=3,
    ),
    1: dict(
        recency_days=40,
        frequency=6,
        monetary=300,
        avg_order_value=50,
        tenure_days=500,
        discount_share=0.8,
        sessions=10,
        product_views=30,
        days_since_last_visit=20,
    ),
    2: dict(
        recency_days=250,
        frequency=5,
        monetary=1500,
        avg_order_value=300,
        tenure_days=900,
        discount_share=0.1,
        sessions=2,
        product_views=5,
        days_since_last_visit=200,
    ),
    3: dict(
        recency_days=10,
        frequency=1,
        monetary=60,
        avg_order_value=60,
        tenure_days=15,
        discount_share=0.2,
        sessions=5,
        product_views=10,
        days_since_last_visit=5,
    ),
    4: dict(
        recency_days=300,
        frequency=0.5,
        monetary=20,
        avg_order_value=40,
        tenure_days=600,
        discount_share=0.1,
        sessions=40,
        product_views=120,
        days_since_last_visit=10,
    ),
}
EXPECTED = {
    0: "Champions",
    1: "Bargain Hunters",
    2: "At-Risk Big Spenders",
    3: "New Customers",
    4: "Dormant Browsers",
}


def make_frame(
    centres: dict[int, dict[str, float]], n: int = 100, seed: int = 0
) -> tuple[pd.DataFrame, list[int]]:
    """n customers per centre, each value within +/-15% of the centre."""
    rng = np.random.default_rng(seed)
    frames, labels = [], []
    for seg, centre in centres.items():
        frames.append(
            pd.DataFrame({k: v * rng.uniform(0.85, 1.15, size=n) for k, v in centre.items()})
        )
        labels += [seg] * n
    return pd.concat(frames, ignore_index=True), labels


def profiles_of(centres: dict[int, dict[str, float]], **kwargs: object) -> SegmentProfiles:
    frame, labels = make_frame(centres)
    features = list(next(iter(centres.values())))
    revenue = "monetary" if "monetary" in features else None
    return profile_segments(frame, labels, features=features, revenue=revenue, **kwargs)  # type: ignore[arg-type]


def names_of(result: dict[int, naming.SegmentName]) -> dict[int, str]:
    return {s: n.name for s, n in result.items()}


def test_obvious_archetypes_get_their_names() -> None:
    result = name_segments(profiles_of(CENTRES))
    assert names_of(result) == EXPECTED
    assert all(n.source == "archetype" for n in result.values())
    assert result[0].archetype == "champions"
    assert result[0].score is not None and result[0].score >= naming.MIN_ARCHETYPE_SCORE


def test_rfm_only_champions_and_hibernating() -> None:
    centres = {
        0: dict(recency_days=7, frequency=15, monetary=1500),
        1: dict(recency_days=300, frequency=1, monetary=30),
        2: dict(recency_days=60, frequency=4, monetary=300),
    }
    names = names_of(name_segments(profiles_of(centres)))
    assert names[0] == "Champions"
    assert names[1] == "Hibernating"  # "Lapsed" needs days_since_last_visit, absent here
    assert len(set(names.values())) == 3


def test_two_lookalike_segments_never_share_a_name() -> None:
    centres = {**CENTRES, 5: dict(CENTRES[0])}
    result = name_segments(profiles_of(centres))
    names = names_of(result)
    assert len({n.casefold() for n in names.values()}) == len(names)
    assert sorted([names[0], names[5]]).count("Champions") == 1
    assert [n.archetype for n in result.values()].count("champions") == 1


def test_without_a_fitting_archetype_the_top_two_drivers_name_the_segment() -> None:
    centres = {
        0: dict(loyalty_points=900, returns=1.0, region_code=3),
        1: dict(loyalty_points=100, returns=2.0, region_code=3),
    }
    result = name_segments(profiles_of(centres))
    assert result[0].name == "High Loyalty Points, Low Returns"
    assert result[1].name == "Low Loyalty Points, High Returns"
    assert result[0].source == "drivers"


def test_direction_specific_driver_words() -> None:
    centres = {0: dict(recency_days=5, pets=1), 1: dict(recency_days=200, pets=1)}
    names = names_of(name_segments(profiles_of(centres)))
    assert names == {0: "Recent Buyers", 1: "Long Since Last Order"}


def test_descriptive_names_are_made_unique_with_a_qualifier() -> None:
    centres = {
        0: dict(loyalty_points=900, returns=1.0),
        1: dict(loyalty_points=901, returns=1.0),
        2: dict(loyalty_points=100, returns=2.0),
        3: dict(loyalty_points=100, returns=2.0),
    }
    names = names_of(name_segments(profiles_of(centres)))
    assert len({n.casefold() for n in names.values()}) == 4
    assert names[0] == "High Loyalty Points, Low Returns"
    assert names[1].startswith("High Loyalty Points, Low Returns")
    assert names[1] != names[0]
    assert names[3] == f"{names[2]} (Segment 3)"


def test_a_segment_like_everyone_else_is_typical() -> None:
    frame = pd.DataFrame({"loyalty_points": [1.0, 2.0, 1.0, 2.0]})
    p = profile_segments(frame, [0, 0, 1, 1], features=["loyalty_points"], revenue=None)
    result = name_segments(p)
    assert result[0].name == "Typical Customers"
    assert result[1].name == "Typical Customers (Segment 1)"
    assert "look like the average customer" in result[0].description


def test_unassigned_segment_is_called_unassigned() -> None:
    frame, labels = make_frame(CENTRES)
    labels[:7] = [-1] * 7
    p = profile_segments(frame, labels, features=list(CENTRES[0]))
    result = name_segments(p)
    assert result[-1].name == "Unassigned"
    assert result[-1].source == "unassigned"
    assert result[-1].description.startswith("1% of customers (7) fit no segment closely")
    assert list(result) == p.segments


def test_overrides_win_and_reserve_their_names() -> None:
    p = profiles_of(CENTRES)
    result = name_segments(p, overrides={3: "Champions", 1: "  Deal   Seekers "})
    names = names_of(result)
    assert names[3] == "Champions"
    assert result[3].source == "override"
    assert names[1] == "Deal Seekers"  # whitespace normalised
    assert names[0] != "Champions"  # the archetype is taken by the override
    assert len({n.casefold() for n in names.values()}) == len(names)
    assert names[2] == EXPECTED[2] and names[4] == EXPECTED[4]


def test_override_for_the_unassigned_segment() -> None:
    frame, labels = make_frame(CENTRES)
    labels[0] = -1
    p = profile_segments(frame, labels, features=list(CENTRES[0]))
    assert name_segments(p, overrides={-1: "Outliers"})[-1].name == "Outliers"


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({0: "VIP", 1: "vip"}, "also given to segment 0"),
        ({9: "Ghosts"}, "there is no segment 9"),
        ({0: "   "}, "non-empty"),
    ],
)
def test_invalid_overrides_are_user_errors(overrides: dict[int, str], match: str) -> None:
    with pytest.raises(UserInputError, match=match) as info:
        name_segments(profiles_of(CENTRES), overrides=overrides)
    assert info.value.where is not None and info.value.where.startswith("segment_names.")


def test_naming_is_deterministic_and_ignores_row_order() -> None:
    frame, labels = make_frame(CENTRES)
    features = list(CENTRES[0])
    first = name_segments(profile_segments(frame, labels, features=features))
    again = name_segments(profile_segments(frame, labels, features=features))
    order = np.random.default_rng(1).permutation(len(frame))
    shuffled = name_segments(
        profile_segments(
            frame.iloc[order].reset_index(drop=True),
            np.asarray(labels)[order],
            features=features,
        )
    )
    assert first == again
    assert names_of(first) == names_of(shuffled)


def test_description_carries_the_numbers() -> None:
    p = profiles_of(CENTRES)
    text = describe_segment(p, 0)
    row = p.row(0)
    assert text.startswith(f"20% of customers (100) bring {row['revenue_share']:.0%} of revenue.")
    freq = p.feature_means.loc[0, "frequency"]
    lift = p.lift.loc[0, "frequency"]
    assert f"bought {freq:.0f} times on average ({lift:.1f}x the average customer)" in text
    # a "low" driver is compared with the average customer's value
    new = describe_segment(p, 3)
    overall = p.population_means["tenure_days"]
    assert f"against {overall:,.0f} for the average customer" in new


def test_description_without_revenue() -> None:
    frame = pd.DataFrame({"email_open_rate": [0.9, 0.8, 0.1, 0.2, 0.1, 0.0]})
    p = profile_segments(frame, [0, 0, 1, 1, 1, 1], features=["email_open_rate"], revenue=None)
    text = name_segments(p)[0].description
    assert text == (
        "33% of customers (2). They opened 85% of their emails (2.4x the average customer)."
    )


def test_scores_follow_the_documented_rule() -> None:
    p = profiles_of(CENTRES)
    scores = archetype_scores(p)
    z = p.zscores.clip(-naming.Z_CLIP, naming.Z_CLIP)
    # Bargain Hunters: mean of +discount_share and -avg_order_value
    expected = (z.loc[1, "discount_share"] - z.loc[1, "avg_order_value"]) / 2
    assert scores.loc[1, "bargain_hunters"] == pytest.approx(expected)
    # a required signal pointing the wrong way rules the archetype out
    assert np.isnan(scores.loc[2, "champions"])
    # archetypes whose features are missing never fit
    assert scores["engaged_subscribers"].isna().all()


def test_every_archetype_is_documented_and_named_uniquely() -> None:
    doc = naming.__doc__ or ""
    for archetype in ARCHETYPES:
        assert archetype.name in doc
    assert len({a.name for a in ARCHETYPES}) == len(ARCHETYPES)
    assert len({a.key for a in ARCHETYPES}) == len(ARCHETYPES)


def test_feature_labels() -> None:
    assert feature_label("cart_abandonment_rate") == "Cart Abandonment"
    assert feature_label("my_custom_score") == "My Custom Score"


def test_names_serialise_to_json() -> None:
    result = name_segments(profiles_of(CENTRES))
    doc = {str(s): n.to_dict() for s, n in result.items()}
    assert json.loads(json.dumps(doc))["0"]["name"] == "Champions"


KNOWN = sorted({f for a in ARCHETYPES for s in a.signals for f in s.features})


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    features=st.lists(
        st.sampled_from([*KNOWN, "custom_a", "custom_b"]), min_size=1, max_size=8, unique=True
    ),
    n_segments=st.integers(1, 9),
    seed=st.integers(0, 10_000),
    with_unassigned=st.booleans(),
)
def test_property_names_are_unique_and_complete(
    features: list[str], n_segments: int, seed: int, with_unassigned: bool
) -> None:
    rng = np.random.default_rng(seed)
    shifts = rng.normal(scale=2.0, size=(n_segments, len(features)))
    # duplicate a segment now and then, to force look-alikes
    if n_segments > 2:
        shifts[1] = shifts[0]
    labels = np.repeat(np.arange(n_segments), 20)
    if with_unassigned:
        labels[::13] = -1
    values = rng.normal(size=(len(labels), len(features))) * 0.3 + shifts[labels.clip(0)]
    frame = pd.DataFrame(values, columns=features)
    p = profile_segments(frame, labels, features=features, revenue=None)
    result = name_segments(p)
    assert list(result) == p.segments
    names = [n.name for n in result.values()]
    assert len({n.casefold() for n in names}) == len(names)
    assert all(n.name.strip() and n.description for n in result.values())
    assert name_segments(p) == result
