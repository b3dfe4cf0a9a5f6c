"""The project file (``segmint.yaml``) and runtime settings.

The project file is a typed pydantic model with ``extra="forbid"``: an unknown
or misspelt key is an error that names its key path and line.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from segmint.errors import ConfigError
from segmint.realtime.events import EventType
from segmint.realtime.trigger_config import TriggerConfig, check_unique_names

PROJECT_FILE = "segmint.yaml"


class SourceKind(StrEnum):
    """The canonical table a source feeds."""

    customers = "customers"
    orders = "orders"
    order_items = "order_items"
    events = "events"
    consents = "consents"
    products = "products"


class SourceFormat(StrEnum):
    csv = "csv"
    parquet = "parquet"
    jsonl = "jsonl"


class ColumnType(StrEnum):
    string = "string"
    integer = "integer"
    float = "float"
    boolean = "boolean"
    date = "date"
    timestamp = "timestamp"
    json = "json"


class ImputeStrategy(StrEnum):
    median = "median"
    mode = "mode"
    knn = "knn"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ColumnRule(_Strict):
    """Validation rules for one canonical column; a row failing any is quarantined."""

    required: bool | None = None
    type: ColumnType | None = None
    min: float | None = None
    max: float | None = None
    regex: str | None = None
    allowed: list[str] | None = None
    not_in_future: bool | None = None

    @field_validator("regex")
    @classmethod
    def _regex_compiles(cls, value: str | None) -> str | None:
        if value is not None:
            import re

            try:
                re.compile(value)
            except re.error as e:
                raise ValueError(f"invalid regular expression: {e}") from e
        return value

    @model_validator(mode="after")
    def _range_ordered(self) -> ColumnRule:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        return self


class Source(_Strict):
    """One input: files of one format that feed one canonical table."""

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    kind: SourceKind
    path: str = Field(description="File path or glob, relative to the project file.")
    format: SourceFormat | None = Field(
        default=None, description="csv, parquet or jsonl; inferred from the extension if absent."
    )
    columns: dict[str, str] = Field(
        default_factory=dict,
        description="Canonical column -> source column. Unmapped canonical columns are read "
        "from a source column of the same name when present.",
    )
    delimiter: str = ","
    timestamp_format: str | None = Field(
        default=None, description="strptime format of timestamps, e.g. '%d/%m/%Y %H:%M'."
    )
    timezone: str = Field(default="UTC", description="Time zone of naive timestamps.")
    default_phone_region: str = Field(
        default="US", description="Region used to parse phone numbers written without +country."
    )
    validation: dict[str, ColumnRule] = Field(default_factory=dict)
    dedupe_keys: list[str | list[str]] | None = Field(
        default=None,
        description="Keys identifying a record: a column or a list of columns each. Rows that "
        "share any key are merged. Defaults depend on the kind.",
    )
    impute: dict[str, ImputeStrategy] = Field(default_factory=dict)

    @field_validator("columns")
    @classmethod
    def _no_column_mapped_twice(cls, mapping: dict[str, str]) -> dict[str, str]:
        seen: dict[str, str] = {}
        for canonical, source_column in mapping.items():
            if source_column in seen:
                raise ValueError(
                    f"source column {source_column!r} is mapped twice "
                    f"(to {seen[source_column]!r} and {canonical!r})"
                )
            seen[source_column] = canonical
        return mapping

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as e:
            raise ValueError(f"unknown time zone {value!r}") from e
        return value

    @model_validator(mode="after")
    def _known_columns(self) -> Source:
        from segmint.data.schema import TABLES

        known = set(TABLES[self.kind.value].user_columns())
        for section, names in (
            ("columns", self.columns),
            ("validation", self.validation),
            ("impute", self.impute),
            ("dedupe_keys", [c for key in self.key_columns() for c in key]),
        ):
            for name in names:
                if name not in known:
                    raise ValueError(
                        f"{section}: {name!r} is not a column of {self.kind.value} "
                        f"(known: {', '.join(sorted(known))})"
                    )
        return self

    def key_columns(self) -> list[tuple[str, ...]]:
        """Dedupe keys as column tuples (the project file's, else the kind's defaults)."""
        from segmint.data.schema import TABLES

        keys = (
            self.dedupe_keys
            if self.dedupe_keys is not None
            else list(TABLES[self.kind.value].default_dedupe_keys)
        )
        return [(key,) if isinstance(key, str) else tuple(key) for key in keys]

    def resolved_format(self) -> SourceFormat:
        if self.format is not None:
            return self.format
        suffix = Path(self.path.replace("*", "x")).suffix.lower().lstrip(".")
        aliases = {
            "csv": "csv",
            "txt": "csv",
            "parquet": "parquet",
            "pq": "parquet",
            "jsonl": "jsonl",
            "ndjson": "jsonl",
            "json": "jsonl",
        }
        if suffix not in aliases:
            raise ConfigError(
                f"cannot infer the format of {self.path!r}; set format: csv | parquet | jsonl",
                where=f"sources.{self.name}.format",
            )
        return SourceFormat(aliases[suffix])


class FeaturesConfig(_Strict):
    """How features are computed."""

    session_gap_minutes: float = Field(default=30, gt=0)
    custom: dict[str, str] = Field(
        default_factory=dict,
        description="User-defined features: name -> SQL returning customer_id and value.",
    )
    lifecycle: dict[str, float] = Field(
        default_factory=dict, description="Lifecycle thresholds in days (see `segmint features`)."
    )
    clv_horizon_days: int = Field(default=90, gt=0)


class RuleSegment(_Strict):
    """A segment defined by a rule-language expression over features."""

    name: str = Field(min_length=1, max_length=80)
    rule: str = Field(min_length=1)
    description: str | None = None
    subdivide: int | None = Field(
        default=None, ge=2, le=10, description="Split the rule's members into this many clusters."
    )


class SegmentationConfig(_Strict):
    """How segments are found."""

    algorithm: Literal["kmeans", "gmm", "ward", "hdbscan", "dbscan", "fcm"] = "kmeans"
    k: int | None = Field(default=None, ge=2, le=30, description="Fixed k; chosen when absent.")
    k_min: int = Field(default=2, ge=2)
    k_max: int = Field(default=10, ge=2, le=30)
    min_share: float = Field(default=0.02, ge=0, lt=0.5)
    sample_size: int = Field(default=200_000, ge=100)
    features: list[str] | None = Field(
        default=None, description="Features to cluster on; a sensible default set when absent."
    )
    scaling: Literal["standard", "robust", "none"] = Field(
        default="standard",
        description="Scaling after log1p: standard (z) or robust (median/IQR). Robust scaling "
        "inflates features that are nearly constant (tiny IQR), so z is the default.",
    )
    names: dict[int, str] = Field(default_factory=dict, description="Segment id -> name override.")
    bootstrap: int = Field(default=20, ge=0, le=500, description="Bootstrap resamples (0: skip).")
    fallback_rule: str = Field(
        default="frequency = 0 AND sessions = 0",
        description="Customers matching this rule have too little data and get the fallback "
        "segment instead of a cluster.",
    )
    seed: int = 0

    @model_validator(mode="after")
    def _k_range(self) -> SegmentationConfig:
        if self.k_min > self.k_max:
            raise ValueError(f"k_min ({self.k_min}) is greater than k_max ({self.k_max})")
        return self


class RealtimeConfig(_Strict):
    """The real-time service (``segmint serve``)."""

    dedupe_window_hours: float = Field(
        default=24,
        ge=1,
        le=24 * 90,
        description="A messageId seen within this many hours (by received_at) is a duplicate.",
    )
    future_tolerance_minutes: float = Field(
        default=60, ge=0, description="Timestamps further ahead than this are flagged as future."
    )
    personalization_requires_grant: bool = Field(
        default=False,
        description="Enter trigger segments only for persons who granted personalization "
        "(default: unless they withdrew it).",
    )
    rescore_interval_seconds: float = Field(
        default=1.0, gt=0, description="How often model segments of changed persons are re-scored."
    )
    profile_compaction_seconds: float = Field(
        default=30.0,
        gt=0,
        description="How often the profiles table is refreshed from the profile journal "
        "(every commit appends to the journal; the API always serves the live profile).",
    )
    engine_threads: int = Field(
        default=1,
        ge=1,
        le=64,
        description="DuckDB threads of the service's connection. Group commits run many "
        "statements of a few rows, and one thread runs those fastest.",
    )
    intake_log: bool = Field(
        default=True,
        description="Acknowledge a group of events once it is synced to the intake log "
        "(<warehouse>.intake) and write the warehouse every writer tick (about 0.1 s); "
        "false: commit every group to the warehouse before acknowledging it (slower).",
    )
    redis_url: str | None = Field(
        default=None, description="Redis for the membership stream, e.g. redis://127.0.0.1:6379/0."
    )
    membership_stream: str = Field(
        default="segmint:memberships", description="Redis stream the outbox is published to."
    )
    max_page_size: int = Field(default=1000, ge=1, le=10_000)


# --------------------------------------------------------------------------- identity
#: Identifier types of the identity graph, in the order used to pick a person's founding
#: identifier.
IDENTIFIER_TYPES: tuple[str, ...] = (
    "customer_id",
    "user_id",
    "loyalty_id",
    "email",
    "phone",
    "anonymous_id",
    "external",
)


#: Roles a customers column can play in probabilistic matching, in the order comparisons
#: are listed.
MATCH_ROLES: tuple[str, ...] = (
    "given_name",
    "surname",
    "date_of_birth",
    "soc_sec_id",
    "email",
    "phone",
    "street_number",
    "address_1",
    "address_2",
    "suburb",
    "postcode",
    "state",
    "country",
)
_LIMITED_TYPES = tuple(t for t in IDENTIFIER_TYPES if t != "customer_id")
_IDENTIFIER_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


def _rule_roles(element: str) -> set[str]:
    """The roles a blocking-rule element refers to: a role name or an SQL expression."""
    import re

    if re.fullmatch(_IDENTIFIER_NAME, element):
        return {element}
    import sqlglot
    from sqlglot import exp

    try:
        tree = sqlglot.parse_one(element, read="duckdb")
    except sqlglot.errors.ParseError as e:
        raise ValueError(f"{element!r} is not a valid SQL expression") from e
    return {column.name for column in tree.find_all(exp.Column)}


Rule = list[str]


def _check_match_rules(rules: list[Rule] | None) -> list[Rule] | None:
    if rules is None:
        return None
    for rule in rules:
        if not rule:
            raise ValueError("each rule must be a non-empty list of roles or expressions")
        for element in rule:
            unknown = _rule_roles(element) - set(MATCH_ROLES)
            if unknown:
                raise ValueError(
                    f"unknown role(s) {sorted(unknown)} in {element!r}; "
                    f"roles are {', '.join(MATCH_ROLES)}"
                )
    return rules


class MatchingConfig(_Strict):
    """The probabilistic step (Splink, Fellegi-Sunter) of ``segmint identity resolve``.

    Absent rules and columns keep the library's defaults
    (:class:`segmint.data.identity.MatchConfig`). Rules are lists of roles or SQL
    expressions over roles; at scale, prefer rules whose pairs grow linearly with
    the records (combined keys) and EM training rules that mostly admit true
    matches.

    Examples
    --------
    >>> MatchingConfig(match_threshold=0.95, blocking_rules=[["email"]]).review_threshold
    0.5
    """

    match_threshold: float = Field(
        default=0.9, gt=0, le=1, description="Pairs at or above this probability are merged."
    )
    review_threshold: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="Pairs from this probability up to match_threshold go to "
        "`segmint identity review` instead of being merged.",
    )
    min_pair_probability: float = Field(
        default=0.01, ge=0, le=1, description="Scored pairs below this are dropped (0 keeps all)."
    )
    columns: dict[str, str] | None = Field(
        default=None,
        description="Role -> customers column compared (roles: given_name, surname, "
        "date_of_birth, email, phone, address_1, suburb, postcode, country, ...). Default: "
        "first_name, last_name, birth_date, email, phone, street, city, postcode, country.",
    )
    blocking_rules: list[Rule] | None = Field(
        default=None,
        min_length=1,
        description="Candidate pairs agree exactly on every element of at least one rule; an "
        "element is a role or an SQL expression over roles, e.g. 'substr(given_name, 1, 1)'.",
    )
    deterministic_rules: list[Rule] | None = Field(
        default=None,
        description="Rules that (nearly) only admit true matches; they estimate the prior "
        "match probability.",
    )
    deterministic_recall: float = Field(
        default=0.7, gt=0, le=1, description="Share of true matches the deterministic rules find."
    )
    training_rules: list[Rule] | None = Field(
        default=None, description="Blocking rules of the EM sessions that estimate m, in order."
    )
    u_max_pairs: float = Field(
        default=5e5, ge=1, description="Random pairs sampled to estimate the u probabilities."
    )
    max_iterations: int = Field(default=25, ge=1, description="EM iterations per session.")
    m_floor: float = Field(
        default=1e-3, ge=0, lt=0.1, description="Smallest m probability of any level."
    )
    seed: int = Field(default=42, description="Seed of the random sampling.")

    _rules = field_validator("blocking_rules", "deterministic_rules", "training_rules")(
        _check_match_rules
    )

    @field_validator("columns")
    @classmethod
    def _known_columns(cls, columns: dict[str, str] | None) -> dict[str, str] | None:
        if columns is None:
            return None
        from segmint.data.schema import TABLES

        known = set(TABLES["customers"].user_columns())
        for role, column in columns.items():
            if role not in MATCH_ROLES:
                raise ValueError(f"unknown role {role!r}; roles are {', '.join(MATCH_ROLES)}")
            if column not in known:
                raise ValueError(f"{column!r} is not a column of customers (for {role})")
        if not columns:
            raise ValueError("compare at least one column")
        return columns

    @model_validator(mode="after")
    def _thresholds_ordered(self) -> MatchingConfig:
        if self.review_threshold > self.match_threshold:
            raise ValueError(
                f"review_threshold ({self.review_threshold}) is greater than "
                f"match_threshold ({self.match_threshold})"
            )
        if self.min_pair_probability > self.review_threshold:
            raise ValueError(
                f"min_pair_probability ({self.min_pair_probability}) is greater than "
                f"review_threshold ({self.review_threshold})"
            )
        return self


class IdentityConfig(_Strict):
    """Identity resolution (``segmint identity resolve``).

    Examples
    --------
    >>> config = IdentityConfig(blocked_values={"email": ["shop@acme.com"]})
    >>> options = config.resolve_options(probabilistic=True, match_threshold=0.95)
    >>> options["probabilistic"], options["match_config"].review_band
    (True, (0.5, 0.95))
    >>> "shop@acme.com" in options["blocked_values"]["email"]
    True
    """

    probabilistic: bool = Field(
        default=False,
        description="Also match customer records that share no identifier (Splink); "
        "`--probabilistic / --no-probabilistic` overrides it.",
    )
    event_types: list[EventType] = Field(
        default_factory=lambda: [EventType.identify, EventType.alias],
        description="Event types whose userId / anonymousId pairs link identifiers.",
    )
    link_traits: bool = Field(
        default=True,
        description="Link traits.email, traits.phone and context.externalIds of identify events.",
    )
    user_id_is_customer_id: bool = Field(
        default=True, description="A Segment userId equal to a customer_id is that customer."
    )
    blocked_values: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Identifier type (or 'any') -> values or glob patterns ('*@acme.test') "
        "never used as identifiers, matched case-insensitively on the normalised value.",
    )
    default_blocked_values: bool = Field(
        default=True,
        description="Keep segmint's built-in blocked values (test e-mails, 'n/a', 0000000 "
        "phones, ...) and add blocked_values to them; false: block only blocked_values.",
    )
    max_links: dict[str, int] = Field(
        default_factory=dict,
        description="Identifier type -> how many distinct identifiers one value may be linked "
        "to before it counts as too common (defaults: user_id 10000, others 100).",
    )
    matching: MatchingConfig = Field(default_factory=MatchingConfig)

    @field_validator("blocked_values")
    @classmethod
    def _blockable_types(cls, blocked: dict[str, list[str]]) -> dict[str, list[str]]:
        for type_ in blocked:
            if type_ == "customer_id":
                raise ValueError("customer ids cannot be blocked (each customer is a person)")
            if type_ != "any" and type_ not in IDENTIFIER_TYPES:
                raise ValueError(
                    f"unknown identifier type {type_!r}; types are any, "
                    + ", ".join(_LIMITED_TYPES)
                )
        return blocked

    @field_validator("max_links")
    @classmethod
    def _limited_types(cls, limits: dict[str, int]) -> dict[str, int]:
        for type_, limit in limits.items():
            if type_ not in _LIMITED_TYPES:
                raise ValueError(
                    f"no limit can be set for {type_!r}; types are {', '.join(_LIMITED_TYPES)}"
                )
            if limit < 1:
                raise ValueError(f"the limit of {type_} must be at least 1, not {limit}")
        return limits

    @field_validator("event_types")
    @classmethod
    def _distinct_event_types(cls, types: list[EventType]) -> list[EventType]:
        return list(dict.fromkeys(types))

    def blocked(self) -> dict[str, tuple[str, ...]]:
        """The blocked values in effect: the built-in list (unless turned off) plus ours."""
        merged: dict[str, tuple[str, ...]] = {}
        if self.default_blocked_values:
            from segmint.data.identity.graph import DEFAULT_BLOCKED_VALUES

            merged = {type_: tuple(values) for type_, values in DEFAULT_BLOCKED_VALUES.items()}
        for type_, values in self.blocked_values.items():
            merged[type_] = (*merged.get(type_, ()), *values)
        return merged

    def resolve_options(
        self,
        *,
        probabilistic: bool | None = None,
        match_threshold: float | None = None,
        review_threshold: float | None = None,
    ) -> dict[str, Any]:
        """Keyword arguments of :func:`segmint.data.identity.resolve_identities`.

        Arguments given here (the command line) override the project file.

        Raises
        ------
        UserInputError
            Thresholds that are out of order once the overrides are applied.
        """
        from segmint.data.identity.graph import ResolveLimits
        from segmint.data.identity.probabilistic import MatchConfig

        matching = self.matching
        rules = {
            name: tuple(tuple(rule) for rule in value)
            for name in ("blocking_rules", "deterministic_rules", "training_rules")
            if (value := getattr(matching, name)) is not None
        }
        extra: dict[str, Any] = {"column_map": matching.columns} if matching.columns else {}
        if match_threshold is None:
            match_threshold = matching.match_threshold
        if review_threshold is None:
            review_threshold = matching.review_threshold
        match_config = MatchConfig.for_customers(
            match_threshold=match_threshold,
            review_threshold=review_threshold,
            min_pair_probability=matching.min_pair_probability,
            deterministic_recall=matching.deterministic_recall,
            u_max_pairs=matching.u_max_pairs,
            max_iterations=matching.max_iterations,
            m_floor=matching.m_floor,
            seed=matching.seed,
            **rules,
            **extra,
        )
        return {
            "blocked_values": self.blocked(),
            "limits": ResolveLimits(dict(self.max_links)),
            "event_types": tuple(t.value for t in self.event_types),
            "link_traits": self.link_traits,
            "user_id_is_customer_id": self.user_id_is_customer_id,
            "probabilistic": self.probabilistic if probabilistic is None else probabilistic,
            "match_config": match_config,
        }


# --------------------------------------------------------------------------- privacy
_KEY_FIELDS = (
    "key",
    "secret",
    "pseudonymization_key",
    "pseudonymisation_key",
    "pseudonymization_secret",
)


class RetentionConfig(_Strict):
    """How long events and quarantined rows are kept (``segmint privacy retention``).

    Examples
    --------
    >>> RetentionConfig(events_days=730).quarantine_days is None
    True
    """

    events_days: float | None = Field(
        default=None, ge=0, description="Keep events of the last N days (by timestamp)."
    )
    quarantine_days: float | None = Field(
        default=None, ge=0, description="Keep quarantined rows of the last N days."
    )
    compact: bool = Field(
        default=False, description="Rewrite the file so deleted rows leave its bytes."
    )


_DEFAULT_OPT_OUT = ("analytics",)
_DEFAULT_OPT_IN = ("personalization", "email_marketing", "advertising")


def _purposes(values: list[str] | None) -> list[str] | None:
    if values is None:
        return None
    cleaned = [str(v).strip().lower() for v in values]
    if any(not v for v in cleaned):
        raise ValueError("a consent purpose cannot be empty")
    return list(dict.fromkeys(cleaned))


class ConsentConfig(_Strict):
    """The consent policy: what applies to a purpose when a person made no choice.

    A list left out keeps its default purposes except those the other list names,
    so ``opt_out: [analytics, personalization]`` alone moves personalization.

    Examples
    --------
    >>> ConsentConfig(opt_out=["analytics", "personalization"]).opt_in_purposes()
    ['email_marketing', 'advertising']
    """

    opt_out: list[str] | None = Field(
        default=None,
        description="Purposes allowed unless the person withdrew (legitimate interest); "
        "default: analytics.",
    )
    opt_in: list[str] | None = Field(
        default=None,
        description="Purposes that need a grant that was not later withdrawn; default: "
        "personalization, email_marketing, advertising.",
    )
    unknown_needs_grant: bool = Field(
        default=True, description="Purposes named in neither list need a grant."
    )

    _clean = field_validator("opt_out", "opt_in")(_purposes)

    @model_validator(mode="after")
    def _disjoint(self) -> ConsentConfig:
        if self.opt_out is not None and self.opt_in is not None:
            both = sorted(set(self.opt_out) & set(self.opt_in))
            if both:
                raise ValueError(f"purposes cannot be both opt-out and opt-in: {', '.join(both)}")
        return self

    def opt_out_purposes(self) -> list[str]:
        """The opt-out purposes in effect."""
        if self.opt_out is not None:
            return list(self.opt_out)
        return [p for p in _DEFAULT_OPT_OUT if p not in (self.opt_in or ())]

    def opt_in_purposes(self) -> list[str]:
        """The opt-in purposes in effect."""
        if self.opt_in is not None:
            return list(self.opt_in)
        return [p for p in _DEFAULT_OPT_IN if p not in (self.opt_out or ())]

    def policy(self) -> Any:
        """The :class:`segmint.data.privacy.ConsentPolicy` this section describes.

        Examples
        --------
        >>> ConsentConfig(opt_out=["analytics", "personalization"]).policy().default(
        ...     "personalization")
        True
        """
        from segmint.data.privacy.consent import ConsentPolicy

        return ConsentPolicy(
            opt_out=frozenset(self.opt_out_purposes()),
            opt_in=frozenset(self.opt_in_purposes()),
            unknown_needs_grant=self.unknown_needs_grant,
        )


class PrivacyConfig(_Strict):
    """Retention, the consent policy and where the pseudonymisation key is kept.

    The key itself never belongs in the project file (which is kept in git): give
    ``key_file``, a file holding it, or set ``SEGMINT_PSEUDONYMIZATION_KEY`` /
    ``SEGMINT_PSEUDONYMIZATION_KEY_FILE``, which take precedence.

    Examples
    --------
    >>> PrivacyConfig(key_file="secrets/key").key_path(Path("/srv/shop"))
    PosixPath('/srv/shop/secrets/key')
    """

    retention: RetentionConfig = Field(default_factory=RetentionConfig)
    consent: ConsentConfig = Field(default_factory=ConsentConfig)
    key_file: str | None = Field(
        default=None,
        min_length=1,
        description="File holding the pseudonymisation key, relative to the project file. "
        "Never the key itself.",
    )

    @model_validator(mode="before")
    @classmethod
    def _no_secret(cls, data: Any) -> Any:
        if isinstance(data, dict):
            secret = [k for k in data if str(k).lower() in _KEY_FIELDS]
            if secret:
                raise ValueError(
                    f"{secret[0]}: the pseudonymisation key must never be in the project file; "
                    "put it in a file and give its path as key_file, or set "
                    "SEGMINT_PSEUDONYMIZATION_KEY"
                )
        return data

    def key_path(self, base_dir: Path) -> Path | None:
        """The key file as a path (relative paths are read from ``base_dir``)."""
        if self.key_file is None:
            return None
        path = Path(self.key_file).expanduser()
        return path if path.is_absolute() else base_dir / path


class Project(_Strict):
    """The whole project file."""

    version: Literal[1] = 1
    warehouse: str = Field(default="./segmint.duckdb", description="DuckDB file.")
    sources: list[Source] = Field(default_factory=list)
    features: FeaturesConfig = Field(default_factory=FeaturesConfig)
    segmentation: SegmentationConfig = Field(default_factory=SegmentationConfig)
    rule_segments: list[RuleSegment] = Field(default_factory=list)
    triggers: list[TriggerConfig] = Field(default_factory=list)
    realtime: RealtimeConfig = Field(default_factory=RealtimeConfig)
    identity: IdentityConfig = Field(default_factory=IdentityConfig)
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig)

    @field_validator("triggers")
    @classmethod
    def _unique_triggers(cls, triggers: list[TriggerConfig]) -> list[TriggerConfig]:
        return check_unique_names(triggers)

    @field_validator("sources")
    @classmethod
    def _unique_names(cls, sources: list[Source]) -> list[Source]:
        names = [s.name for s in sources]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"source names must be unique; repeated: {', '.join(duplicates)}")
        return sources

    def source(self, name: str) -> Source:
        for source in self.sources:
            if source.name == name:
                return source
        known = ", ".join(s.name for s in self.sources) or "none"
        raise ConfigError(f"unknown source {name!r} (known: {known})")


class Settings(BaseSettings):
    """Runtime settings from the environment (``SEGMINT_*``)."""

    model_config = SettingsConfigDict(env_prefix="SEGMINT_", extra="ignore")

    project: Path = Path(PROJECT_FILE)
    log_level: str = "WARNING"
    # The engine spills to disk beyond this. The process peaks ~1-3 GB above it (Python,
    # Arrow batches, scikit-learn), so 6 GB keeps a 1M-customer run under 8 GB resident.
    memory_limit: str = "6GB"


@functools.lru_cache
def get_settings() -> Settings:
    """The process-wide settings; tests call ``get_settings.cache_clear()``."""
    return Settings()


# --------------------------------------------------------------------------- loading


class _LineLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys (YAML would keep the last silently)."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _key_lines(
    node: yaml.Node, path: tuple[Any, ...] = ()
) -> Iterator[tuple[tuple[Any, ...], int]]:
    """Yield (key path, 1-based line) for every node of a composed YAML document."""
    yield path, node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            child = (*path, key_node.value)
            yield child, key_node.start_mark.line + 1
            for sub in _key_lines(value_node, child):
                if sub[0] != child:
                    yield sub
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            yield from _key_lines(item, (*path, index))


def _describe(loc: tuple[Any, ...], data: Any) -> str:
    """Render a pydantic location as a readable key path, naming sources by name."""
    parts: list[str] = []
    cursor = data
    for step in loc:
        if isinstance(step, int) and isinstance(cursor, list) and step < len(cursor):
            item = cursor[step]
            name = item.get("name") if isinstance(item, dict) else None
            parts.append(f"[{name}]" if name else f"[{step}]")
            cursor = item
        else:
            parts.append(f".{step}" if parts else str(step))
            cursor = cursor.get(step) if isinstance(cursor, dict) else None
    return "".join(parts)


def parse_project(text: str, *, filename: str = PROJECT_FILE) -> Project:
    """Parse and validate project-file text; errors name the key path and line."""
    try:
        node = yaml.compose(text, Loader=_LineLoader)
        data = yaml.load(text, Loader=_LineLoader) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        where = f"{filename}:{mark.line + 1}" if mark else filename
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(f"invalid YAML: {problem}", where=where) from e
    if not isinstance(data, dict):
        raise ConfigError("the project file must be a mapping of keys", where=filename)
    lines = dict(_key_lines(node)) if node is not None else {}
    try:
        return Project.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        loc = tuple(step for step in first["loc"] if not str(step).startswith("function-"))
        line = next((lines[loc[:n]] for n in range(len(loc), 0, -1) if loc[:n] in lines), None)
        where = f"{filename}:{line}" if line else filename
        message = first["msg"].removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            message = "unknown key"
        more = f" (and {len(e.errors()) - 1} more)" if len(e.errors()) > 1 else ""
        raise ConfigError(f"{_describe(loc, data)}: {message}{more}", where=where) from e


def load_project(path: str | Path) -> tuple[Project, Path]:
    """Read a project file; returns the project and the folder paths are relative to."""
    path = Path(path)
    if path.is_dir():
        path = path / PROJECT_FILE
    if not path.exists():
        raise ConfigError(f"no project file at {path} (run `segmint init` to create one)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError("the project file is not UTF-8 text", where=str(path)) from e
    return parse_project(text, filename=str(path)), path.resolve().parent
