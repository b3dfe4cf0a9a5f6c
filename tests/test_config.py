"""The project file's ``identity:`` and ``privacy:`` sections."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from segmint.config import (
    IDENTIFIER_TYPES,
    MATCH_ROLES,
    ConsentConfig,
    EventType,
    IdentityConfig,
    MatchingConfig,
    PrivacyConfig,
    parse_project,
)
from segmint.data.identity import (
    DEFAULT_BLOCKED_VALUES,
    DEFAULT_MAX_LINKS,
    ROLES,
    MatchConfig,
    ResolveLimits,
)
from segmint.data.identity import IDENTIFIER_TYPES as LIBRARY_IDENTIFIER_TYPES
from segmint.data.identity.graph import _EVENT_TYPES, _check_blocked
from segmint.data.privacy import DEFAULT_POLICY, ConsentPolicy
from segmint.errors import ConfigError, UserInputError

FULL = """\
version: 1
identity:
  probabilistic: true
  event_types: [identify, alias, track]
  link_traits: false
  user_id_is_customer_id: false
  blocked_values:
    email: ["info@acme.test", "*@mailinator.com"]
    any: [tbd]
  max_links: {email: 5, user_id: 20}
  matching:
    match_threshold: 0.97
    review_threshold: 0.6
    min_pair_probability: 0.05
    columns: {given_name: first_name, surname: last_name, email: email}
    blocking_rules: [[email], [surname, "substr(given_name, 1, 1)"]]
    deterministic_rules: [[email]]
    deterministic_recall: 0.8
    training_rules: [[email], [surname]]
    u_max_pairs: 2000000
    max_iterations: 10
    m_floor: 0.0005
    seed: 7
privacy:
  key_file: secrets/pseudonymisation.key
  retention: {events_days: 730, quarantine_days: 30.5, compact: true}
  consent:
    opt_out: [Analytics, personalization]
    unknown_needs_grant: false
"""


def test_full_sections_parse_into_library_settings() -> None:
    project = parse_project(FULL)
    options = project.identity.resolve_options()
    assert options["probabilistic"] is True
    assert options["event_types"] == ("identify", "alias", "track")
    assert (options["link_traits"], options["user_id_is_customer_id"]) == (False, False)
    limits = options["limits"]
    assert isinstance(limits, ResolveLimits)
    assert (limits.limit("email"), limits.limit("user_id"), limits.limit("phone")) == (5, 20, 100)
    blocked = options["blocked_values"]
    assert blocked["email"][-2:] == ("info@acme.test", "*@mailinator.com")
    assert set(DEFAULT_BLOCKED_VALUES["email"]) < set(blocked["email"])  # defaults kept
    assert blocked["any"][-1] == "tbd" and blocked["phone"] == DEFAULT_BLOCKED_VALUES["phone"]
    assert ("email", "*@mailinator.com") in _check_blocked(blocked)  # the library accepts it

    config = options["match_config"]
    assert isinstance(config, MatchConfig)
    assert config.id_column == "customer_id"
    assert config.review_band == (0.6, 0.97)
    assert config.column_map == {
        "given_name": "first_name",
        "surname": "last_name",
        "email": "email",
    }
    assert config.blocking_rules == (("email",), ("surname", "substr(given_name, 1, 1)"))
    assert config.deterministic_rules == (("email",),)
    assert config.training_rules == (("email",), ("surname",))
    assert (config.min_pair_probability, config.deterministic_recall) == (0.05, 0.8)
    assert (config.u_max_pairs, config.max_iterations, config.m_floor, config.seed) == (
        2e6,
        10,
        5e-4,
        7,
    )

    privacy = project.privacy
    assert privacy.key_path(Path("/srv/shop")) == Path("/srv/shop/secrets/pseudonymisation.key")
    assert (privacy.retention.events_days, privacy.retention.quarantine_days) == (730, 30.5)
    assert privacy.retention.compact is True
    policy = privacy.consent.policy()
    assert isinstance(policy, ConsentPolicy)
    assert policy.opt_out == {"analytics", "personalization"}
    assert policy.opt_in == {"email_marketing", "advertising"}
    assert policy.default("personalization") and policy.default("newsletter")  # unknown: allowed
    assert not policy.default("advertising")


def test_absent_sections_mean_the_library_defaults() -> None:
    project = parse_project("version: 1\n")
    options = project.identity.resolve_options()
    assert options["probabilistic"] is False
    assert options["match_config"] == MatchConfig.for_customers()
    assert options["limits"] == ResolveLimits()
    assert options["blocked_values"] == {k: tuple(v) for k, v in DEFAULT_BLOCKED_VALUES.items()}
    assert options["event_types"] == ("identify", "alias")
    assert options["link_traits"] and options["user_id_is_customer_id"]
    assert project.privacy.consent.policy() == DEFAULT_POLICY
    assert project.privacy.key_path(Path(".")) is None
    retention = project.privacy.retention
    assert (retention.events_days, retention.quarantine_days, retention.compact) == (
        None,
        None,
        False,
    )


def test_the_names_the_project_file_knows_are_the_librarys() -> None:
    assert IDENTIFIER_TYPES == LIBRARY_IDENTIFIER_TYPES
    assert MATCH_ROLES == ROLES
    assert tuple(EventType) == _EVENT_TYPES
    assert {t for t in IDENTIFIER_TYPES if t != "customer_id"} == set(DEFAULT_MAX_LINKS)


def test_builtin_blocked_values_can_be_turned_off() -> None:
    config = IdentityConfig(default_blocked_values=False, blocked_values={"email": ["x@y.z"]})
    assert config.blocked() == {"email": ("x@y.z",)}
    assert IdentityConfig(default_blocked_values=False).blocked() == {}


def test_command_line_values_override_the_file() -> None:
    config = parse_project(FULL).identity
    options = config.resolve_options(probabilistic=False, match_threshold=0.99)
    assert options["probabilistic"] is False
    assert options["match_config"].review_band == (0.6, 0.99)
    with pytest.raises(UserInputError, match="review_threshold"):
        config.resolve_options(review_threshold=0.98, match_threshold=0.9)


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        (
            "identity:\n  matching:\n    colour: red\n",
            ["segmint.yaml:3", "identity.matching.colour"],
        ),
        ("identity:\n  blocked_value: {}\n", ["segmint.yaml:2", "identity.blocked_value"]),
        (
            "privacy:\n  retention:\n    event_days: 3\n",
            ["segmint.yaml:3", "privacy.retention.event_days"],
        ),
        ("privacy:\n  consent:\n    opt_inn: [x]\n", ["segmint.yaml:3", "privacy.consent.opt_inn"]),
    ],
)
def test_unknown_keys_are_rejected_with_their_path(text: str, fragments: list[str]) -> None:
    with pytest.raises(ConfigError, match="unknown key") as error:
        parse_project(text)
    for fragment in fragments:
        assert fragment in str(error.value)


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        (
            "identity:\n  blocked_values: {customer_id: [c1]}\n",
            ["identity.blocked_values", "customer ids cannot be blocked"],
        ),
        (
            "identity:\n  blocked_values: {fax: ['1']}\n",
            ["identity.blocked_values", "unknown identifier type 'fax'"],
        ),
        (
            "identity:\n  max_links: {customer_id: 3}\n",
            ["identity.max_links", "no limit can be set for 'customer_id'"],
        ),
        ("identity:\n  max_links: {email: 0}\n", ["identity.max_links", "at least 1"]),
        ("identity:\n  event_types: [click]\n", ["identity.event_types[0]", "identify"]),
        (
            "identity:\n  matching:\n    blocking_rules: [[surname, nmae]]\n",
            ["segmint.yaml:3", "identity.matching.blocking_rules", "unknown role(s) ['nmae']"],
        ),
        (
            "identity:\n  matching:\n    training_rules: [['substr(given, 1, 1)']]\n",
            ["identity.matching.training_rules", "unknown role(s) ['given']"],
        ),
        (
            "identity:\n  matching:\n    deterministic_rules: [['lower(']]\n",
            ["identity.matching.deterministic_rules", "not a valid SQL expression"],
        ),
        (
            "identity:\n  matching:\n    blocking_rules: [[]]\n",
            ["identity.matching.blocking_rules", "non-empty"],
        ),
        (
            "identity:\n  matching:\n    columns: {surname: surname}\n",
            ["identity.matching.columns", "'surname' is not a column of customers"],
        ),
        (
            "identity:\n  matching:\n    columns: {nickname: first_name}\n",
            ["identity.matching.columns", "unknown role 'nickname'"],
        ),
        (
            "identity:\n  matching: {review_threshold: 0.95}\n",
            ["identity.matching", "review_threshold (0.95) is greater than match_threshold"],
        ),
        (
            "identity:\n  matching: {match_threshold: 0}\n",
            ["identity.matching.match_threshold", "greater than 0"],
        ),
        (
            "privacy:\n  retention: {events_days: -1}\n",
            ["privacy.retention.events_days", "greater than or equal to 0"],
        ),
        (
            "privacy:\n  consent: {opt_out: [ads], opt_in: [ADS]}\n",
            ["privacy.consent", "both opt-out and opt-in: ads"],
        ),
        ("privacy:\n  consent: {opt_in: ['  ']}\n", ["privacy.consent.opt_in", "empty"]),
    ],
)
def test_bad_values_name_their_key_path(text: str, fragments: list[str]) -> None:
    with pytest.raises(ConfigError) as error:
        parse_project(text)
    for fragment in fragments:
        assert fragment in str(error.value)


@pytest.mark.parametrize("name", ["key", "pseudonymization_key", "pseudonymisation_key", "secret"])
def test_the_key_itself_is_refused_and_not_echoed(name: str) -> None:
    secret = "s3cr3t-0123456789abcdef"
    with pytest.raises(ConfigError, match="must never be in the project file") as error:
        parse_project(f"privacy:\n  {name}: {secret}\n")
    assert secret not in str(error.value) and "key_file" in str(error.value)


_PURPOSES = (
    "analytics",
    "personalization",
    "email_marketing",
    "advertising",
    "newsletter",
    "profiling",
)


@given(opt_out=st.lists(st.sampled_from(_PURPOSES), unique=True))
def test_a_lone_opt_out_list_decides_every_purpose(opt_out: list[str]) -> None:
    policy = ConsentConfig(opt_out=[p.upper() for p in opt_out]).policy()
    for purpose in _PURPOSES:
        assert policy.default(purpose) is (purpose in opt_out)


@given(opt_in=st.lists(st.sampled_from(_PURPOSES), unique=True))
def test_a_lone_opt_in_list_leaves_the_rest_to_the_defaults(opt_in: list[str]) -> None:
    policy = ConsentConfig(opt_in=opt_in).policy()
    for purpose in _PURPOSES:
        expected = purpose == "analytics" and purpose not in opt_in
        assert policy.default(purpose) is expected


@given(
    match=st.floats(-0.5, 1.5, allow_nan=False),
    review=st.floats(-0.5, 1.5, allow_nan=False),
    floor=st.floats(-0.5, 1.5, allow_nan=False),
)
def test_thresholds_accepted_exactly_when_the_library_accepts_them(
    match: float, review: float, floor: float
) -> None:
    try:
        MatchConfig.for_customers(
            match_threshold=match, review_threshold=review, min_pair_probability=floor
        )
        library_accepts = True
    except UserInputError:
        library_accepts = False
    try:
        MatchingConfig(match_threshold=match, review_threshold=review, min_pair_probability=floor)
        file_accepts = True
    except ValueError:
        file_accepts = False
    assert file_accepts is library_accepts


@given(
    type_=st.sampled_from([*IDENTIFIER_TYPES, "any", "fax", "Email"]),
    limit=st.integers(-2, 3),
)
def test_blocked_types_and_limits_accepted_exactly_when_the_library_accepts_them(
    type_: str, limit: int
) -> None:
    def accepts(build: object) -> bool:
        try:
            build()  # type: ignore[operator]
        except (UserInputError, ValueError):
            return False
        return True

    assert accepts(lambda: IdentityConfig(blocked_values={type_: ["x"]})) is accepts(
        lambda: _check_blocked({type_: ["x"]})
    )
    assert accepts(lambda: IdentityConfig(max_links={type_: limit})) is accepts(
        lambda: ResolveLimits({type_: limit})
    )


def test_key_path_keeps_absolute_paths() -> None:
    assert PrivacyConfig(key_file="/etc/segmint/key").key_path(Path("/srv")) == Path(
        "/etc/segmint/key"
    )
