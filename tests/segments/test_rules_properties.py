"""Property: a rule evaluated in Python agrees with its SQL evaluated by DuckDB.

Random well-typed rules over fields of every type, and random records with NULLs,
are evaluated twice: by ``Rule.evaluate`` and by running ``Rule.to_sql()`` in DuckDB
over a one-row table holding the record (inserted with bound parameters). The two
answers (TRUE, FALSE or NULL) must be identical. Besides random conditions of every
kind, three tests focus the generator on arithmetic (integer and floating point), on
text (comparisons, LIKE/ILIKE, case mapping) and on IN/BETWEEN/IS NULL, so that each
construct is exercised often in 300 examples.

Generated magnitudes are bounded so that no integer arithmetic can overflow (DuckDB
evaluates both sides of AND/OR, Python stops early, so an error hidden behind a
FALSE would be reported by one and not the other). Floats are finite but otherwise
arbitrary, so divisions by tiny numbers reach infinity and NaN, whose DuckDB
ordering the evaluator reproduces.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from segmint.segments.rules import FieldType, RuleEvaluationError, parse_rule

FIELDS = {
    "n_int": FieldType.NUMBER,
    "m_int": FieldType.NUMBER,
    "x_float": FieldType.NUMBER,
    "y_float": FieldType.NUMBER,
    "s1": FieldType.STRING,
    "s2": FieldType.STRING,
    "b1": FieldType.BOOLEAN,
    "b2": FieldType.BOOLEAN,
    "t1": FieldType.TIMESTAMP,
}
COLUMNS = {
    "n_int": "BIGINT",
    "m_int": "BIGINT",
    "x_float": "DOUBLE",
    "y_float": "DOUBLE",
    "s1": "VARCHAR",
    "s2": "VARCHAR",
    "b1": "BOOLEAN",
    "b2": "BOOLEAN",
    "t1": "TIMESTAMP",
}
# Characters that exercise quoting, LIKE wildcards and escapes, regex metacharacters
# and Unicode case mapping (ß/ẞ, final sigma, dotted I).
ALPHABET = "aAbB zZ%_!\\'.*é Éß ẞΣσςİi1"
MAX_DEPTH = 3

settings.register_profile(
    "rules-ci",
    max_examples=300,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


# --------------------------------------------------------------------------- literals

small_ints = st.integers(min_value=0, max_value=12)
# Literal-only arithmetic has at most 2**MAX_DEPTH leaves: 12**8 < 2**31, so constant
# sub-expressions never overflow DuckDB's 32-bit INTEGER.
float_literals = st.one_of(
    st.sampled_from([0.5, 2.5, 0.1, 1e-05, 3.75, 100.0, 0.30000000000000004, 1e300]),
    st.floats(min_value=0, max_value=16, allow_nan=False, allow_infinity=False),
).map(repr)
string_literals = st.text(alphabet=ALPHABET, max_size=5).map(_quote)
timestamps = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2030, 12, 31))
timestamp_literals = timestamps.map(lambda t: f"TIMESTAMP '{t.isoformat(sep=' ')}'")


def _like_pattern(with_escape: bool) -> st.SearchStrategy[str]:
    pieces = [st.sampled_from(list("ab%_éß.\\*A")), st.sampled_from(["%", "_"])]
    if with_escape:
        pieces.append(st.sampled_from(["!%", "!_", "!!", "!a"]))
    return st.lists(st.one_of(*pieces), max_size=5).map("".join)


# --------------------------------------------------------------------------- expressions


def _call(name: str, args: list[str]) -> str:
    return f"{name}({', '.join(args)})"


def _weighted(*choices: tuple[int, st.SearchStrategy[str]]) -> st.SearchStrategy[str]:
    """Choose among strategies with relative weights.

    ``st.one_of`` favours its cheap alternatives, which left arithmetic rare; drawing
    the alternative's index explicitly keeps every construct frequent.
    """
    indices = [index for index, (weight, _) in enumerate(choices) for _ in range(weight)]
    return st.sampled_from(indices).flatmap(lambda index: choices[index][1])


@functools.cache
def number(depth: int) -> st.SearchStrategy[str]:
    leaves = _weighted(
        (3, st.sampled_from(["n_int", "m_int", "x_float", "y_float"])),
        (1, small_ints.map(str)),
        (1, float_literals),
    )
    if depth == 0:
        return leaves
    sub = number(depth - 1)
    optional_null = st.lists(st.just("NULL"), max_size=1)
    binary = st.tuples(sub, st.sampled_from(["+", "-", "*", "/", "%"]), sub).map(
        lambda t: f"({t[0]} {t[1]} {t[2]})"
    )
    return _weighted(
        (4, leaves),
        (8, binary),
        (1, sub.map(lambda e: f"-({e})")),
        (1, sub.map(lambda e: f"abs({e})")),
        (1, sub.map(lambda e: f"round({e})")),
        (1, st.tuples(sub, st.integers(-3, 3)).map(lambda t: f"round({t[0]}, {t[1]})")),
        (1, sub.map(lambda e: f"sqrt(abs({e}))")),
        (1, sub.map(lambda e: f"ln(abs({e}) + 1)")),
        (1, string(depth - 1).map(lambda e: f"length({e})")),
        (
            1,
            st.tuples(
                st.sampled_from(["coalesce", "least", "greatest"]), sub, optional_null, sub
            ).map(lambda t: _call(t[0], [t[1], *t[2], t[3]])),
        ),
        (
            1,
            st.tuples(boolean(depth - 1), sub, st.one_of(sub, st.just("NULL"))).map(
                lambda t: f"CASE WHEN {t[0]} THEN {t[1]} ELSE {t[2]} END"
            ),
        ),
    )


@functools.cache
def string(depth: int) -> st.SearchStrategy[str]:
    leaves = _weighted((2, st.sampled_from(["s1", "s2"])), (1, string_literals))
    if depth == 0:
        return leaves
    sub = string(depth - 1)
    return _weighted(
        (3, leaves),
        (1, sub.map(lambda e: f"lower({e})")),
        (1, sub.map(lambda e: f"upper({e})")),
        (
            1,
            st.tuples(st.sampled_from(["coalesce", "least", "greatest"]), sub, sub).map(
                lambda t: _call(t[0], [t[1], "NULL", t[2]])
            ),
        ),
        (
            1,
            st.tuples(sub, string_literals, sub).map(
                lambda t: f"CASE {t[0]} WHEN {t[1]} THEN {t[2]} END"
            ),
        ),
    )


@functools.cache
def timestamp(depth: int) -> st.SearchStrategy[str]:
    leaves = _weighted((2, st.just("t1")), (1, timestamp_literals))
    if depth == 0:
        return leaves
    sub = timestamp(depth - 1)
    return _weighted(
        (3, leaves),
        (
            1,
            st.tuples(st.sampled_from(["coalesce", "least", "greatest"]), sub, sub).map(
                lambda t: _call(t[0], [t[1], t[2]])
            ),
        ),
    )


COMPARISONS = ["=", "<>", "!=", "<", "<=", ">", ">="]


@functools.cache
def boolean(depth: int) -> st.SearchStrategy[str]:
    leaves = st.sampled_from(["b1", "b2", "TRUE", "FALSE"])
    if depth == 0:
        return leaves
    sub = boolean(depth - 1)
    num, text, when = number(depth - 1), string(depth - 1), timestamp(depth - 1)
    ops = st.sampled_from(COMPARISONS)
    connective = st.tuples(
        st.one_of(sub, st.just("NULL")), st.sampled_from(["AND", "OR"]), sub
    ).map(lambda t: f"({t[0]} {t[1]} {t[2]})")
    number_comparison = st.tuples(num, ops, num).map(lambda t: f"{t[0]} {t[1]} {t[2]}")
    return _weighted(
        (1, leaves),
        (4, connective),
        (1, sub.map(lambda e: f"NOT ({e})")),
        (3, number_comparison),
        *((1, predicate) for predicate in _predicates(sub, leaves, num, text, when)),
    )


def _predicates(
    sub: st.SearchStrategy[str],
    leaves: st.SearchStrategy[str],
    num: st.SearchStrategy[str],
    text: st.SearchStrategy[str],
    when: st.SearchStrategy[str],
) -> list[st.SearchStrategy[str]]:
    ops = st.sampled_from(COMPARISONS)
    number_items = st.lists(
        st.one_of(small_ints.map(str), float_literals, st.just("NULL")), min_size=1, max_size=4
    )
    string_items = st.lists(st.one_of(string_literals, st.just("NULL")), min_size=1, max_size=4)
    return [
        st.tuples(text, ops, text).map(lambda t: f"{t[0]} {t[1]} {t[2]}"),
        st.tuples(when, ops, when).map(lambda t: f"{t[0]} {t[1]} {t[2]}"),
        st.tuples(ops, timestamps).map(lambda t: f"t1 {t[0]} '{t[1].isoformat()}'"),
        st.tuples(leaves, ops, leaves).map(lambda t: f"{t[0]} {t[1]} {t[2]}"),
        st.tuples(num, st.sampled_from(["IN", "NOT IN"]), number_items).map(
            lambda t: f"{t[0]} {t[1]} ({', '.join(t[2])})"
        ),
        st.tuples(text, st.sampled_from(["IN", "NOT IN"]), string_items).map(
            lambda t: f"{t[0]} {t[1]} ({', '.join(t[2])})"
        ),
        st.tuples(num, st.sampled_from(["BETWEEN", "NOT BETWEEN"]), num, num).map(
            lambda t: f"{t[0]} {t[1]} {t[2]} AND {t[3]}"
        ),
        st.tuples(text, st.sampled_from(["BETWEEN", "NOT BETWEEN"]), text, text).map(
            lambda t: f"{t[0]} {t[1]} {t[2]} AND {t[3]}"
        ),
        st.tuples(st.one_of(num, text, when, sub), st.sampled_from(["IS NULL", "IS NOT NULL"])).map(
            lambda t: f"({t[0]}) {t[1]}"
        ),
        st.tuples(
            text, st.sampled_from(["LIKE", "NOT LIKE", "ILIKE", "NOT ILIKE"]), _like_pattern(False)
        ).map(lambda t: f"{t[0]} {t[1]} {_quote(t[2])}"),
        st.tuples(
            text, st.sampled_from(["LIKE", "NOT LIKE", "ILIKE", "NOT ILIKE"]), _like_pattern(True)
        ).map(lambda t: f"{t[0]} {t[1]} {_quote(t[2])} ESCAPE '!'"),
        st.tuples(text, st.sampled_from(["LIKE", "ILIKE"]), text).map(
            lambda t: f"{t[0]} {t[1]} {t[2]}"
        ),
        st.tuples(sub, sub, st.one_of(sub, st.just("NULL"))).map(
            lambda t: f"CASE WHEN {t[0]} THEN {t[1]} ELSE {t[2]} END"
        ),
    ]


floats = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False, min_value=-1e4, max_value=1e4),
    st.sampled_from([0.0, -0.0, 0.5, -2.5, 2.5, 1e-300, 5e-324]),
)


def _sometimes_null(values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """NULL one time in five: often enough to test NULLs, rarely enough to test values."""
    return st.sampled_from([True, True, True, True, False]).flatmap(
        lambda present: values if present else st.none()
    )


records = st.fixed_dictionaries(
    {
        "n_int": _sometimes_null(st.integers(min_value=-100, max_value=100)),
        "m_int": _sometimes_null(st.integers(min_value=-100, max_value=100)),
        "x_float": _sometimes_null(floats),
        "y_float": _sometimes_null(floats),
        "s1": _sometimes_null(st.text(alphabet=ALPHABET, max_size=6)),
        "s2": _sometimes_null(st.text(alphabet=ALPHABET, max_size=6)),
        "b1": _sometimes_null(st.booleans()),
        "b2": _sometimes_null(st.booleans()),
        "t1": _sometimes_null(timestamps),
    }
)


# --------------------------------------------------------------------------- the property


@pytest.fixture(scope="module")
def table() -> Iterator[duckdb.DuckDBPyConnection]:
    connection = duckdb.connect()
    columns = ", ".join(f"{name} {sql_type}" for name, sql_type in COLUMNS.items())
    connection.execute(f"CREATE TABLE t ({columns})")
    yield connection
    connection.close()


def _in_duckdb(connection: duckdb.DuckDBPyConnection, sql: str, record: dict[str, Any]) -> Any:
    connection.execute("DELETE FROM t")
    placeholders = ", ".join("?" for _ in COLUMNS)
    connection.execute(f"INSERT INTO t VALUES ({placeholders})", [record[c] for c in COLUMNS])
    row = connection.execute(f"SELECT ({sql}) FROM t").fetchone()
    assert row is not None
    return row[0]


def _outcome(call: Any) -> tuple[str, Any]:
    try:
        return "value", call()
    except (RuleEvaluationError, duckdb.Error) as error:
        return "error", type(error).__name__


@functools.cache
def predicate(depth: int) -> st.SearchStrategy[str]:
    """One membership, range, NULL or pattern test, possibly negated."""
    num, text, when = number(depth), string(depth), timestamp(depth)
    number_items = st.lists(
        st.one_of(small_ints.map(str), float_literals, st.just("NULL")), min_size=1, max_size=4
    )
    string_items = st.lists(st.one_of(string_literals, st.just("NULL")), min_size=1, max_size=4)
    when_items = st.lists(st.one_of(timestamp_literals, st.just("NULL")), min_size=1, max_size=3)
    membership = st.sampled_from(["IN", "NOT IN"])
    between = st.sampled_from(["BETWEEN", "NOT BETWEEN"])
    tests = st.one_of(
        st.tuples(num, membership, number_items).map(
            lambda t: f"{t[0]} {t[1]} ({', '.join(t[2])})"
        ),
        st.tuples(text, membership, string_items).map(
            lambda t: f"{t[0]} {t[1]} ({', '.join(t[2])})"
        ),
        st.tuples(when, membership, when_items).map(lambda t: f"{t[0]} {t[1]} ({', '.join(t[2])})"),
        st.tuples(num, between, num, num).map(lambda t: f"{t[0]} {t[1]} {t[2]} AND {t[3]}"),
        st.tuples(text, between, text, text).map(lambda t: f"{t[0]} {t[1]} {t[2]} AND {t[3]}"),
        st.tuples(when, between, when, when).map(lambda t: f"{t[0]} {t[1]} {t[2]} AND {t[3]}"),
        st.tuples(st.one_of(num, text, when), st.sampled_from(["IS NULL", "IS NOT NULL"])).map(
            " ".join
        ),
    )
    return st.tuples(st.sampled_from(["", "NOT "]), tests).map("".join)


def _check_agreement(
    connection: duckdb.DuckDBPyConnection, text: str, record: dict[str, Any]
) -> None:
    rule = parse_rule(text, FIELDS)
    sql = rule.to_sql()
    python_kind, python_value = _outcome(lambda: rule.evaluate(record))
    duckdb_kind, duckdb_value = _outcome(lambda: _in_duckdb(connection, sql, record))
    assert python_kind == duckdb_kind == "value", (text, sql, python_value, duckdb_value)
    assert python_value == duckdb_value, (text, sql, record)
    assert rule.matches(record) is (duckdb_value is True)


@settings(settings.get_profile("rules-ci"))
@given(text=boolean(MAX_DEPTH), record=records)
def test_conditions_agree_with_duckdb(
    table: duckdb.DuckDBPyConnection, text: str, record: dict[str, Any]
) -> None:
    _check_agreement(table, text, record)


@functools.cache
def integer(depth: int) -> st.SearchStrategy[str]:
    """Integer-valued expressions (BIGINT in DuckDB): signs, rounding and modulo in focus."""
    leaves = _weighted((3, st.sampled_from(["n_int", "m_int"])), (1, small_ints.map(str)))
    if depth == 0:
        return leaves
    sub = integer(depth - 1)
    return _weighted(
        (2, leaves),
        (
            6,
            st.tuples(sub, st.sampled_from(["+", "-", "*", "%"]), sub).map(
                lambda t: f"({t[0]} {t[1]} {t[2]})"
            ),
        ),
        (1, sub.map(lambda e: f"-({e})")),
        (1, sub.map(lambda e: f"abs({e})")),
        (1, st.tuples(sub, st.integers(-2, 1)).map(lambda t: f"round({t[0]}, {t[1]})")),
        (
            1,
            st.tuples(st.sampled_from(["coalesce", "least", "greatest"]), sub, sub).map(
                lambda t: _call(t[0], [t[1], "NULL", t[2]])
            ),
        ),
    )


def _arithmetic(
    operand: st.SearchStrategy[str], other: st.SearchStrategy[str]
) -> st.SearchStrategy[str]:
    return st.tuples(
        operand,
        st.sampled_from(["+", "-", "*", "/", "%"]),
        operand,
        st.sampled_from(COMPARISONS),
        other,
    ).map(lambda t: f"({t[0]} {t[1]} {t[2]}) {t[3]} {t[4]}")


arithmetic_conditions = st.one_of(
    _arithmetic(number(MAX_DEPTH - 1), number(1)),
    _arithmetic(integer(MAX_DEPTH - 1), integer(1)),
)


@settings(settings.get_profile("rules-ci"))
@given(text=arithmetic_conditions, record=records)
def test_arithmetic_agrees_with_duckdb(
    table: duckdb.DuckDBPyConnection, text: str, record: dict[str, Any]
) -> None:
    """An arithmetic operator at the top of every comparison, over every kind of operand."""
    _check_agreement(table, text, record)


text_conditions = st.one_of(
    st.tuples(string(MAX_DEPTH), st.sampled_from(COMPARISONS), string(MAX_DEPTH - 1)).map(" ".join),
    st.tuples(
        string(MAX_DEPTH - 1),
        st.sampled_from(["LIKE", "NOT LIKE", "ILIKE", "NOT ILIKE"]),
        _like_pattern(False).map(_quote),
    ).map(" ".join),
    st.tuples(
        string(MAX_DEPTH - 1), st.sampled_from(["LIKE", "ILIKE"]), _like_pattern(True).map(_quote)
    ).map(lambda t: f"{' '.join(t)} ESCAPE '!'"),
    st.tuples(string(MAX_DEPTH - 1), st.sampled_from(COMPARISONS), number(1)).map(
        lambda t: f"length({t[0]}) {t[1]} {t[2]}"
    ),
)


@settings(settings.get_profile("rules-ci"))
@given(text=text_conditions, record=records)
def test_text_functions_agree_with_duckdb(
    table: duckdb.DuckDBPyConnection, text: str, record: dict[str, Any]
) -> None:
    """Text comparisons, LIKE/ILIKE with and without ESCAPE, case mapping and length."""
    _check_agreement(table, text, record)


@settings(settings.get_profile("rules-ci"))
@given(text=predicate(MAX_DEPTH - 1), record=records)
def test_membership_and_range_tests_agree_with_duckdb(
    table: duckdb.DuckDBPyConnection, text: str, record: dict[str, Any]
) -> None:
    """IN lists with NULLs, BETWEEN with NULL bounds, IS [NOT] NULL, for every type."""
    _check_agreement(table, text, record)
