"""Hand-checked tests of the rule language: parsing, checking, SQL rendering, evaluation."""

from __future__ import annotations

import builtins
import dataclasses
import decimal
import math
import os
import pickle
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pytest
import sqlglot

from segmint.errors import RuleSyntaxError, UserInputError
from segmint.segments.rules import (
    MAX_AST_DEPTH,
    MAX_AST_NODES,
    MAX_NESTING_DEPTH,
    MAX_RULE_LENGTH,
    FieldType,
    Rule,
    RuleEvaluationError,
    parse_rule,
)

FIELDS: dict[str, FieldType | str] = {
    "recency_days": FieldType.NUMBER,
    "monetary": FieldType.NUMBER,
    "frequency": "number",
    "x": "number",
    "y": "number",
    "city": FieldType.STRING,
    "name": "string",
    "vip": FieldType.BOOLEAN,
    "churned": "boolean",
    "last_seen": FieldType.TIMESTAMP,
    "minutes_since_last_event": "number",
}
SQL_TYPES = {
    "recency_days": "BIGINT",
    "monetary": "DOUBLE",
    "frequency": "BIGINT",
    "x": "DOUBLE",
    "y": "DOUBLE",
    "city": "VARCHAR",
    "name": "VARCHAR",
    "vip": "BOOLEAN",
    "churned": "BOOLEAN",
    "last_seen": "TIMESTAMP",
    "minutes_since_last_event": "BIGINT",
}


def evaluate(text: str, **record: Any) -> bool | None:
    return parse_rule(text, FIELDS).evaluate(record)


def in_duckdb(text: str, **record: Any) -> Any:
    """The rule's SQL run by DuckDB over a one-row table holding ``record``."""
    rule = parse_rule(text, FIELDS)
    connection = duckdb.connect()
    try:
        columns = ", ".join(f'"{name}" {sql_type}' for name, sql_type in SQL_TYPES.items())
        connection.execute(f"CREATE TABLE t ({columns})")
        connection.execute(
            f"INSERT INTO t VALUES ({', '.join('?' for _ in SQL_TYPES)})",
            [record.get(name) for name in SQL_TYPES],
        )
        row = connection.execute(f"SELECT ({rule.to_sql()}) FROM t").fetchone()
        assert row is not None
        return row[0]
    finally:
        connection.close()


def syntax_error(text: str, fields: dict[str, FieldType | str] | None = None) -> RuleSyntaxError:
    with pytest.raises(RuleSyntaxError) as caught:
        parse_rule(text, FIELDS if fields is None else fields)
    return caught.value


# --------------------------------------------------------------------------- the Rule object


def test_parse_rule_renders_quoted_sql_and_evaluates() -> None:
    rule = parse_rule("recency_days > 90 AND monetary >= 500", FIELDS)
    assert rule.text == "recency_days > 90 AND monetary >= 500"
    assert rule.fields == frozenset({"recency_days", "monetary"})
    assert rule.to_sql() == '"recency_days" > 90 AND "monetary" >= 500'
    assert rule.evaluate({"recency_days": 120, "monetary": 500}) is True
    assert rule.evaluate({"recency_days": 30, "monetary": 900.0}) is False
    assert rule.evaluate({"recency_days": 120, "monetary": None}) is None
    assert rule.matches({"recency_days": 120, "monetary": None}) is False
    assert rule.matches({"recency_days": 120, "monetary": 501}) is True


def test_trigger_condition_from_the_design() -> None:
    rule = parse_rule("minutes_since_last_event < 30", FIELDS)
    assert rule.matches({"minutes_since_last_event": 12})
    assert not rule.matches({"minutes_since_last_event": 45})
    assert not rule.matches({})  # a missing field is NULL


def test_rule_is_immutable_hashable_and_has_a_readable_repr() -> None:
    first = parse_rule("x > 1", FIELDS)
    second = parse_rule("x > 1", FIELDS)
    assert first == second
    assert hash(first) == hash(second)
    assert len({first, second, parse_rule("x > 2", FIELDS)}) == 2
    assert repr(first) == "Rule('x > 1')"
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.text = "x > 2"  # type: ignore[misc]


def test_rule_survives_pickling() -> None:
    rule = parse_rule("lower(city) LIKE 'p%' AND sqrt(abs(x)) > 1", FIELDS)
    copy = pickle.loads(pickle.dumps(rule))
    assert copy == rule
    assert copy.to_sql() == rule.to_sql()
    assert copy.evaluate({"city": "PARIS", "x": -4}) is True


def test_rules_over_different_field_types_are_different() -> None:
    as_number = parse_rule("flag IS NULL", {"flag": "number"})
    as_text = parse_rule("flag IS NULL", {"flag": "string"})
    assert as_number != as_text


def test_fields_accept_type_names_and_reject_unknown_types() -> None:
    assert parse_rule("a = 'x'", {"a": "string"}).fields == {"a"}
    with pytest.raises(UserInputError, match="unknown field type"):
        parse_rule("a = 1", {"a": "integer"})


def test_unknown_dialect_is_a_user_error() -> None:
    with pytest.raises(UserInputError, match="unknown SQL dialect"):
        parse_rule("x > 1", FIELDS).to_sql("no-such-dialect")


# --------------------------------------------------------------------------- comparisons


@pytest.mark.parametrize(
    ("text", "record", "expected"),
    [
        ("x = 2", {"x": 2}, True),
        ("x == 2", {"x": 2.0}, True),
        ("x != 2", {"x": 2}, False),
        ("x <> 2", {"x": 3}, True),
        ("x < 2", {"x": 1.5}, True),
        ("x <= 2", {"x": 2}, True),
        ("x > 2", {"x": 2}, False),
        ("x >= 2", {"x": 2}, True),
        ("x = 2", {"x": None}, None),
        ("x > y", {"x": 1, "y": None}, None),
        ("city = 'Paris'", {"city": "Paris"}, True),
        ("city < 'b'", {"city": "B"}, True),  # code point order: 'B' < 'b'
        ("city > 'z'", {"city": "é"}, True),  # non-ASCII sorts after ASCII
        ("vip = TRUE", {"vip": True}, True),
        ("vip < churned", {"vip": False, "churned": True}, True),
        ("last_seen > '2024-01-01'", {"last_seen": datetime(2024, 1, 2)}, True),
        (
            "last_seen >= TIMESTAMP '2024-01-01 10:00:00'",
            {"last_seen": datetime(2024, 1, 1)},
            False,
        ),
    ],
)
def test_comparisons(text: str, record: dict[str, Any], expected: bool | None) -> None:
    assert parse_rule(text, FIELDS).evaluate(record) is expected
    assert in_duckdb(text, **record) is expected


def test_integers_meet_floats_as_doubles() -> None:
    # 2**53 + 1 is not a double: like DuckDB, the integer is converted before comparing
    assert evaluate("recency_days = x", recency_days=2**53 + 1, x=float(2**53)) is True
    assert in_duckdb("recency_days = x", recency_days=2**53 + 1, x=float(2**53)) is True


# --------------------------------------------------------------------------- boolean logic

KLEENE = [True, False, None]


@pytest.mark.parametrize("a", KLEENE)
@pytest.mark.parametrize("b", KLEENE)
def test_and_or_follow_kleene_logic(a: bool | None, b: bool | None) -> None:
    if a is False or b is False:
        expected_and: bool | None = False
    elif a is None or b is None:
        expected_and = None
    else:
        expected_and = True
    if a is True or b is True:
        expected_or: bool | None = True
    elif a is None or b is None:
        expected_or = None
    else:
        expected_or = False
    assert evaluate("vip AND churned", vip=a, churned=b) is expected_and
    assert evaluate("vip OR churned", vip=a, churned=b) is expected_or


@pytest.mark.parametrize(("value", "expected"), [(True, False), (False, True), (None, None)])
def test_not_keeps_null(value: bool | None, expected: bool | None) -> None:
    assert evaluate("NOT vip", vip=value) is expected


def test_long_and_chain_with_null_and_false() -> None:
    text = " AND ".join(["vip"] * 50 + ["churned"])
    assert evaluate(text, vip=True, churned=None) is None
    assert evaluate(text + " AND x > 1", vip=True, churned=None, x=0) is False


def test_precedence_and_parentheses_survive_rendering() -> None:
    rule = parse_rule("vip OR churned AND x > 1", FIELDS)
    # AND binds tighter: TRUE OR (...) is TRUE
    assert rule.evaluate({"vip": True, "churned": False, "x": 0}) is True
    grouped = parse_rule("(vip OR churned) AND x > 1", FIELDS)
    assert grouped.evaluate({"vip": True, "churned": False, "x": 0}) is False
    assert grouped.to_sql() == '("vip" OR "churned") AND "x" > 1'
    assert parse_rule("x - (y - 1) = 0", FIELDS).to_sql() == '"x" - ("y" - 1) = 0'
    assert evaluate("x - (y - 1) = 0", x=1, y=2) is True


# --------------------------------------------------------------------------- arithmetic


@pytest.mark.parametrize(
    ("text", "record", "expected"),
    [
        ("x + y = 3", {"x": 1, "y": 2}, True),
        ("x - y = -1", {"x": 1, "y": 2}, True),
        ("x * y = 6", {"x": 2, "y": 3}, True),
        ("x / y = 3.5", {"x": 7, "y": 2}, True),  # always floating point division
        ("x / y > 0", {"x": 7, "y": 0}, None),  # division by zero is NULL
        ("x / y > 0", {"x": 7.0, "y": -0.0}, None),
        ("x % y = -1", {"x": -7, "y": 2}, True),  # sign of the dividend
        ("x % y = 1", {"x": 7, "y": -2}, True),
        ("x % y = -1.5", {"x": -7.5, "y": 2}, True),
        ("x % y = 0", {"x": 7, "y": 0}, None),  # modulo zero is NULL
        ("-x = 3", {"x": -3}, True),
        ("x + y > 0", {"x": 1, "y": None}, None),
        ("x * 0 = 0", {"x": None}, None),
        ("x + 0.1 + 0.2 = 0.30000000000000004", {"x": 0}, True),  # literals are DOUBLE
    ],
)
def test_arithmetic(text: str, record: dict[str, Any], expected: bool | None) -> None:
    assert parse_rule(text, FIELDS).evaluate(record) is expected
    assert in_duckdb(text, **record) is expected


def test_division_by_zero_renders_nullif() -> None:
    rule = parse_rule("monetary / frequency > 100", FIELDS)
    assert rule.to_sql() == '"monetary" / NULLIF("frequency", 0) > 100'
    assert rule.evaluate({"monetary": 5.0, "frequency": 0}) is None
    assert in_duckdb("monetary / frequency > 100", monetary=5.0, frequency=0) is None


def test_integer_overflow_is_an_error_like_duckdb() -> None:
    rule = parse_rule("recency_days * frequency > 0", FIELDS)
    record = {"recency_days": 2**62, "frequency": 4}
    with pytest.raises(RuleEvaluationError, match="overflow"):
        rule.evaluate(record)
    with pytest.raises(duckdb.OutOfRangeException):
        in_duckdb("recency_days * frequency > 0", **record)


@pytest.mark.parametrize("text", ["2147483647 + 1 > 0", "100000 * 100000 > 1", "ln(0) > 1"])
def test_constant_expressions_that_fail_are_rejected_when_parsed(text: str) -> None:
    error = syntax_error(text)
    assert "cannot be computed" in error.message


def test_floats_reach_infinity_and_nan_in_duckdb_order() -> None:
    # x * y overflows to inf; inf - inf is NaN, which DuckDB sorts above every number
    text = "x * y - x * y > 1e300"
    assert evaluate(text, x=1e300, y=1e300) is True
    assert in_duckdb(text, x=1e300, y=1e300) is True
    assert evaluate("x * y - x * y = x * y - x * y", x=1e300, y=1e300) is True


# --------------------------------------------------------------------------- IN, BETWEEN, IS NULL


@pytest.mark.parametrize(
    ("text", "record", "expected"),
    [
        ("city IN ('Paris', 'Lyon')", {"city": "Lyon"}, True),
        ("city IN ('Paris', 'Lyon')", {"city": "Nice"}, False),
        ("city IN ('Paris', NULL)", {"city": "Paris"}, True),
        ("city IN ('Paris', NULL)", {"city": "Nice"}, None),
        ("city IN ('Paris')", {"city": None}, None),
        ("city NOT IN ('Paris', NULL)", {"city": "Nice"}, None),
        ("city NOT IN ('Paris')", {"city": "Nice"}, True),
        ("x IN (1, -2, 2.5)", {"x": -2}, True),
        ("x IN (1, -2, 2.5)", {"x": 2.5}, True),
        ("x BETWEEN 1 AND 3", {"x": 1}, True),
        ("x BETWEEN 1 AND 3", {"x": 3}, True),
        ("x BETWEEN 3 AND 1", {"x": 2}, False),
        ("x NOT BETWEEN 1 AND 3", {"x": 4}, True),
        ("x BETWEEN y AND 3", {"x": 2, "y": None}, None),
        ("x BETWEEN y AND 3", {"x": 5, "y": None}, False),  # NULL AND FALSE is FALSE
        ("x IS NULL", {"x": None}, True),
        ("x IS NULL", {"x": 0}, False),
        ("x IS NOT NULL", {"x": 0}, True),
        ("(x + y) IS NULL", {"x": 1, "y": None}, True),
    ],
)
def test_in_between_is_null(text: str, record: dict[str, Any], expected: bool | None) -> None:
    assert parse_rule(text, FIELDS).evaluate(record) is expected
    assert in_duckdb(text, **record) is expected


# --------------------------------------------------------------------------- LIKE / ILIKE


@pytest.mark.parametrize(
    ("text", "record", "expected"),
    [
        ("name LIKE 'Jo%'", {"name": "John"}, True),
        ("name LIKE 'Jo%'", {"name": "jo"}, False),  # case-sensitive
        ("name LIKE 'J_hn'", {"name": "John"}, True),
        ("name LIKE 'J_hn'", {"name": "Jhn"}, False),
        ("name LIKE '_'", {"name": "é"}, True),  # one character, not one byte
        ("name LIKE 'a.c'", {"name": "abc"}, False),  # regex metacharacters are literal
        ("name LIKE 'a.c'", {"name": "a.c"}, True),
        ("name LIKE 'a[b]*'", {"name": "a[b]*"}, True),
        ("name LIKE '%'", {"name": ""}, True),
        ("name LIKE 'a%b%c'", {"name": "aXbYc"}, True),
        ("name LIKE 'a%b%c'", {"name": "acb"}, False),
        ("name LIKE '%a%a'", {"name": "aa"}, True),
        ("name LIKE 'a%b%b'", {"name": "ab"}, False),  # segments may not overlap
        ("name LIKE 'a%b%b'", {"name": "abb"}, True),
        ("name LIKE 'a\\%'", {"name": "a\\xyz"}, True),  # backslash is not an escape
        ("name LIKE 'a\\%'", {"name": "a%"}, False),
        ("name LIKE 'a!%' ESCAPE '!'", {"name": "a%"}, True),
        ("name LIKE 'a!%' ESCAPE '!'", {"name": "ab"}, False),
        ("name LIKE 'a!_c' ESCAPE '!'", {"name": "abc"}, False),
        ("name NOT LIKE 'Jo%'", {"name": "Mary"}, True),
        ("name LIKE 'Jo%'", {"name": None}, None),
        ("name LIKE city", {"name": "abc", "city": "a%"}, True),
        ("name ILIKE 'jo%'", {"name": "JOHN"}, True),
        ("name ILIKE 'ΟΔΟΣ'", {"name": "οδοσ"}, True),
        ("name NOT ILIKE 'jo%'", {"name": "JOHN"}, False),
    ],
)
def test_like(text: str, record: dict[str, Any], expected: bool | None) -> None:
    assert parse_rule(text, FIELDS).evaluate(record) is expected
    assert in_duckdb(text, **record) is expected


def test_like_pattern_ending_in_escape_is_rejected() -> None:
    error = syntax_error("name LIKE 'ab!' ESCAPE '!'")
    assert "escape character" in error.message
    assert error.where == "character 11"


def test_like_from_a_field_ending_in_escape_fails_at_evaluation() -> None:
    rule = parse_rule("name LIKE city ESCAPE '!'", FIELDS)
    with pytest.raises(RuleEvaluationError, match="escape"):
        rule.evaluate({"name": "a", "city": "a!"})


def test_like_stays_linear_on_hostile_patterns() -> None:
    # '%a%a%...%b' backtracks exponentially in a naive regex engine
    pattern = "%a" * 30 + "%b"
    rule = parse_rule(f"name LIKE '{pattern}'", FIELDS)
    assert rule.evaluate({"name": "a" * 5_000}) is False
    assert rule.evaluate({"name": "a" * 5_000 + "b"}) is True


# --------------------------------------------------------------------------- functions


@pytest.mark.parametrize(
    ("text", "record", "expected"),
    [
        ("coalesce(x, y, 0) = 2", {"x": None, "y": 2}, True),
        ("coalesce(x, y) = 2", {"x": None, "y": None}, None),
        ("abs(x) = 3", {"x": -3}, True),
        ("lower(name) = 'éa'", {"name": "ÉA"}, True),
        ("upper(name) = 'ẞ'", {"name": "ß"}, True),  # one code point, as DuckDB
        ("lower(name) = 'οδοσ'", {"name": "ΟΔΟΣ"}, True),  # no final-sigma rule
        ("lower(name) = 'i'", {"name": "İ"}, True),  # one code point, not i + dot
        ("length(name) = 2", {"name": "e\u0301"}, True),  # code points, not graphemes
        ("least(x, y, 5) = 1", {"x": 1, "y": None}, True),  # NULLs are skipped
        ("greatest(x, y) = 1", {"x": 1, "y": None}, True),
        ("greatest(x, y) IS NULL", {"x": None, "y": None}, True),
        ("round(x) = 3", {"x": 2.5}, True),  # half away from zero
        ("round(x) = -3", {"x": -2.5}, True),
        ("round(x, 2) = 2.68", {"x": 2.675}, True),
        ("round(recency_days, -1) = 20", {"recency_days": 15}, True),
        ("round(recency_days, -1) = -20", {"recency_days": -15}, True),
        ("round(recency_days, 2) = 15", {"recency_days": 15}, True),
        ("ln(x) = 0", {"x": 1}, True),
        ("sqrt(x) = 3", {"x": 9}, True),
        ("sqrt(x) = 3", {"x": None}, None),
    ],
)
def test_functions(text: str, record: dict[str, Any], expected: bool | None) -> None:
    assert parse_rule(text, FIELDS).evaluate(record) is expected
    assert in_duckdb(text, **record) is expected


@pytest.mark.parametrize(
    ("text", "value"), [("ln(x) > 0", 0), ("ln(x) > 0", -1.0), ("sqrt(x) > 0", -4)]
)
def test_math_domain_errors_match_duckdb(text: str, value: float) -> None:
    with pytest.raises(RuleEvaluationError):
        evaluate(text, x=value)
    with pytest.raises(duckdb.OutOfRangeException):
        in_duckdb(text, x=value)


def test_function_synonyms_render_canonically() -> None:
    assert parse_rule("ifnull(x, 0) > 1", FIELDS).to_sql() == 'COALESCE("x", 0) > 1'


# --------------------------------------------------------------------------- CASE


@pytest.mark.parametrize(
    ("text", "record", "expected"),
    [
        ("CASE WHEN vip THEN x ELSE 0 END > 1", {"vip": True, "x": 5}, True),
        ("CASE WHEN vip THEN x ELSE 0 END > 1", {"vip": None, "x": 5}, False),  # NULL not taken
        ("CASE WHEN vip THEN x END > 1", {"vip": False, "x": 5}, None),
        ("CASE city WHEN 'Paris' THEN 1 WHEN 'Lyon' THEN 2 END = 2", {"city": "Lyon"}, True),
        ("CASE city WHEN 'Paris' THEN 1 ELSE 3 END = 3", {"city": None}, True),
    ],
)
def test_case(text: str, record: dict[str, Any], expected: bool | None) -> None:
    assert parse_rule(text, FIELDS).evaluate(record) is expected
    assert in_duckdb(text, **record) is expected


# --------------------------------------------------------------------------- timestamps


def test_timestamp_literals_are_normalised_to_utc() -> None:
    rule = parse_rule("last_seen < TIMESTAMP '2024-02-01 10:00:00+02:00'", FIELDS)
    assert rule.to_sql() == "\"last_seen\" < CAST('2024-02-01 08:00:00' AS TIMESTAMP)"
    assert rule.evaluate({"last_seen": datetime(2024, 2, 1, 7, 59)}) is True
    aware = datetime(2024, 2, 1, 9, 30, tzinfo=timezone(timedelta(hours=2)))  # 07:30 UTC
    assert rule.evaluate({"last_seen": aware}) is True
    assert rule.evaluate({"last_seen": date(2024, 2, 2)}) is False
    assert rule.evaluate({"last_seen": "2024-02-01T07:00:00Z"}) is True


def test_text_beside_a_timestamp_must_be_a_timestamp() -> None:
    error = syntax_error("last_seen > 'last tuesday'")
    assert "not a valid timestamp" in error.message
    assert error.where == "character 13"


def test_timestamp_in_and_between() -> None:
    text = "last_seen BETWEEN '2024-01-01' AND '2024-12-31' AND last_seen NOT IN ('2024-06-01')"
    assert evaluate(text, last_seen=datetime(2024, 3, 1)) is True
    assert in_duckdb(text, last_seen=datetime(2024, 3, 1)) is True
    assert evaluate(text, last_seen=datetime(2024, 6, 1)) is False


# --------------------------------------------------------------------------- records


def test_record_values_are_checked_against_field_types() -> None:
    rule = parse_rule("x > 1 AND city = 'a' AND vip", FIELDS)
    with pytest.raises(RuleEvaluationError) as caught:
        rule.evaluate({"x": "3", "city": "a", "vip": True})
    assert caught.value.where == "x"
    with pytest.raises(RuleEvaluationError):
        rule.evaluate({"x": True, "city": "a", "vip": True})  # a bool is not a number
    with pytest.raises(RuleEvaluationError):
        rule.evaluate({"x": 3, "city": 1, "vip": True})
    with pytest.raises(RuleEvaluationError):
        rule.evaluate({"x": 3, "city": "a", "vip": 1})


def test_record_values_from_numpy_pandas_and_decimal() -> None:
    rule = parse_rule("x > 1 AND vip", FIELDS)
    assert rule.evaluate({"x": np.int64(3), "vip": np.bool_(True)}) is True
    assert rule.evaluate({"x": np.float32(3.5), "vip": True}) is True
    assert rule.evaluate({"x": decimal.Decimal("1.5"), "vip": True}) is True
    assert rule.evaluate({"x": math.nan, "vip": True}) is None  # NaN input is missing
    assert rule.evaluate({"x": 3, "vip": None}) is None
    after = parse_rule("last_seen > '2024-01-01 00:00:00'", FIELDS)
    assert after.evaluate({"last_seen": pd.Timestamp("2024-01-01 00:00:00.000000500")}) is False
    assert after.evaluate({"last_seen": pd.Timestamp("2024-01-01 00:00:00.000001")}) is True
    assert after.evaluate({"last_seen": np.datetime64("2024-01-02T00:00")}) is True
    assert after.evaluate({"last_seen": pd.NaT}) is None
    assert after.evaluate({"last_seen": np.datetime64("NaT")}) is None


# --------------------------------------------------------------------------- checking


def test_unknown_field_lists_close_matches() -> None:
    error = syntax_error("recency_dys > 90")
    assert "unknown field 'recency_dys'" in error.message
    assert "did you mean 'recency_days'" in error.message
    assert error.where == "character 1"


def test_field_names_match_case_insensitively_unless_quoted() -> None:
    assert parse_rule("Recency_Days > 1", FIELDS).to_sql() == '"recency_days" > 1'
    error = syntax_error('"Recency_Days" > 1')
    assert "did you mean 'recency_days'" in error.message


def test_identifiers_and_strings_are_escaped_in_sql() -> None:
    fields = {'odd "name"': FieldType.STRING, "order count": FieldType.NUMBER}
    rule = parse_rule('"odd ""name""" = \'O\'\'Brien\' AND "order count" > 1', fields)
    assert rule.to_sql() == '"odd ""name""" = \'O\'\'Brien\' AND "order count" > 1'
    assert rule.evaluate({'odd "name"': "O'Brien", "order count": 2}) is True
    assert rule.to_sql("spark") == "`odd \"name\"` = 'O\\'Brien' AND `order count` > 1"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("city = 5", "cannot compare a string with a number"),
        ("x + 1", "must be a condition"),
        ("x", "must be a condition"),
        ("NOT x", "expected a condition"),
        ("x LIKE 'a%'", "expected a string"),
        ("city + 1 > 2", "expected a number"),
        ("coalesce(x, 'a') = 1", "cannot mix"),
        ("x = NULL", "use 'x IS NULL'"),
        ("x IN (y, 1)", "only literals"),
        ("round(x, 1.5) > 1", "whole number literal"),
        ("name LIKE 'a' ESCAPE 'ab'", "single character"),
        ("vip IS TRUE", "only IS NULL"),
        ("x BETWEEN SYMMETRIC 1 AND 2", "BETWEEN SYMMETRIC"),
        ("x // 2 > 1", "integer division"),
        ("name || 'a' = 'b'", "concatenation"),
        ("log(x) > 1", "function log()"),
        ("now() > last_seen", "allowed functions"),
        ("CAST(x AS VARCHAR) = '1'", "cast"),
        ("x::INT > 1", "cast"),
        ("t.x > 1", "table-qualified"),
        ("x > ?", "query parameter"),
        ("x > $1", "parameter"),
        ("* > 1", "'*'"),
        ("x > 1 AS y", "alias"),
        ("9223372036854775808 > x", "out of range"),
        ("x > 1e400", "out of range"),
        ("x >", "incomplete"),
        ("", "empty"),
        ("  -- only a comment", "empty"),
    ],
)
def test_not_allowed_or_badly_typed(text: str, fragment: str) -> None:
    assert fragment in str(syntax_error(text))


# --------------------------------------------------------------------------- injection


@pytest.fixture
def no_code_runs(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Fail loudly if anything tries to evaluate code or start a process."""
    calls: list[str] = []

    def forbid(name: str) -> Callable[..., Any]:
        def blocked(*args: Any, **kwargs: Any) -> Any:
            calls.append(name)
            raise AssertionError(f"{name} was called")

        return blocked

    monkeypatch.setattr(builtins, "eval", forbid("eval"))
    monkeypatch.setattr(builtins, "exec", forbid("exec"))
    monkeypatch.setattr(os, "system", forbid("os.system"))
    monkeypatch.setattr(subprocess, "Popen", forbid("subprocess.Popen"))
    yield calls
    assert calls == []


INJECTIONS = [
    ("__import__('os').system('x')", "not allowed"),
    ("'; DROP TABLE x; --", "cannot be read"),
    ("city = ''; DROP TABLE x; --'", "';' is not allowed"),
    ("1=1; DROP TABLE customers", "';' is not allowed"),
    ("{{7*7}}", "'{' is not allowed"),
    ("${7*7}", "not allowed"),
    ("#{7*7}", ""),
    ("(SELECT 1)", "SELECT is not allowed"),
    ("recency_days > (SELECT max(x) FROM t)", "SELECT is not allowed"),
    ("x IN (SELECT x FROM t)", "SELECT is not allowed"),
    ("EXISTS (SELECT 1)", "SELECT is not allowed"),
    ("x > 1 UNION SELECT password FROM users", "not allowed"),
    ("read_csv('/etc/passwd') IS NOT NULL", "function read_csv()"),
    ("getenv('HOME') = 'x'", "allowed functions"),
    ("x > 1 OR pg_sleep(10) IS NULL", "allowed functions"),
    ("city = 'a' || (SELECT 'b')", "SELECT is not allowed"),
    ("ATTACH 'x.db'", "ATTACH is not allowed"),
    ("x > 1) OR (1 = 1", ""),
    ("x = [1, 2][1]", "'[' is not allowed"),
]


@pytest.mark.parametrize(("text", "fragment"), INJECTIONS)
def test_injection_attempts_are_rejected(no_code_runs: list[str], text: str, fragment: str) -> None:
    error = syntax_error(text)
    assert fragment in str(error)
    assert str(error)  # a message that names the problem


def test_injection_rejections_give_positions() -> None:
    assert syntax_error("1=1; DROP TABLE customers").where == "character 4"
    assert syntax_error("recency_days > (SELECT max(x) FROM t)").where == "character 17"
    assert syntax_error("x > 1 AND {{7*7}}").where == "character 11"


def test_string_literals_with_sql_in_them_stay_literals() -> None:
    rule = parse_rule("city = '''; DROP TABLE customers; --'", FIELDS)
    assert rule.to_sql() == "\"city\" = '''; DROP TABLE customers; --'"
    assert rule.evaluate({"city": "'; DROP TABLE customers; --"}) is True
    connection = duckdb.connect()
    connection.execute("CREATE TABLE customers (city VARCHAR)")
    connection.execute("INSERT INTO customers VALUES (?)", ["'; DROP TABLE customers; --"])
    matched = connection.execute(f"SELECT count(*) FROM customers WHERE {rule.to_sql()}")
    assert matched.fetchone() == (1,)
    assert connection.execute("SELECT count(*) FROM customers").fetchone() == (1,)


# --------------------------------------------------------------------------- limits


def _deep(text: str) -> str:
    return "(" * 10_000 + text + ")" * 10_000


@pytest.mark.parametrize(
    "text",
    [
        _deep("x > 1"),
        "NOT " * 10_000 + "vip",
        "x > " + "- " * 10_000 + "1",
        "x > 1 AND " * 100_000 + "vip",  # about 1 MB
        "city = '" + "a" * 1_000_000 + "'",
    ],
    ids=["parentheses", "not", "minus", "1MB-expression", "1MB-literal"],
)
def test_hostile_sizes_are_rejected_before_parsing(no_code_runs: list[str], text: str) -> None:
    error = syntax_error(text)
    assert "too long" in error.message


@pytest.mark.parametrize(
    "text",
    [
        "(" * (MAX_NESTING_DEPTH + 1) + "x > 1" + ")" * (MAX_NESTING_DEPTH + 1),
        "NOT " * (MAX_NESTING_DEPTH + 1) + "vip",
        "x > " + "- " * (MAX_NESTING_DEPTH + 1) + "1",
        "abs(" * (MAX_NESTING_DEPTH + 1) + "x" + ")" * (MAX_NESTING_DEPTH + 1) + " > 1",
        "CASE WHEN " * (MAX_NESTING_DEPTH + 1) + "vip" + " THEN TRUE END" * (MAX_NESTING_DEPTH + 1),
        "(" * 1_000 + "x",  # unbalanced, still rejected for depth before parsing
    ],
    ids=["parentheses", "not", "minus", "functions", "case", "unbalanced"],
)
def test_nesting_beyond_the_limit_is_rejected(text: str) -> None:
    assert len(text) <= MAX_RULE_LENGTH
    error = syntax_error(text)
    assert "nested too deeply" in error.message
    assert error.where is not None


def _call_with_stack_depth(depth: int, function: Callable[[], Any]) -> Any:
    if depth:
        return _call_with_stack_depth(depth - 1, function)
    return function()


@pytest.mark.parametrize(
    "text",
    [
        "(" * MAX_NESTING_DEPTH + "x > 1" + ")" * MAX_NESTING_DEPTH,
        "NOT " * MAX_NESTING_DEPTH + "vip",
        "abs(" * MAX_NESTING_DEPTH + "x" + ")" * MAX_NESTING_DEPTH + " > 1",
        "CASE WHEN " * MAX_NESTING_DEPTH + "vip" + " THEN TRUE END" * MAX_NESTING_DEPTH,
        "x " + " ".join(("+" if i % 2 else "-") + " y" for i in range(MAX_AST_DEPTH - 4)) + " > 1",
    ],
    ids=["parentheses", "not", "functions", "case", "arithmetic-chain"],
)
def test_rules_at_the_limits_work_from_a_deep_call_stack(text: str) -> None:
    """300 frames stand for a web framework's stack: the limits leave room for it."""
    assert sys.getrecursionlimit() >= 1_000

    def run() -> tuple[str, bool | None]:
        rule = parse_rule(text, FIELDS)
        return rule.to_sql("spark"), rule.evaluate({"x": 2, "y": 1, "vip": True})

    sql, _ = _call_with_stack_depth(300, run)
    assert sql


def test_syntax_tree_depth_and_size_limits() -> None:
    chain = "x " + " ".join(("+" if i % 2 else "-") + " y" for i in range(MAX_AST_DEPTH)) + " > 1"
    assert "nested too deeply" in syntax_error(chain).message
    many = "x IN (" + ",".join("1" for _ in range(MAX_AST_NODES)) + ")"
    assert len(many) <= MAX_RULE_LENGTH
    assert "too large" in syntax_error(many).message


def test_long_and_chains_are_not_limited_by_depth() -> None:
    text = " AND ".join(f"x <> {i}" for i in range(300))
    assert len(text) <= MAX_RULE_LENGTH
    rule = parse_rule(text, FIELDS)
    assert rule.evaluate({"x": 300}) is True
    assert rule.evaluate({"x": 7}) is False
    assert in_duckdb(text, x=300) is True


# --------------------------------------------------------------------------- other dialects


@pytest.mark.parametrize(
    ("text", "spark"),
    [
        (
            "recency_days > 90 AND monetary >= 500.5",
            "`recency_days` > 90 AND `monetary` >= CAST(500.5 AS DOUBLE)",
        ),
        ("monetary / frequency > 50", "`monetary` / NULLIF(`frequency`, 0) > 50"),
        ("city IN ('Paris', NULL) OR city IS NULL", "`city` IN ('Paris', NULL) OR `city` IS NULL"),
        ("name NOT ILIKE 'jo%'", "`name` NOT ILIKE 'jo%'"),
        # Spark's LIKE escapes with backslash by default; DuckDB's does not
        ("name LIKE 'a\\%'", "`name` LIKE 'a\\\\\\\\%'"),
        (
            "last_seen > '2024-01-31'",
            "`last_seen` > CAST('2024-01-31 00:00:00' AS TIMESTAMP)",
        ),
        ("least(x, y, 3) > round(x, 1)", "LEAST(`x`, `y`, 3) > ROUND(`x`, 1)"),
        ("x NOT BETWEEN 1 AND 3", "NOT `x` BETWEEN 1 AND 3"),
        ("CASE WHEN vip THEN 1 ELSE 0 END = 1", "CASE WHEN `vip` THEN 1 ELSE 0 END = 1"),
    ],
)
def test_spark_sql(text: str, spark: str) -> None:
    rendered = parse_rule(text, FIELDS).to_sql(dialect="spark")
    assert rendered == spark
    sqlglot.parse_one(rendered, read="spark")  # well-formed Spark SQL


def test_aware_datetimes_compare_with_naive_literals() -> None:
    rule = parse_rule("last_seen > '2000-01-01'", FIELDS)
    assert rule.evaluate({"last_seen": datetime.now(UTC)}) is True


def test_rule_type_is_exported() -> None:
    assert isinstance(parse_rule("TRUE", FIELDS), Rule)
    assert parse_rule("TRUE", FIELDS).fields == frozenset()
    assert parse_rule("NULL", FIELDS).evaluate({}) is None
