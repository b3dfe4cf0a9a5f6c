"""The checked syntax tree of a rule: each node evaluates itself and renders itself as SQLGlot.

Nodes are built only by :mod:`segmint.segments._rules.checker`, after the whitelist
and type checks, so every node here is well-typed. Evaluation follows SQL's
three-valued logic: ``None`` is NULL and propagates through arithmetic, comparisons
and functions; AND/OR/NOT follow Kleene logic.

The SQL rendering mirrors the user's expression (their parentheses are kept as
``Paren`` nodes), with three deliberate rewrites that make every engine agree with
the Python evaluator: division and modulo by zero give NULL (``NULLIF(b, 0)``),
non-integer literals are ``DOUBLE`` (DuckDB and Spark would read ``0.1`` as
``DECIMAL``), and timestamp literals are written in one canonical form.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

import sqlglot.expressions as exp

from segmint.segments._rules import values
from segmint.segments._rules.base import NumKind, ValueType

Env = Mapping[str, Any]

#: Dialects whose LIKE treats a backslash as an escape character by default
#: (DuckDB does not); literal patterns are adjusted when rendering for them.
BACKSLASH_LIKE_DIALECTS = frozenset(
    {"spark", "spark2", "databricks", "hive", "postgres", "mysql", "bigquery"}
)


@dataclass(frozen=True)
class RenderContext:
    """What the SQL rendering needs to know about its target."""

    dialect: str


class Node:
    """A node of a checked rule."""

    __slots__ = ("vtype", "kind", "constant")

    vtype: ValueType
    kind: NumKind | None
    constant: bool

    def _init(self, vtype: ValueType, kind: NumKind | None, *children: Node) -> None:
        self.vtype = vtype
        self.kind = kind if vtype is ValueType.NUMBER else None
        self.constant = all(child.constant for child in children)

    def children(self) -> Sequence[Node]:
        """The direct sub-expressions."""
        return ()

    def evaluate(self, env: Env) -> Any:
        """Value of the expression given the fields' values (``None`` is NULL)."""
        raise NotImplementedError

    def to_sqlglot(self, ctx: RenderContext) -> exp.Expr:
        """A fresh SQLGlot expression for this node."""
        raise NotImplementedError

    def walk(self) -> Iterator[Node]:
        """This node and all below it, without recursion."""
        stack: list[Node] = [self]
        while stack:
            node = stack.pop()
            yield node
            stack.extend(node.children())


class Literal(Node):
    """A constant: number, string, boolean, timestamp or NULL."""

    __slots__ = ("value",)

    def __init__(self, value: Any, vtype: ValueType, kind: NumKind | None = None) -> None:
        self._init(vtype, kind)
        self.value = value

    def evaluate(self, env: Env) -> Any:
        return self.value

    def to_sqlglot(self, ctx: RenderContext) -> exp.Expr:
        value = self.value
        if value is None:
            return exp.Null()
        if isinstance(value, bool):
            return exp.Boolean(this=value)
        if isinstance(value, int):
            literal = exp.Literal.number(str(abs(value)))
            return exp.Neg(this=literal) if value < 0 else literal
        if isinstance(value, float):
            return float_literal(value)
        if isinstance(value, datetime):
            return exp.Cast(
                this=exp.Literal.string(values.format_timestamp(value)),
                to=exp.DataType.build("TIMESTAMP"),
            )
        return exp.Literal.string(str(value))


def float_literal(value: float) -> exp.Expr:
    """SQL for a finite float that every engine reads back as exactly this ``DOUBLE``.

    Short decimals become ``CAST(0.1 AS DOUBLE)`` (exact: at most 15 significant
    digits survive the decimal-to-double conversion); longer ones use exponent
    notation, which DuckDB and Spark parse directly as ``DOUBLE``.
    """
    text = repr(abs(value))
    digits = text.replace(".", "").lstrip("0")
    if "e" not in text and len(digits) <= 15:
        literal: exp.Expr = exp.Cast(this=exp.Literal.number(text), to=exp.DataType.build("DOUBLE"))
    else:
        literal = exp.Literal.number(f"{abs(value):.17e}")
    return exp.Neg(this=literal) if math.copysign(1.0, value) < 0 else literal


class Field(Node):
    """A reference to a named field of the record."""

    __slots__ = ("name",)

    def __init__(self, name: str, vtype: ValueType) -> None:
        self._init(vtype, NumKind.DYNAMIC)
        self.constant = False
        self.name = name

    def evaluate(self, env: Env) -> Any:
        return env.get(self.name)

    def to_sqlglot(self, ctx: RenderContext) -> exp.Expr:
        return exp.Column(this=exp.to_identifier(self.name, quoted=True))


class Paren(Node):
    """Parentheses the user wrote (kept so the SQL has the user's structure)."""

    __slots__ = ("inner",)

    def __init__(self, inner: Node) -> None:
        self._init(inner.vtype, inner.kind, inner)
        self.inner = inner

    def children(self) -> Sequence[Node]:
        return (self.inner,)

    def evaluate(self, env: Env) -> Any:
        return self.inner.evaluate(env)

    def to_sqlglot(self, ctx: RenderContext) -> exp.Expr:
        return exp.Paren(this=self.inner.to_sqlglot(ctx))


class Not(Node):
    """``NOT x``: NULL stays NULL."""

    __slots__ = ("operand",)

    def __init__(self, operand: Node) -> None:
        self._init(ValueType.BOOLEAN, None, operand)
        self.operand = operand

    def children(self) -> Sequence[Node]:
        return (self.operand,)

    def evaluate(self, env: Env) -> bool | None:
        value = self.operand.evaluate(env)
        return None if value is None else not value

    def to_sqlglot(self, ctx: RenderContext) -> exp.Expr:
        return exp.Not(this=self.operand.to_sqlglot(ctx))


class Connective(Node):
    """A chain of AND (or of OR) in Kleene logic: FALSE (TRUE) wins over NULL."""

    __slots__ = ("is_and", "operands")

    def __init__(self, is_and: bool, operands: Sequence[Node]) -> None:
        self._init(ValueType.BOOLEAN, None, *operands)
        self.is_and = is_and
        self.operands = tuple(operands)

    def children(self) -> Sequence[Node]:
        return self.operands

    def evaluate(self, env: Env) -> bool | None:
        deciding = not self.is_and
        unknown = False
        for operand in self.operands:
            value = operand.evaluate(env)
            if value is None:
                unknown = True
            elif value is deciding:
                return deciding
        return None if unknown else not deciding

    def to_sqlglot(self, ctx: RenderContext) -> exp.Expr:
        kind = exp.And if self.is_and else exp.Or
        result = self.operands[0].to_sqlglot(ctx)
        for operand in self.operands[1:]:
            result = kind(this=result, expression=operand.to_sqlglot(ctx))
        return result


_COMPARISONS: dict[str, tuple[Callable[[int, int], bool], type[exp.Expr]]] = {
    "=": (operator.eq, exp.EQ),
    "<>": (operator.ne, exp.NEQ),
    "<": (operator.lt, exp.LT),
    "<=": (operator.le, exp.LTE),
    ">": (operator.gt, exp.GT),
    ">=": (operator.ge, exp.GTE),
}


class Comparison(Node):
    """``a <op> b`` for ``= <> < <= > >=``; NULL if either side is NULL."""

    __slots__ = ("op", "left", "right", "_test")

    def __init__(self, op: str, left: Node, right: Node) -> None:
        self._init(ValueType.BOOLEAN, None, left, right)
        self.op = op
        self.left = left
        self.right = right
        self._test = _COMPARISONS[op][0]

    def children(self) -> Sequence[Node]:
        return (self.left, self.right)

    def evaluate(self, env: Env) -> bool | None:
        left = self.left.evaluate(env)
        right = self.right.evaluate(env)
        if left is None or right is None:
            return None
        return self._test(values.compare(left, right), 0)

    def to_sqlglot(self, ctx: RenderContext) -> exp.Expr:
        node_type = _COMPARISONS[self.op][1]
        return node_type(this=self.left.to_sqlglot(ctx), expression=self.right.to_sqlglot(ctx))


_ARITHMETIC: dict[str, tuple[Callable[[Any, Any, NumKind | None], Any], type[exp.Expr], bool]] = {
    # operator: (implementation, SQLGlot node, divisor guarded with NULLIF)
    "+": (values.add, exp.Add, False),
    "-": (values.subtract, exp.Sub, False),
    "*": (values.multiply, exp.Mul, False),
    "/": (values.divide, exp.Div, True),
    "%": (values.modulo, exp.Mod, True),
}


class Arithmetic(Node):
    """``a <op> b`` for ``+ - * / %``; NULL if either side is NULL."""

    __slots__ = ("op", "left", "right", "_apply")

    def __init__(self, op: str, left: Node, right: Node, kind: NumKind | None) -> None:
        self._init(ValueType.NUMBER, kind, left, right)
        self.op = op
        self.left = left
        self.right = right
        self._apply = _ARITHMETIC[op][0]

    def children(self) -> Sequence[Node]:
        return (self.left, self.right)

    def evaluate(self, env: Env) -> Any:
        left = self.left.evaluate(env)
        right = self.right.evaluate(env)
        if left is None or right is None:
            return None
        return self._apply(left, right, self.kind)

    def to_sqlglot(self, ctx: RenderContext) -> exp.Expr:
        _, node_type, guarded = _ARITHMETIC[self.op]
        right = self.right.to_sqlglot(ctx)
        if guarded:
            right = exp.Nullif(this=right, expression=exp.Literal.number(0))
        return node_type(this=self.left.to_sqlglot(ctx), expression=right)


class Negate(Node):
    """Unary minus."""

    __slots__ = ("operand",)

    def __init__(self, operand: Node) -> None:
        self._init(ValueType.NUMBER, operand.kind, operand)
        self.operand = operand

    def children(self) -> Sequence[Node]:
        return (self.operand,)

    def evaluate(self, env: Env) -> Any:
        value = self.operand.evaluate(env)
        return None if value is None else values.negate(value, self.kind)

    def to_sqlglot(self, ctx: RenderContext) -> exp.Expr:
        return exp.Neg(this=self.operand.to_sqlglot(ctx))


class InList(Node):
    """``x IN (v1, v2, ...)`` over literals: TRUE on a match, else NULL if x or any v is NULL."""

    __slots__ = ("operand", "items", "_values", "_has_null", "_strings")

    def __init__(self, operand: Node, items: Sequence[Node]) -> None:
        self._init(ValueType.BOOLEAN, None, operand, *items)
        self.operand = operand
        self.items = tuple(items)
        evaluated = [item.evaluate({}) for item in self.items]
        self._values = tuple(value for value in evaluated if value is not None)
        self._has_null = len(self._values) < len(evaluated)
        # text equality is plain equality, so a set lookup is exact for strings
        self._strings = (
            frozenset(self._values)
            if all(isinstance(value, str) for value in self._values)
            else None
        )

    def children(self) -> Sequence[Node]:
        return (self.operand, *self.items)

    def evaluate(self, env: Env) -> bool | None:
        value = self.operand.evaluate(env)
        if value is None:
            return None
        if self._strings is not None:
            return True if value in self._strings else (None if self._has_null else False)
        for candidate in self._values:
            if values.compare(value, candidate) == 0:
                return True
        return None if self._has_null else False

    def to_sqlglot(self, ctx: RenderContext) -> exp.Expr:
        return exp.In(
            this=self.operand.to_sqlglot(ctx),
            expressions=[item.to_sqlglot(ctx) for item in self.items],
        )


class Between(Node):
    """``x BETWEEN lo AND hi``, i.e. ``x >= lo AND x <= hi`` in Kleene logic."""

    __slots__ = ("operand", "low", "high")

    def __init__(self, operand: Node, low: Node, high: Node) -> None:
        self._init(ValueType.BOOLEAN, None, operand, low, high)
        self.operand = operand
        self.low = low
        self.high = high

    def children(self) -> Sequence[Node]:
        return (self.operand, self.low, self.high)

    def evaluate(self, env: Env) -> bool | None:
        value = self.operand.evaluate(env)
        low = self.low.evaluate(env)
        high = self.high.evaluate(env)
        above = None if value is None or low is None else values.compare(value, low) >= 0
        below = None if value is None or high is None else values.compare(value, high) <= 0
        if above is False or below is False:
            return False
        if above is None or below is None:
            return None
        return True

    def to_sqlglot(self, ctx: RenderContext) -> exp.Expr:
        return exp.Between(
            this=self.operand.to_sqlglot(ctx),
            low=self.low.to_sqlglot(ctx),
            high=self.high.to_sqlglot(ctx),
        )


class IsNull(Node):
    """``x IS NULL`` (``IS NOT NULL`` is ``NOT`` of it); never NULL itself."""

    __slots__ = ("operand",)

    def __init__(self, operand: Node) -> None:
        self._init(ValueType.BOOLEAN, None, operand)
        self.operand = operand

    def children(self) -> Sequence[Node]:
        return (self.operand,)

    def evaluate(self, env: Env) -> bool:
        return self.operand.evaluate(env) is None

    def to_sqlglot(self, ctx: RenderContext) -> exp.Expr:
        return exp.Is(this=self.operand.to_sqlglot(ctx), expression=exp.Null())


class Like(Node):
    """``s [NOT] LIKE|ILIKE p [ESCAPE 'c']``."""

    __slots__ = ("operand", "pattern", "escape", "insensitive", "negated")

    def __init__(
        self,
        operand: Node,
        pattern: Node,
        *,
        escape: str | None,
        insensitive: bool,
        negated: bool,
    ) -> None:
        self._init(ValueType.BOOLEAN, None, operand, pattern)
        self.operand = operand
        self.pattern = pattern
        self.escape = escape
        self.insensitive = insensitive
        self.negated = negated

    def children(self) -> Sequence[Node]:
        return (self.operand, self.pattern)

    def evaluate(self, env: Env) -> bool | None:
        text = self.operand.evaluate(env)
        pattern = self.pattern.evaluate(env)
        if text is None or pattern is None:
            return None
        if self.insensitive:
            text, pattern = values.lower(text), values.lower(pattern)
        return values.like(text, pattern, self.escape) is not self.negated

    def to_sqlglot(self, ctx: RenderContext) -> exp.Expr:
        pattern = self.pattern.to_sqlglot(ctx)
        if (
            self.escape is None
            and ctx.dialect in BACKSLASH_LIKE_DIALECTS
            and isinstance(self.pattern, Literal)
            and isinstance(self.pattern.value, str)
            and "\\" in self.pattern.value
        ):
            pattern = exp.Literal.string(self.pattern.value.replace("\\", "\\\\"))
        node_type = exp.ILike if self.insensitive else exp.Like
        node: exp.Expr = node_type(
            this=self.operand.to_sqlglot(ctx), expression=pattern, negate=self.negated or None
        )
        if self.escape is not None:
            node = exp.Escape(this=node, expression=exp.Literal.string(self.escape))
        return node


class Coalesce(Node):
    """``coalesce(a, b, ...)``: the first argument that is not NULL."""

    __slots__ = ("args",)

    def __init__(self, args: Sequence[Node], vtype: ValueType, kind: NumKind | None) -> None:
        self._init(vtype, kind, *args)
        self.args = tuple(args)

    def children(self) -> Sequence[Node]:
        return self.args

    def evaluate(self, env: Env) -> Any:
        for arg in self.args:
            value = arg.evaluate(env)
            if value is not None:
                return values.as_kind(value, self.kind)
        return None

    def to_sqlglot(self, ctx: RenderContext) -> exp.Expr:
        rendered = [arg.to_sqlglot(ctx) for arg in self.args]
        return exp.Coalesce(this=rendered[0], expressions=rendered[1:])


class Extreme(Node):
    """``least(...)`` / ``greatest(...)``: NULL arguments are skipped, as in DuckDB and Spark."""

    __slots__ = ("args", "greatest")

    def __init__(
        self, args: Sequence[Node], vtype: ValueType, kind: NumKind | None, *, greatest: bool
    ) -> None:
        self._init(vtype, kind, *args)
        self.args = tuple(args)
        self.greatest = greatest

    def children(self) -> Sequence[Node]:
        return self.args

    def evaluate(self, env: Env) -> Any:
        found = [values.as_kind(arg.evaluate(env), self.kind) for arg in self.args]
        return values.pick_extreme(found, greatest=self.greatest)

    def to_sqlglot(self, ctx: RenderContext) -> exp.Expr:
        rendered = [arg.to_sqlglot(ctx) for arg in self.args]
        node_type = exp.Greatest if self.greatest else exp.Least
        return node_type(this=rendered[0], expressions=rendered[1:], ignore_nulls=True)


class UnaryFunction(Node):
    """``abs``, ``lower``, ``upper``, ``length``, ``ln`` and ``sqrt``."""

    __slots__ = ("name", "arg", "_apply")

    #: name: (implementation taking (value, kind), SQLGlot node, result type, result kind)
    FUNCTIONS: ClassVar[
        dict[
            str,
            tuple[
                Callable[[Any, NumKind | None], Any],
                type[exp.Func],
                ValueType,
                NumKind | None,
            ],
        ]
    ] = {
        "abs": (values.absolute, exp.Abs, ValueType.NUMBER, None),
        "lower": (values.lower_function, exp.Lower, ValueType.STRING, None),
        "upper": (values.upper_function, exp.Upper, ValueType.STRING, None),
        "length": (values.length_function, exp.Length, ValueType.NUMBER, NumKind.INT64),
        "ln": (values.natural_log, exp.Ln, ValueType.NUMBER, NumKind.DOUBLE),
        "sqrt": (values.square_root, exp.Sqrt, ValueType.NUMBER, NumKind.DOUBLE),
    }

    def __init__(self, name: str, arg: Node) -> None:
        apply, _, vtype, kind = self.FUNCTIONS[name]
        self._init(vtype, kind if kind is not None else arg.kind, arg)
        self.name = name
        self.arg = arg
        self._apply = apply

    def children(self) -> Sequence[Node]:
        return (self.arg,)

    def evaluate(self, env: Env) -> Any:
        value = self.arg.evaluate(env)
        return None if value is None else self._apply(value, self.kind)

    def to_sqlglot(self, ctx: RenderContext) -> exp.Expr:
        node_type = self.FUNCTIONS[self.name][1]
        return node_type(this=self.arg.to_sqlglot(ctx))


class Round(Node):
    """``round(x[, digits])``: half away from zero; ``digits`` is an integer literal."""

    __slots__ = ("arg", "digits", "_digits_node")

    def __init__(self, arg: Node, digits_node: Node | None, digits: int | None) -> None:
        self._init(ValueType.NUMBER, arg.kind, arg)
        self.arg = arg
        self.digits = digits
        self._digits_node = digits_node

    def children(self) -> Sequence[Node]:
        return (self.arg,)

    def evaluate(self, env: Env) -> Any:
        value = self.arg.evaluate(env)
        return None if value is None else values.round_number(value, self.digits, self.kind)

    def to_sqlglot(self, ctx: RenderContext) -> exp.Expr:
        decimals = None if self._digits_node is None else self._digits_node.to_sqlglot(ctx)
        return exp.Round(this=self.arg.to_sqlglot(ctx), decimals=decimals)


class Case(Node):
    """``CASE [x] WHEN c THEN v ... [ELSE d] END``; a WHEN that is NULL is not taken."""

    __slots__ = ("operand", "whens", "default")

    def __init__(
        self,
        operand: Node | None,
        whens: Sequence[tuple[Node, Node]],
        default: Node | None,
        vtype: ValueType,
        kind: NumKind | None,
    ) -> None:
        parts = [node for pair in whens for node in pair]
        if operand is not None:
            parts.append(operand)
        if default is not None:
            parts.append(default)
        self._init(vtype, kind, *parts)
        self.operand = operand
        self.whens = tuple(whens)
        self.default = default

    def children(self) -> Sequence[Node]:
        parts = [node for pair in self.whens for node in pair]
        if self.operand is not None:
            parts.append(self.operand)
        if self.default is not None:
            parts.append(self.default)
        return parts

    def evaluate(self, env: Env) -> Any:
        subject = None if self.operand is None else self.operand.evaluate(env)
        for condition, result in self.whens:
            tested = condition.evaluate(env)
            if self.operand is None:
                taken = tested is True
            else:
                taken = (
                    subject is not None
                    and tested is not None
                    and values.compare(subject, tested) == 0
                )
            if taken:
                return values.as_kind(result.evaluate(env), self.kind)
        if self.default is None:
            return None
        return values.as_kind(self.default.evaluate(env), self.kind)

    def to_sqlglot(self, ctx: RenderContext) -> exp.Expr:
        return exp.Case(
            this=None if self.operand is None else self.operand.to_sqlglot(ctx),
            ifs=[
                exp.If(this=condition.to_sqlglot(ctx), true=result.to_sqlglot(ctx))
                for condition, result in self.whens
            ],
            default=None if self.default is None else self.default.to_sqlglot(ctx),
        )
