"""Tests of probabilistic deduplication on hand-made person records.

The records are generated here with a fixed seed: 200 people, a share of them
with one or two typo'd duplicates, a few exact copies, and "siblings" (same
surname and address, different person) that must not be merged.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import json
import random
from collections.abc import Iterable
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from segmint.data.identity import MatchConfig, MatchResult, ProbabilisticMatcher, split_pairs
from segmint.engine.warehouse import Warehouse
from segmint.errors import DataValidationError, NotFittedError, UserInputError

SEED = 20240611
FEBRL_DIR = Path(__file__).resolve().parents[4] / "shared" / "data" / "febrl"

GIVEN = (
    "james john robert michael william david richard joseph thomas charles christopher "
    "daniel matthew anthony mark donald steven paul andrew joshua kenneth kevin brian "
    "george timothy ronald edward jason jeffrey ryan mary patricia jennifer linda "
    "elizabeth barbara susan jessica sarah karen lisa nancy betty margaret sandra ashley "
    "kimberly emily donna michelle carol amanda dorothy melissa deborah stephanie rebecca "
    "sharon laura cynthia kathleen amy angela"
).split()
SURNAMES = (
    "smith johnson williams brown jones garcia miller davis rodriguez martinez hernandez "
    "lopez gonzalez wilson anderson thomas taylor moore jackson martin lee perez thompson "
    "white harris sanchez clark ramirez lewis robinson walker young allen king wright "
    "scott torres nguyen hill flores green adams nelson baker hall rivera campbell "
    "mitchell carter roberts gomez phillips evans turner diaz parker cruz edwards collins "
    "reyes stewart morris morales murphy cook rogers gutierrez ortiz morgan cooper "
    "peterson bailey reed kelly howard ramos kim cox ward richardson"
).split()
STREETS = (
    "acacia avenue banksia street coral crescent dunmore road elm place fig tree lane "
    "gordon terrace harbour view hilltop drive ironbark close jacaranda way kingfisher "
    "parade lakeside boulevard marine esplanade norfolk court oakwood grove pelican "
    "circuit quarry road riverbank street seaview avenue"
).split(" ")
SUBURBS = [
    ("abbotsford", "3067", "vic"),
    ("balmain", "2041", "nsw"),
    ("carlton", "3053", "vic"),
    ("dubbo", "2830", "nsw"),
    ("elwood", "3184", "vic"),
    ("fremantle", "6160", "wa"),
    ("glenelg", "5045", "sa"),
    ("hobart", "7000", "tas"),
    ("indooroopilly", "4068", "qld"),
    ("joondalup", "6027", "wa"),
    ("kingston", "2604", "act"),
    ("launceston", "7250", "tas"),
    ("manly", "2095", "nsw"),
    ("newtown", "2042", "nsw"),
    ("orange", "2800", "nsw"),
    ("paddington", "2021", "nsw"),
]


# ---------------------------------------------------------------- data
def _typo(rng: random.Random, text: str) -> str:
    """One keyboard slip: substitute, delete, insert or transpose a character."""
    if len(text) < 3:
        return text + rng.choice("aeiou")
    i = rng.randrange(1, len(text) - 1)
    kind = rng.choice(("substitute", "delete", "insert", "transpose"))
    letter = rng.choice("abcdefghijklmnopqrstuvwxyz")
    if kind == "substitute":
        return text[:i] + letter + text[i + 1 :]
    if kind == "delete":
        return text[:i] + text[i + 1 :]
    if kind == "insert":
        return text[:i] + letter + text[i:]
    return text[: i - 1] + text[i] + text[i - 1] + text[i + 1 :]


def _digit_typo(rng: random.Random, digits: str) -> str:
    i = rng.randrange(len(digits))
    other = rng.choice([d for d in "0123456789" if d != digits[i]])
    return digits[:i] + other + digits[i + 1 :]


def _person(rng: random.Random, surname: str | None = None) -> dict[str, object]:
    given_name = rng.choice(GIVEN)
    surname = surname or rng.choice(SURNAMES)
    suburb, postcode, state = rng.choice(SUBURBS)
    return {
        "given_name": given_name,
        "surname": surname,
        "date_of_birth": dt.date(1940, 1, 1) + dt.timedelta(days=rng.randrange(365 * 62)),
        "soc_sec_id": f"{rng.randrange(10**6, 10**7)}",
        "street_number": str(rng.randrange(1, 300)),
        "address_1": rng.choice(STREETS).strip(),
        "suburb": suburb,
        "postcode": postcode,
        "state": state,
        "email": f"{given_name}.{surname}{rng.randrange(100)}@example.com",
        "phone": f"+614{rng.randrange(10**7, 10**8)}",
    }


def _near_date(rng: random.Random, day: dt.date) -> dt.date:
    """A plausible mistake in a date of birth that is still a valid date."""
    kind = rng.choice(("day", "year", "swap"))
    if kind == "day":
        return day + dt.timedelta(days=rng.choice((-1, 1)))
    if kind == "year":
        return day.replace(year=day.year + rng.choice((-1, 1)), day=min(day.day, 28))
    if day.day <= 12 and day.day != day.month:
        return day.replace(month=day.day, day=day.month)
    return day + dt.timedelta(days=10)


def _duplicate(rng: random.Random, person: dict[str, object]) -> dict[str, object]:
    record = dict(person)
    for field in rng.sample(
        [
            "given_name",
            "surname",
            "date_of_birth",
            "address_1",
            "street_number",
            "suburb",
            "postcode",
            "soc_sec_id",
            "email",
            "phone",
            "missing",
        ],
        k=rng.choice((1, 2, 2, 3)),
    ):
        value = record.get(field)
        if field == "missing":
            record[rng.choice(["address_1", "suburb", "date_of_birth", "email"])] = None
        elif value is None:
            continue
        elif field == "date_of_birth":
            assert isinstance(value, dt.date)
            record[field] = _near_date(rng, value)
        elif field in ("postcode", "soc_sec_id", "phone", "street_number"):
            record[field] = _digit_typo(rng, str(value))
        else:
            record[field] = _typo(rng, str(value))
    return record


def make_people(n_people: int = 200, seed: int = SEED) -> pd.DataFrame:
    """Records of ``n_people`` people with planted duplicates, shuffled.

    ``person`` is the truth (records of one person share it) and ``kind`` says
    how the record was made: ``original``, ``duplicate``, ``copy`` or ``sibling``.
    """
    rng = random.Random(seed)
    rows: list[dict[str, object]] = []
    for person_id in range(n_people):
        person = _person(rng)
        rows.append({**person, "person": person_id, "kind": "original"})
        if person_id < 8:
            rows.append({**person, "person": person_id, "kind": "copy"})
        elif rng.random() < 0.4:
            for _ in range(rng.choice((1, 1, 2))):
                rows.append({**_duplicate(rng, person), "person": person_id, "kind": "duplicate"})
        if n_people - 10 <= person_id:
            sibling = _person(rng, surname=str(person["surname"]))
            for key in ("street_number", "address_1", "suburb", "postcode", "state"):
                sibling[key] = person[key]
            rows.append({**sibling, "person": n_people + person_id, "kind": "sibling"})
    rng.shuffle(rows)
    frame = pd.DataFrame(rows)
    frame.insert(0, "rec_id", [f"r{i:04d}" for i in range(len(frame))])
    return frame


def as_febrl(people: pd.DataFrame) -> pd.DataFrame:
    """Febrl-shaped text columns, dates as ``yyyymmdd``."""
    frame = people[
        [
            "rec_id",
            "given_name",
            "surname",
            "street_number",
            "address_1",
            "suburb",
            "postcode",
            "state",
            "soc_sec_id",
        ]
    ].copy()
    frame["date_of_birth"] = [
        d.strftime("%Y%m%d") if isinstance(d, dt.date) else None for d in people.date_of_birth
    ]
    return frame


def as_customers(people: pd.DataFrame) -> pd.DataFrame:
    """Columns of segmint's ``customers`` table; mixed case and stray blanks."""
    street = [
        f"{n} {s.title()}" if isinstance(s, str) else None
        for n, s in zip(people.street_number, people.address_1, strict=True)
    ]
    return pd.DataFrame(
        {
            "customer_id": people.rec_id,
            "first_name": people.given_name.str.title(),
            "last_name": " " + people.surname.str.upper(),
            "birth_date": people.date_of_birth,
            "street": street,
            "city": people.suburb,
            "postcode": people.postcode,
            "country": "AU",
            "email": people.email,
            "phone": people.phone,
        }
    )


def _pairs_within(groups: Iterable[Iterable[str]]) -> set[tuple[str, str]]:
    pairs: set[tuple[str, str]] = set()
    for members in groups:
        pairs.update(itertools.combinations(sorted(members), 2))
    return pairs


def true_pairs(people: pd.DataFrame) -> set[tuple[str, str]]:
    return _pairs_within(people.groupby("person")["rec_id"].apply(list))


def cluster_pairs(result: MatchResult) -> set[tuple[str, str]]:
    return _pairs_within(result.clusters().groupby("cluster_id")["id"].apply(list))


def precision_recall(
    predicted: set[tuple[str, str]], truth: set[tuple[str, str]]
) -> tuple[float, float]:
    hits = len(predicted & truth)
    return hits / max(len(predicted), 1), hits / max(len(truth), 1)


# ---------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def people() -> pd.DataFrame:
    return make_people()


@pytest.fixture(scope="module")
def febrl_fit(people: pd.DataFrame) -> tuple[ProbabilisticMatcher, MatchResult]:
    matcher = ProbabilisticMatcher(config=MatchConfig.for_febrl())
    result = matcher.fit(as_febrl(people)).predict()
    yield matcher, result
    matcher.close()


# ---------------------------------------------------------------- accuracy
def test_finds_planted_duplicates(people: pd.DataFrame, febrl_fit) -> None:
    _, result = febrl_fit
    precision, recall = precision_recall(cluster_pairs(result), true_pairs(people))
    assert precision >= 0.97
    assert recall >= 0.9


def test_exact_copies_are_matched_and_siblings_are_not(people: pd.DataFrame, febrl_fit) -> None:
    _, result = febrl_fit
    cluster_of = dict(zip(result.clusters()["id"], result.clusters()["cluster_id"], strict=True))
    for _, group in people[people.kind.isin(["original", "copy"])].groupby("person"):
        if len(group) == 2:
            a, b = group.rec_id
            assert cluster_of[a] == cluster_of[b]
    originals = people[people.kind == "original"].set_index(["surname", "address_1"]).rec_id
    for sibling in people[people.kind == "sibling"].itertuples():
        original = originals.loc[(sibling.surname, sibling.address_1)]
        for rec_id in [original] if isinstance(original, str) else list(original):
            assert cluster_of[rec_id] != cluster_of[sibling.rec_id]


def test_clusters_are_connected_components_of_matches(people: pd.DataFrame, febrl_fit) -> None:
    _, result = febrl_fit
    clusters = result.clusters()
    assert sorted(clusters["id"]) == sorted(people.rec_id)
    cluster_of = dict(zip(clusters["id"], clusters["cluster_id"], strict=True))
    for pair in result.matches.itertuples():
        assert cluster_of[pair.id_l] == cluster_of[pair.id_r]
    # Every cluster id is one of its members.
    for cluster_id, members in clusters.groupby("cluster_id")["id"]:
        assert cluster_id in set(members)


def test_pairs_carry_auditable_evidence(febrl_fit) -> None:
    matcher, result = febrl_fit
    pairs = result.pairs
    assert list(pairs.columns) == [
        "id_l",
        "id_r",
        "match_probability",
        "match_weight",
        "blocking_rule",
        "evidence",
    ]
    assert set(pairs.blocking_rule) <= set(matcher.blocking_rules_)
    for row in pairs.itertuples():
        evidence = MatchResult.explain(row.evidence)
        assert set(evidence) == {"prior", *matcher.roles_}
        total = evidence.pop("prior") + sum(weight for _, weight in evidence.values())
        assert total == pytest.approx(row.match_weight, abs=1e-3 * (len(evidence) + 1))
    best = MatchResult.explain(pairs.evidence.iloc[0])
    assert best["surname"][0] == "exact" and best["surname"][1] > 0
    assert json.loads(pairs.evidence.iloc[-1])  # plain JSON


def test_matches_and_review_follow_the_thresholds(febrl_fit) -> None:
    _, result = febrl_fit
    assert (result.matches.match_probability >= 0.9).all()
    assert result.review.match_probability.between(0.5, 0.9, inclusive="left").all()
    assert len(result.matches) + len(result.review) == (result.pairs.match_probability >= 0.5).sum()


def test_borderline_pairs_go_to_review_not_into_clusters(people: pd.DataFrame, febrl_fit) -> None:
    _, result = febrl_fit
    # Siblings share surname and address but not given name, birth date or id:
    # candidate pairs with real evidence both ways, which must never be merged.
    sibling_ids = set(people.rec_id[people.kind == "sibling"])
    pairs = result.pairs
    siblings = pairs[pairs.id_l.isin(sibling_ids) | pairs.id_r.isin(sibling_ids)]
    assert not siblings.empty
    assert (siblings.match_probability < result.match_threshold).all()
    pair = siblings.sort_values("match_probability").iloc[-1]
    p = float(pair.match_probability)
    # Thresholds that put this pair in the middle of the review band.
    config = MatchConfig.for_febrl(
        match_threshold=(p + 1) / 2, review_threshold=p / 2, min_pair_probability=p / 4
    )
    with ProbabilisticMatcher(config=config) as matcher:
        rethresholded = matcher.fit(as_febrl(people)).predict()
    key = (pair.id_l, pair.id_r)
    assert key in set(zip(rethresholded.review.id_l, rethresholded.review.id_r, strict=True))
    assert key not in set(zip(rethresholded.matches.id_l, rethresholded.matches.id_r, strict=True))
    clusters = rethresholded.clusters().set_index("id").cluster_id
    assert clusters[pair.id_l] != clusters[pair.id_r]
    # Thresholds do not change the model: the same probability as before.
    again = rethresholded.pairs.set_index(["id_l", "id_r"]).match_probability
    assert again[key] == pytest.approx(p)


def test_fit_is_deterministic(people: pd.DataFrame, febrl_fit) -> None:
    _, result = febrl_fit
    with ProbabilisticMatcher(config=MatchConfig.for_febrl()) as matcher:
        again = matcher.fit(as_febrl(people)).predict()
    pd.testing.assert_frame_equal(again.pairs, result.pairs)
    pd.testing.assert_frame_equal(again.clusters(), result.clusters())


# ---------------------------------------------------------------- customers
def test_customers_table_in_the_warehouse(people: pd.DataFrame) -> None:
    with Warehouse(":memory:") as wh:
        wh.register("frame", as_customers(people))
        wh.execute("CREATE TABLE customers AS SELECT * FROM frame")
        wh.unregister("frame")
        before = wh.fetchall("SELECT current_database(), current_schema()")
        with ProbabilisticMatcher(config=MatchConfig.for_customers(), backend=wh) as matcher:
            result = matcher.fit("customers").predict()
            assert matcher.roles_ == (
                "given_name",
                "surname",
                "date_of_birth",
                "email",
                "phone",
                "address_1",
                "suburb",
                "postcode",
                "country",
            )
        # Splink's work tables lived in a scratch database that is gone now.
        assert wh.fetchall("SELECT table_name FROM duckdb_tables()") == [("customers",)]
        assert wh.fetchall("SELECT current_database(), current_schema()") == before
        assert wh.fetchall("SELECT count(*) FROM duckdb_databases() WHERE NOT internal") == [(1,)]
    precision, recall = precision_recall(cluster_pairs(result), true_pairs(people))
    assert precision >= 0.97
    assert recall >= 0.9


def test_read_only_warehouse_is_matched_on_a_copy(people: pd.DataFrame, tmp_path: Path) -> None:
    path = tmp_path / "segmint.duckdb"
    with Warehouse(path) as wh:
        wh.register("frame", as_customers(people))
        wh.execute("CREATE TABLE customers AS SELECT * FROM frame")
    with Warehouse(path, read_only=True) as wh:
        with ProbabilisticMatcher(backend=wh) as matcher:
            result = matcher.fit("customers").predict()
        assert wh.fetchall("SELECT table_name FROM duckdb_tables()") == [("customers",)]
    precision, recall = precision_recall(cluster_pairs(result), true_pairs(people))
    assert precision >= 0.97
    assert recall >= 0.9


def test_missing_columns_are_skipped(people: pd.DataFrame) -> None:
    customers = as_customers(people).drop(columns=["email", "phone", "country"])
    con = duckdb.connect()
    with ProbabilisticMatcher(config=MatchConfig.for_customers(), backend=con) as matcher:
        result = matcher.fit(customers).predict()
        assert matcher.roles_ == (
            "given_name",
            "surname",
            "date_of_birth",
            "address_1",
            "suburb",
            "postcode",
        )
        assert not any("email" in rule or "phone" in rule for rule in matcher.blocking_rules_)
        assert "email" not in result.pairs.evidence.iloc[0]
    con.close()
    precision, recall = precision_recall(cluster_pairs(result), true_pairs(people))
    assert precision >= 0.97
    assert recall >= 0.9


# ---------------------------------------------------------------- errors
def _small() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "rec_id": ["a", "b", "c"],
            "given_name": ["anna", "anna", "bob"],
            "surname": ["smith", "smith", "jones"],
        }
    )


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (_small().drop(columns=["rec_id"]), "id column 'rec_id' is missing"),
        (_small().iloc[:0], "no records"),
        (_small().iloc[:1], "at least two records"),
        (_small().assign(rec_id=["a", "a", "c"]), "duplicate id"),
        (_small().assign(rec_id=["a", None, "c"]), "have no id"),
        (_small()[["rec_id"]].assign(other=1), "none of the configured columns"),
    ],
)
def test_bad_input_is_rejected(frame: pd.DataFrame, message: str) -> None:
    with ProbabilisticMatcher(config=MatchConfig.for_febrl()) as matcher:
        with pytest.raises(DataValidationError, match=message):
            matcher.fit(frame)


def test_unknown_table_and_backend_are_user_errors() -> None:
    with Warehouse(":memory:") as wh:
        with pytest.raises(UserInputError, match="cannot read the table"):
            ProbabilisticMatcher(backend=wh).fit("no_such_table")
        assert wh.fetchall("SELECT count(*) FROM duckdb_databases() WHERE NOT internal") == [(1,)]
    with pytest.raises(UserInputError, match="backend must be"):
        ProbabilisticMatcher(backend="sqlite:///x.db").fit(_small())


def test_predict_before_fit_raises() -> None:
    with pytest.raises(NotFittedError):
        ProbabilisticMatcher().predict()


@pytest.mark.parametrize(
    ("overrides", "where"),
    [
        ({"match_threshold": 0.6, "review_threshold": 0.7}, "review_threshold"),
        ({"match_threshold": 1.5}, "match_threshold"),
        ({"column_map": {"nickname": "nick"}}, "column_map"),
        ({"blocking_rules": (("shoe_size",),)}, "blocking_rules"),
        ({"blocking_rules": ("postcode",)}, "blocking_rules"),
        ({"blocking_rules": ()}, "blocking_rules"),
        ({"deterministic_recall": 0.0}, "deterministic_recall"),
        ({"id_column": ""}, "id_column"),
    ],
)
def test_invalid_config_is_rejected(overrides: dict[str, object], where: str) -> None:
    with pytest.raises(UserInputError) as info:
        MatchConfig(**overrides)  # type: ignore[arg-type]
    assert info.value.where == where


def test_config_is_immutable_and_presets_differ() -> None:
    config = MatchConfig.for_febrl()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.match_threshold = 0.1  # type: ignore[misc]
    assert config.id_column == "rec_id"
    assert MatchConfig.for_customers().column_map["surname"] == "last_name"
    assert config.review_band == (0.5, 0.9)


@given(
    st.lists(st.floats(0, 1), max_size=40),
    st.floats(0, 1),
    st.floats(0, 1),
)
def test_split_pairs_partitions_by_threshold(
    probabilities: list[float], a: float, b: float
) -> None:
    review_threshold, match_threshold = sorted((a, b))
    pairs = pd.DataFrame({"match_probability": probabilities, "n": range(len(probabilities))})
    matches, review = split_pairs(pairs, match_threshold, review_threshold)
    assert set(matches.n).isdisjoint(review.n)
    assert (matches.match_probability >= match_threshold).all()
    assert (
        (review.match_probability >= review_threshold)
        & (review.match_probability < match_threshold)
    ).all()
    below = pairs[pairs.match_probability < review_threshold]
    assert len(matches) + len(review) + len(below) == len(pairs)


# ---------------------------------------------------------------- Febrl
def _febrl_true_pairs(rec_ids: Iterable[str]) -> set[tuple[str, str]]:
    groups: dict[str, list[str]] = {}
    for rec_id in rec_ids:
        groups.setdefault(rec_id.split("-")[1], []).append(rec_id)
    return _pairs_within(groups.values())


@pytest.mark.slow
@pytest.mark.skipif(not (FEBRL_DIR / "dataset1.csv").exists(), reason="Febrl data not present")
def test_febrl_dataset1_accuracy() -> None:
    frame = pd.read_csv(
        FEBRL_DIR / "dataset1.csv", dtype=str, skipinitialspace=True, keep_default_na=False
    )
    frame.columns = [c.strip() for c in frame.columns]
    frame = frame.apply(lambda column: column.str.strip()).replace("", None)
    with ProbabilisticMatcher(config=MatchConfig.for_febrl()) as matcher:
        result = matcher.fit(frame).predict()
    precision, recall = precision_recall(cluster_pairs(result), _febrl_true_pairs(frame.rec_id))
    f1 = 2 * precision * recall / (precision + recall)
    assert precision >= 0.99
    assert f1 >= 0.98
