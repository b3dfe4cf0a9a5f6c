"""Shared definitions of the rule language: field types, static types, limits, errors."""

from __future__ import annotations

import enum

#: Longest rule text accepted, in characters (checked before anything else).
MAX_RULE_LENGTH = 4_000
#: Deepest nesting of parentheses, ``CASE ... END`` and prefix operators (``NOT``, ``-``)
#: accepted, counted on the tokens before the parser runs. SQLGlot's parser spends
#: about 25 Python frames per level, so 16 levels stay far below the default
#: recursion limit of 1,000 even when called from a deep stack.
MAX_NESTING_DEPTH = 16
#: Most syntax-tree nodes (operators, literals, column references) accepted in one rule.
MAX_AST_NODES = 1_500
#: Deepest syntax tree accepted (chains of AND or of OR count as one level).
MAX_AST_DEPTH = 64

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1


class FieldType(enum.StrEnum):
    """Type of a field that rules may refer to.

    Examples
    --------
    >>> FieldType("number") is FieldType.NUMBER
    True
    """

    #: Integers (``BIGINT`` in the engine) or floating point numbers (``DOUBLE``).
    NUMBER = "number"
    #: Text (``VARCHAR``); compared by Unicode code point.
    STRING = "string"
    #: ``TRUE`` / ``FALSE``.
    BOOLEAN = "boolean"
    #: Date and time without time zone (``TIMESTAMP``); aware values are taken in UTC.
    TIMESTAMP = "timestamp"


class ValueType(enum.Enum):
    """Static type of an expression in a rule (``NULL`` is the type of the literal NULL)."""

    NUMBER = "number"
    STRING = "string"
    BOOLEAN = "boolean"
    TIMESTAMP = "timestamp"
    NULL = "null"

    @property
    def label(self) -> str:
        """Name used in error messages."""
        return {
            ValueType.NUMBER: "a number",
            ValueType.STRING: "a string",
            ValueType.BOOLEAN: "a condition (true/false)",
            ValueType.TIMESTAMP: "a timestamp",
            ValueType.NULL: "NULL",
        }[self]


FIELD_VALUE_TYPES = {
    FieldType.NUMBER: ValueType.NUMBER,
    FieldType.STRING: ValueType.STRING,
    FieldType.BOOLEAN: ValueType.BOOLEAN,
    FieldType.TIMESTAMP: ValueType.TIMESTAMP,
}


class NumKind(enum.Enum):
    """Static numeric kind of a number expression, as DuckDB types it.

    ``INT32`` is an expression made only of integer literals that fit in 32 bits
    (DuckDB types those ``INTEGER`` and raises on 32-bit overflow); ``INT64`` holds
    a ``BIGINT`` literal; ``DOUBLE`` holds a non-integer literal or a division;
    ``DYNAMIC`` depends on a field, whose value decides at run time (a Python
    ``int`` behaves as ``BIGINT``, a ``float`` as ``DOUBLE``).
    """

    INT32 = 1
    INT64 = 2
    DYNAMIC = 3
    DOUBLE = 4


def combine_kinds(*kinds: NumKind | None) -> NumKind | None:
    """Kind of an expression combining operands of the given kinds (``None``: NULL)."""
    present = [k for k in kinds if k is not None]
    if not present:
        return None
    return max(present, key=lambda k: k.value)
