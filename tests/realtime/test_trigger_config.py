"""Triggers in the project file: shape, YAML quirks and syntax checks at load time."""

from __future__ import annotations

import textwrap
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from segmint.realtime.trigger_config import (
    PropertyType,
    TriggerConfig,
    check_unique_names,
    check_when_syntax,
)

SEED = textwrap.dedent(
    """
    triggers:
      - name: cart_abandoned_fast        # ^[A-Za-z_][A-Za-z0-9_-]*$, unique
        on: [abandoned_cart]             # event keys; at least one
        when: minutes_since_last_event < 30      # optional rule-language condition
        then: {enter: At-Risk, ttl_minutes: 1440}  # or {exit: At-Risk}
        cooldown_minutes: 60             # optional, >= 0
        properties: {revenue: number}    # optional: types of event properties used in `when`
      - name: checkout_abandoned
        on: [Checkout Started]
        unless: {event: Order Completed, within_minutes: 30}   # absence condition with a timer
        then: {enter: Checkout Abandoners, ttl_minutes: 60}
    """
)


def _trigger(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"name": "t", "on": ["abandoned_cart"], "then": {"enter": "S"}}
    data.update(overrides)
    return data


def _error(data: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as info:
        TriggerConfig.model_validate(data)
    return str(info.value)


def test_seed_example_loads_as_written() -> None:
    raw = yaml.safe_load(SEED)["triggers"]
    fast, checkout = (TriggerConfig.model_validate(item) for item in raw)

    assert fast.name == "cart_abandoned_fast"
    assert fast.on == ["abandoned_cart"]  # PyYAML reads the bare key `on` as True
    assert fast.when == "minutes_since_last_event < 30"
    assert (fast.then.action, fast.then.segment, fast.then.ttl_minutes) == (
        "enter",
        "At-Risk",
        1440,
    )
    assert fast.cooldown_minutes == 60
    assert fast.properties == {"revenue": PropertyType.number}
    assert fast.unless is None

    assert checkout.on == ["Checkout Started"]
    assert checkout.unless is not None
    assert (checkout.unless.event, checkout.unless.within_minutes) == ("Order Completed", 30)
    assert checkout.then.segment == "Checkout Abandoners"
    assert checkout.when is None
    check_unique_names([fast, checkout])


def test_exit_action() -> None:
    trigger = TriggerConfig.model_validate(_trigger(then={"exit": "At-Risk"}))
    assert (trigger.then.action, trigger.then.segment) == ("exit", "At-Risk")


@pytest.mark.parametrize(
    ("then", "message"),
    [
        ({"enter": "A", "exit": "B"}, "exactly one of enter or exit"),
        ({}, "exactly one of enter or exit"),
        ({"ttl_minutes": 5}, "exactly one of enter or exit"),
        ({"exit": "A", "ttl_minutes": 5}, "ttl_minutes only applies to enter"),
        ({"enter": "A", "ttl_minutes": 0}, "greater than 0"),
        ({"enter": "A", "ttl_minutes": -1}, "greater than 0"),
        ({"enter": ""}, "at least 1 character"),
        ({"enter": "A", "ttl": 5}, "Extra inputs are not permitted"),
    ],
)
def test_then_is_one_action(then: dict[str, Any], message: str) -> None:
    assert message in _error(_trigger(then=then))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"name": "1st"}, "should match pattern"),
        ({"name": "has space"}, "should match pattern"),
        ({"on": []}, "at least 1 item"),
        ({"on": "abandoned_cart"}, "valid list"),
        ({"on": ["a", "a"]}, "event keys are repeated: a"),
        ({"on": [" "]}, "must be 1 to 200 characters"),
        ({"on": [True]}, "valid string"),
        ({"cooldown_minutes": -1}, "greater than or equal to 0"),
        ({"unless": {"event": "Order Completed", "within_minutes": 0}}, "greater than 0"),
        ({"unless": {"event": "Order Completed"}}, "Field required"),
        ({"properties": {"revenue": "integer"}}, "'number', 'string', 'boolean' or 'timestamp'"),
        ({"properties": {"unit price": "number"}}, "must be a name of letters"),
        ({"whenn": "x > 1"}, "Extra inputs are not permitted"),
    ],
)
def test_invalid_trigger_is_rejected(overrides: dict[str, Any], message: str) -> None:
    assert message in _error(_trigger(**overrides))


def test_missing_then_and_on_are_required() -> None:
    message = _error({"name": "t"})
    assert "on\n  Field required" in message
    assert "then\n  Field required" in message


def test_names_must_be_unique() -> None:
    a = TriggerConfig.model_validate(_trigger(name="a"))
    b = TriggerConfig.model_validate(_trigger(name="b"))
    assert check_unique_names([a, b]) == [a, b]
    with pytest.raises(ValueError, match="trigger names must be unique; repeated: a"):
        check_unique_names([a, b, a])


@pytest.mark.parametrize(
    ("when", "message"),
    [
        ("x" * 1_000_000, "rule is too long: 1,000,000 characters"),
        ("(" * 10_000 + "x > 1" + ")" * 10_000, "rule is too long"),
        ("(" * 1_000 + "x > 1" + ")" * 1_000, "nested too deeply"),
        ("minutes_since_last_event < 30; DROP TABLE events", "';' is not allowed"),
        ("'; DROP TABLE x; --", "cannot be read"),
        ("{{7*7}}", "templates are not part of the rule language"),
        ("x > (SELECT 1)", "SQL keyword SELECT is not allowed"),
        ("", "rule is empty"),
        ("x >", "invalid rule syntax"),
    ],
)
def test_when_syntax_is_checked_at_load(when: str, message: str) -> None:
    error = _error(_trigger(when=when))
    assert message in error
    assert "when" in error.splitlines()[1]


def test_when_with_unknown_names_loads_and_is_checked_at_compile() -> None:
    # Field names and functions depend on the profile: checked by TriggerSet.compile.
    trigger = TriggerConfig.model_validate(_trigger(when="__import__('os') = 1"))
    assert trigger.when == "__import__('os') = 1"


def test_check_when_syntax_names_the_position() -> None:
    with pytest.raises(ValueError, match="character 30: ';' is not allowed"):
        check_when_syntax("minutes_since_last_event < 30; DROP TABLE events")
