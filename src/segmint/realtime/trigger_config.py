"""Triggers as written in the project file (``triggers:``), validated with pydantic.

A trigger reacts to events of a person: ``on`` names the event keys it listens to,
``when`` is an optional rule-language condition over the event, time helpers and
profile fields (see :mod:`segmint.realtime.triggers` for the fields), ``then`` enters
or exits a segment (entering optionally for a time-to-live), ``cooldown_minutes``
keeps it from firing again too soon for the same person, and ``unless`` turns it
into an absence condition: it fires when the ``unless`` event has *not* followed
within the given minutes.

.. code-block:: yaml

    triggers:
      - name: cart_abandoned_fast
        on: [abandoned_cart]
        when: minutes_since_last_event < 30
        then: {enter: At-Risk, ttl_minutes: 1440}
        cooldown_minutes: 60
      - name: checkout_abandoned
        on: [Checkout Started]
        unless: {event: Order Completed, within_minutes: 30}
        then: {enter: Checkout Abandoners, ttl_minutes: 60}

Only the shape and the syntax of ``when`` are checked here (length, nesting,
statements and templates are rejected before the text is parsed); the fields a
condition uses are checked when the triggers are compiled
(:meth:`segmint.realtime.triggers.TriggerSet.compile`), which knows the profile
fields. This module imports nothing heavy so that the project file can use it.
"""

from __future__ import annotations

from collections import Counter
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "MAX_MINUTES",
    "PropertyType",
    "ThenConfig",
    "TriggerConfig",
    "UnlessConfig",
    "check_unique_names",
    "check_when_syntax",
]

#: Largest duration accepted for a TTL, cooldown or ``unless`` window: 100 years.
MAX_MINUTES = 100 * 366 * 24 * 60
_EVENT_KEY = Field(min_length=1, max_length=200)


class PropertyType(StrEnum):
    """Type of an event property used in ``when`` (the rule language's field types)."""

    number = "number"
    string = "string"
    boolean = "boolean"
    timestamp = "timestamp"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ThenConfig(_Strict):
    """What a trigger does: enter a segment (optionally for a TTL) or exit one.

    Examples
    --------
    >>> ThenConfig.model_validate({"enter": "At-Risk", "ttl_minutes": 1440}).action
    'enter'
    """

    enter: str | None = Field(default=None, min_length=1, max_length=80)
    exit: str | None = Field(default=None, min_length=1, max_length=80)
    ttl_minutes: float | None = Field(
        default=None,
        gt=0,
        le=MAX_MINUTES,
        description="How long the membership lasts after entering (only with enter).",
    )

    @model_validator(mode="after")
    def _one_action(self) -> ThenConfig:
        if (self.enter is None) == (self.exit is None):
            raise ValueError("then: give exactly one of enter or exit")
        if self.exit is not None and self.ttl_minutes is not None:
            raise ValueError("then: ttl_minutes only applies to enter")
        return self

    @property
    def action(self) -> str:
        """``"enter"`` or ``"exit"``."""
        return "enter" if self.enter is not None else "exit"

    @property
    def segment(self) -> str:
        """The segment entered or exited."""
        segment = self.enter if self.enter is not None else self.exit
        assert segment is not None  # guaranteed by the validator
        return segment


class UnlessConfig(_Strict):
    """An absence condition: the trigger fires when ``event`` does not follow in time.

    Examples
    --------
    >>> UnlessConfig.model_validate({"event": "Order Completed", "within_minutes": 30})
    UnlessConfig(event='Order Completed', within_minutes=30.0)
    """

    event: str = _EVENT_KEY
    within_minutes: float = Field(gt=0, le=MAX_MINUTES)


class TriggerConfig(_Strict):
    """One trigger of the project file.

    Examples
    --------
    >>> import yaml
    >>> trigger = TriggerConfig.model_validate(yaml.safe_load('''
    ... name: cart_abandoned_fast
    ... on: [abandoned_cart]
    ... when: minutes_since_last_event < 30
    ... then: {enter: At-Risk, ttl_minutes: 1440}
    ... '''))
    >>> trigger.on, trigger.then.segment
    (['abandoned_cart'], 'At-Risk')
    """

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_-]*$", max_length=80)
    on: list[str] = Field(
        min_length=1,
        description="Event keys that set the trigger off: track event names, or page, "
        "screen, identify, group, alias.",
    )
    when: str | None = Field(
        default=None,
        description="Rule-language condition over event properties, time helpers and "
        "profile fields; NULL counts as false.",
    )
    then: ThenConfig
    cooldown_minutes: float | None = Field(
        default=None,
        ge=0,
        le=MAX_MINUTES,
        description="Minimum event time between two firings for the same person.",
    )
    unless: UnlessConfig | None = Field(
        default=None,
        description="Fire only when this event does not follow within the given minutes.",
    )
    properties: dict[str, PropertyType] = Field(
        default_factory=dict,
        description="Types of the event properties `when` uses (as property_<name>).",
    )
    description: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _yaml_on_key(cls, data: Any) -> Any:
        # YAML 1.1 (PyYAML) reads the bare key `on` as the boolean true.
        if isinstance(data, dict) and True in data and "on" not in data:
            data = {("on" if key is True else key): value for key, value in data.items()}
        return data

    @field_validator("on")
    @classmethod
    def _event_keys(cls, keys: list[str]) -> list[str]:
        for key in keys:
            if not key.strip() or len(key) > 200:
                raise ValueError(f"event key {key[:40]!r} must be 1 to 200 characters of text")
        repeated = sorted(key for key, count in Counter(keys).items() if count > 1)
        if repeated:
            raise ValueError(f"event keys are repeated: {', '.join(repeated)}")
        return keys

    @field_validator("when")
    @classmethod
    def _when_syntax(cls, text: str | None) -> str | None:
        if text is not None:
            check_when_syntax(text)
        return text

    @field_validator("properties")
    @classmethod
    def _property_names(cls, properties: dict[str, PropertyType]) -> dict[str, PropertyType]:
        import re

        for name in properties:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,63}", name):
                raise ValueError(
                    f"property name {name[:40]!r} must be a name of letters, digits and "
                    "underscores (at most 64, not starting with a digit)"
                )
        return properties


def check_when_syntax(text: str) -> None:
    """Check a ``when`` condition's syntax without knowing its fields.

    Rejects empty and over-long text, ``;``, SQL statements, templates and brackets,
    excessive nesting and oversized syntax trees, before and without evaluating
    anything. Field names, functions and types are checked at compile time.

    Raises
    ------
    ValueError
        Naming what is wrong (and the character position when known), so that
        pydantic reports it under the ``when`` key.

    Examples
    --------
    >>> check_when_syntax("minutes_since_last_event < 30")
    >>> check_when_syntax("x < 30; DROP TABLE events")
    Traceback (most recent call last):
    ...
    ValueError: character 7: ';' is not allowed: a rule is a single condition, not SQL statements
    """
    # Imported here: the project file imports this module and must stay light.
    from segmint.errors import RuleSyntaxError
    from segmint.segments._rules import guards
    from segmint.segments._rules.rule import _parse

    try:
        guards.check_length(text)
        guards.check_tree(_parse(text))
    except RuleSyntaxError as error:
        raise ValueError(str(error)) from None


def check_unique_names(triggers: list[TriggerConfig]) -> list[TriggerConfig]:
    """Check that trigger names are unique; returns ``triggers`` for use in validators.

    Raises
    ------
    ValueError
        Naming the repeated names.

    Examples
    --------
    >>> t = TriggerConfig.model_validate({"name": "a", "on": ["x"], "then": {"exit": "S"}})
    >>> check_unique_names([t, t])
    Traceback (most recent call last):
    ...
    ValueError: trigger names must be unique; repeated: a
    """
    counts = Counter(trigger.name for trigger in triggers)
    repeated = sorted(name for name, count in counts.items() if count > 1)
    if repeated:
        raise ValueError(f"trigger names must be unique; repeated: {', '.join(repeated)}")
    return triggers
