"""The rule language: SQL boolean expressions over named fields, checked before use.

Rule segments and trigger conditions are written as SQL conditions such as
``recency_days > 90 AND monetary >= 500``. :func:`parse_rule` parses the text with
SQLGlot, checks the syntax tree against a whitelist and the known fields, and
returns an immutable :class:`Rule` that renders itself as SQL for batch evaluation
in the engine (:meth:`Rule.to_sql`) and evaluates itself in Python for real-time
evaluation (:meth:`Rule.evaluate`); both give the same answer, NULLs included.
Nothing in a rule is ever executed as code: no ``eval``/``exec``, and no SQL is
built by formatting user text.

Semantics (DuckDB's, with two deliberate choices so every engine agrees):

* three-valued logic: NULL propagates through arithmetic, comparisons and
  functions; AND/OR/NOT are Kleene logic; ``x IN (..., NULL)`` is NULL when no
  element matches; :meth:`Rule.matches` treats NULL as no match, like ``WHERE``;
* numbers are ``BIGINT`` (Python ``int``) or ``DOUBLE`` (``float``); ``/`` is always
  floating-point division; ``%`` takes the sign of the dividend; integer overflow
  is an error; non-integer literals such as ``0.1`` are ``DOUBLE`` (rendered
  ``CAST(0.1 AS DOUBLE)``), not ``DECIMAL``;
* division and modulo by zero give NULL (rendered ``x / NULLIF(y, 0)``) instead of
  DuckDB's infinity, which would make ``spend / orders > 100`` true for a
  customer with no orders;
* ``round`` rounds halves away from zero; ``ln`` of zero or a negative number and
  ``sqrt`` of a negative number are errors, as in DuckDB;
* strings compare by code point; ``lower``/``upper`` map one code point at a time
  (``upper('ß')`` is ``'ẞ'``); ``LIKE`` has no escape character unless ``ESCAPE``
  is given; ``ILIKE`` compares lower-cased text;
* timestamps are naive UTC; a text literal compared with a timestamp is read as
  ISO 8601.

Examples
--------
>>> from segmint.segments.rules import FieldType, parse_rule
>>> rule = parse_rule("recency_days > 90 AND monetary >= 500",
...                   {"recency_days": FieldType.NUMBER, "monetary": FieldType.NUMBER})
>>> rule.matches({"recency_days": 120, "monetary": 640.5})
True
"""

from __future__ import annotations

from segmint.errors import RuleEvaluationError
from segmint.segments._rules.base import (
    MAX_AST_DEPTH,
    MAX_AST_NODES,
    MAX_NESTING_DEPTH,
    MAX_RULE_LENGTH,
    FieldType,
)
from segmint.segments._rules.rule import Rule, parse_rule

__all__ = [
    "MAX_AST_DEPTH",
    "MAX_AST_NODES",
    "MAX_NESTING_DEPTH",
    "MAX_RULE_LENGTH",
    "FieldType",
    "Rule",
    "RuleEvaluationError",
    "parse_rule",
]
