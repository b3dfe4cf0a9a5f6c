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
        default=24, ge=1, le=24 * 90,
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
    redis_url: str | None = Field(
        default=None, description="Redis for the membership stream, e.g. redis://127.0.0.1:6379/0."
    )
    membership_stream: str = Field(
        default="segmint:memberships", description="Redis stream the outbox is published to."
    )
    max_page_size: int = Field(default=1000, ge=1, le=10_000)


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
    memory_limit: str = "8GB"  # the engine spills to disk beyond this


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
