"""Parsing a rule's text into a checked, immutable :class:`Rule`."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlglot.expressions as exp
from sqlglot.dialects.dialect import Dialect
from sqlglot.errors import ErrorLevel, ParseError, SqlglotError, TokenError, UnsupportedError

from segmint.errors import RuleSyntaxError, UserInputError
from segmint.segments._rules import guards
from segmint.segments._rules.base import FieldType
from segmint.segments._rules.checker import Checker
from segmint.segments._rules.nodes import Node, RenderContext
from segmint.segments._rules.values import coerce_value

logger = logging.getLogger(__name__)

_READ_DIALECT = "duckdb"


@dataclass(frozen=True, slots=True, repr=False)
class Rule:
    """A checked rule: a boolean SQL expression over named fields.

    Build one with :func:`parse_rule`. The same rule runs in the database
    (:meth:`to_sql`) and in Python (:meth:`evaluate`), with the same answer.

    Attributes
    ----------
    text
        The rule as written.
    fields
        Names of the fields the rule refers to.

    Examples
    --------
    >>> rule = parse_rule("recency_days > 90 AND monetary >= 500",
    ...                   {"recency_days": "number", "monetary": "number"})
    >>> rule.to_sql()
    '"recency_days" > 90 AND "monetary" >= 500'
    >>> rule.evaluate({"recency_days": 120, "monetary": 800.0})
    True
    >>> rule.evaluate({"recency_days": 120, "monetary": None}) is None
    True
    """

    text: str
    fields: frozenset[str] = field(compare=False)
    _field_types: tuple[tuple[str, FieldType], ...]
    _root: Node = field(compare=False)

    def __repr__(self) -> str:
        return f"Rule({self.text!r})"

    def to_sql(self, dialect: str = "duckdb") -> str:
        """The rule as a SQL boolean expression for ``dialect`` (SQLGlot's dialect names).

        Field names are quoted identifiers; literals come from the checked syntax
        tree and are escaped by SQLGlot. Division and modulo by zero are written as
        ``x / NULLIF(y, 0)`` so that every engine returns NULL, as :meth:`evaluate`
        does.

        Examples
        --------
        >>> parse_rule("spend / orders > 50", {"spend": "number", "orders": "number"}
        ...            ).to_sql("spark")
        '`spend` / NULLIF(`orders`, 0) > 50'
        """
        try:
            Dialect.get_or_raise(dialect)
        except ValueError as error:
            raise UserInputError(f"unknown SQL dialect {dialect!r}") from error
        tree = self._root.to_sqlglot(RenderContext(dialect=dialect))
        try:
            return tree.sql(dialect=dialect, unsupported_level=ErrorLevel.RAISE)
        except UnsupportedError as error:
            raise UserInputError(
                f"rule {self.text!r} cannot be written in SQL dialect {dialect!r}: {error}"
            ) from error

    def evaluate(self, record: Mapping[str, Any]) -> bool | None:
        """Evaluate the rule on one record with SQL's three-valued logic.

        Parameters
        ----------
        record
            Field values by name. A missing key, ``None``, pandas ``NA``/``NaT`` and
            float NaN are NULL. Numbers are ``int`` (``BIGINT`` semantics) or
            ``float`` (``DOUBLE``); timestamps are ``datetime`` (aware ones are
            converted to UTC), ``date`` or ISO 8601 text.

        Returns
        -------
        bool or None
            ``None`` when the rule's value is NULL (unknown).

        Raises
        ------
        RuleEvaluationError
            If a value has the wrong type for its field, or evaluation fails as it
            would in the database (integer overflow, logarithm of zero...).

        Examples
        --------
        >>> rule = parse_rule("city IN ('Paris', NULL)", {"city": "string"})
        >>> rule.evaluate({"city": "Paris"}), rule.evaluate({"city": "Lyon"})
        (True, None)
        """
        env = {
            name: coerce_value(name, field_type, record.get(name))
            for name, field_type in self._field_types
        }
        result = self._root.evaluate(env)
        return None if result is None else bool(result)

    def matches(self, record: Mapping[str, Any]) -> bool:
        """Whether the record is in the segment: like SQL's WHERE, NULL counts as no.

        Examples
        --------
        >>> rule = parse_rule("monetary >= 500", {"monetary": "number"})
        >>> rule.matches({"monetary": 800}), rule.matches({"monetary": None})
        (True, False)
        """
        return self.evaluate(record) is True


def _normalize_fields(fields: Mapping[str, FieldType | str]) -> dict[str, FieldType]:
    schema: dict[str, FieldType] = {}
    for name, field_type in fields.items():
        if not isinstance(name, str) or not name:
            raise UserInputError(f"field names must be non-empty text, got {name!r}")
        try:
            schema[name] = FieldType(field_type)
        except ValueError:
            allowed = ", ".join(t.value for t in FieldType)
            raise UserInputError(
                f"unknown field type {field_type!r} (allowed: {allowed})", where=name
            ) from None
    return schema


def _offset(text: str, line: int, column: int) -> int:
    """0-based offset of a 1-based line and column."""
    lines = text.splitlines(keepends=True)
    return sum(len(previous) for previous in lines[: max(line - 1, 0)]) + max(column - 1, 0)


def _parse(text: str) -> exp.Expr:
    dialect = Dialect.get_or_raise(_READ_DIALECT)
    try:
        tokens = dialect.tokenize(text)
    except TokenError as error:
        raise RuleSyntaxError(
            "the rule cannot be read: is a string literal or quoted name left open?"
        ) from error
    guards.check_tokens(tokens)
    try:
        statements = dialect.parser(error_level=ErrorLevel.IMMEDIATE).parse(tokens, sql=text)
    except ParseError as error:
        details = error.errors[0] if error.errors else {}
        description = str(details.get("description") or str(error).splitlines()[0])
        if description.startswith("Required keyword"):
            description = "the expression is incomplete"
        position = None
        if details.get("line") is not None and details.get("col") is not None:
            position = _offset(text, int(details["line"]), int(details["col"]))
        raise RuleSyntaxError(
            f"invalid rule syntax: {description}", where=guards.where(position)
        ) from error
    except RecursionError as error:  # the token guard should make this unreachable
        raise RuleSyntaxError("rule is nested too deeply") from error
    except SqlglotError as error:
        raise RuleSyntaxError(f"invalid rule syntax: {error}") from error
    if len(statements) != 1 or statements[0] is None:
        raise RuleSyntaxError("a rule must be exactly one condition")
    return statements[0]


def parse_rule(text: str, fields: Mapping[str, FieldType | str]) -> Rule:
    """Parse and check a rule written as a SQL boolean expression over ``fields``.

    The text is limited in length, nesting and size before and after parsing; the
    syntax tree is then checked against the rule language's whitelist (literals,
    known fields, comparisons, AND/OR/NOT, arithmetic, IN, BETWEEN, IS [NOT] NULL,
    [NOT] LIKE/ILIKE, CASE, and the functions abs, coalesce, greatest, least,
    length, ln, lower, round, sqrt, upper) and type-checked. Nothing is executed.

    Parameters
    ----------
    text
        The rule, e.g. ``"recency_days > 90 AND monetary >= 500"``.
    fields
        Field names the rule may use, with their :class:`FieldType` (or its value,
        e.g. ``"number"``).

    Returns
    -------
    Rule

    Raises
    ------
    RuleSyntaxError
        If the rule is malformed, too large, uses anything not allowed, refers to an
        unknown field (close matches are suggested) or is badly typed. ``where``
        gives the character position when it is known.

    Examples
    --------
    >>> rule = parse_rule("minutes_since_last_event < 30",
    ...                   {"minutes_since_last_event": FieldType.NUMBER})
    >>> sorted(rule.fields)
    ['minutes_since_last_event']
    >>> parse_rule("recency_dys > 90", {"recency_days": "number"})
    Traceback (most recent call last):
    ...
    segmint.errors.RuleSyntaxError: character 1: unknown field 'recency_dys'; did you mean \
'recency_days'? (known fields: recency_days)
    """
    if not isinstance(text, str):
        raise RuleSyntaxError(f"a rule must be text, got {type(text).__name__}")
    schema = _normalize_fields(fields)
    guards.check_length(text)
    tree = _parse(text)
    guards.check_tree(tree)
    checker = Checker(schema)
    root = checker.check_rule(tree)
    used = frozenset(checker.used)
    logger.debug("parsed rule %r over fields %s", text, sorted(used))
    return Rule(
        text=text,
        fields=used,
        _field_types=tuple(sorted((name, schema[name]) for name in used)),
        _root=root,
    )
