"""Whitelist and type check of a parsed rule, producing the checked tree of :mod:`.nodes`.

Only the node types handled here are accepted; anything else SQLGlot can parse
(subqueries, casts, other functions, parameters, qualified names...) is rejected
with a :class:`~segmint.errors.RuleSyntaxError` naming it and where it starts.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping, Sequence

import sqlglot.expressions as exp
from sqlglot.errors import SqlglotError

from segmint.errors import RuleEvaluationError, RuleSyntaxError
from segmint.segments._rules import nodes, values
from segmint.segments._rules.base import (
    FIELD_VALUE_TYPES,
    INT32_MAX,
    INT64_MAX,
    FieldType,
    NumKind,
    ValueType,
    combine_kinds,
)
from segmint.segments._rules.guards import where

_INTEGER = re.compile(r"[0-9]+")
_DECIMAL = re.compile(r"(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")

ALLOWED_FUNCTIONS = (
    "abs",
    "coalesce",
    "greatest",
    "least",
    "length",
    "ln",
    "lower",
    "round",
    "sqrt",
    "upper",
)

_COMPARISON_OPS: dict[type[exp.Expr], str] = {
    exp.EQ: "=",
    exp.NEQ: "<>",
    exp.LT: "<",
    exp.LTE: "<=",
    exp.GT: ">",
    exp.GTE: ">=",
}
_ARITHMETIC_OPS: dict[type[exp.Expr], str] = {
    exp.Add: "+",
    exp.Sub: "-",
    exp.Mul: "*",
    exp.Div: "/",
    exp.Mod: "%",
}
_UNARY_FUNCTIONS: dict[type[exp.Expr], str] = {
    exp.Abs: "abs",
    exp.Lower: "lower",
    exp.Upper: "upper",
    exp.Length: "length",
    exp.Ln: "ln",
    exp.Sqrt: "sqrt",
}
_TIMESTAMP_TYPES = frozenset(
    {
        exp.DataType.Type.TIMESTAMP,
        exp.DataType.Type.TIMESTAMPNTZ,
        exp.DataType.Type.TIMESTAMPTZ,
        exp.DataType.Type.TIMESTAMPLTZ,
        exp.DataType.Type.DATETIME,
        exp.DataType.Type.DATE,
    }
)

_DESCRIPTIONS: dict[type[exp.Expr], str] = {
    exp.Subquery: "a subquery",
    exp.Select: "a SELECT statement",
    exp.Exists: "EXISTS (subquery)",
    exp.Star: "'*'",
    exp.Placeholder: "a query parameter",
    exp.Parameter: "a query parameter",
    exp.Dot: "'.' (attribute access or a qualified name)",
    exp.Alias: "an alias (AS)",
    exp.Cast: "a cast",
    exp.TryCast: "a cast",
    exp.DPipe: "string concatenation '||'",
    exp.IntDiv: "integer division '//' (use round(a / b) or a / b)",
    exp.NullSafeEQ: "IS NOT DISTINCT FROM",
    exp.NullSafeNEQ: "IS DISTINCT FROM",
    exp.Struct: "a struct literal",
    exp.Array: "a list literal",
    exp.Glob: "GLOB",
    exp.SimilarTo: "SIMILAR TO",
    exp.RegexpLike: "regular expressions",
    exp.Interval: "an INTERVAL",
    exp.Lambda: "a lambda",
    exp.Window: "a window function",
    exp.Bracket: "indexing with [ ]",
    exp.ByteString: "a byte string",
    exp.HexString: "a hex literal",
    exp.BitString: "a bit string",
    exp.National: "a national string literal",
    exp.Anonymous: "a function",
}


def _position(node: exp.Expr) -> int | None:
    """0-based offset where ``node`` starts in the rule text, when SQLGlot recorded it."""
    best: int | None = None
    for sub in node.walk():
        start = sub.meta.get("start") if sub.meta else None
        if isinstance(start, int) and (best is None or start < best):
            best = start
    return best


def _snippet(node: exp.Expr) -> str:
    """The expression as SQL, shortened, for error messages."""
    try:
        text = node.sql(dialect="duckdb", normalize_functions=False)
    except (SqlglotError, ValueError):
        text = type(node).__name__
    return text if len(text) <= 60 else text[:57] + "..."


def _has_extra_args(node: exp.Expr, allowed: frozenset[str]) -> bool:
    return any(
        key not in allowed and value not in (None, False, []) for key, value in node.args.items()
    )


class Checker:
    """Turns one parsed rule into checked nodes, recording the fields it uses."""

    def __init__(self, fields: Mapping[str, FieldType]) -> None:
        self.fields = fields
        self.used: set[str] = set()
        self._lower_names: dict[str, list[str]] = {}
        for name in fields:
            self._lower_names.setdefault(name.lower(), []).append(name)
        self._handlers: dict[type[exp.Expr], Callable[[exp.Expr], nodes.Node]] = {
            exp.Paren: self._paren,
            exp.Column: self._column,
            exp.Literal: self._literal,
            exp.Boolean: self._boolean,
            exp.Null: self._null,
            exp.Neg: self._negate,
            exp.Not: self._not,
            exp.And: self._connective,
            exp.Or: self._connective,
            exp.In: self._in,
            exp.Between: self._between,
            exp.Is: self._is,
            exp.Like: self._like,
            exp.ILike: self._like,
            exp.Escape: self._escape,
            exp.Coalesce: self._coalesce,
            exp.Least: self._extreme,
            exp.Greatest: self._extreme,
            exp.Round: self._round,
            exp.Case: self._case,
            exp.Cast: self._cast,
        }
        for comparison in _COMPARISON_OPS:
            self._handlers[comparison] = self._comparison
        for arithmetic in _ARITHMETIC_OPS:
            self._handlers[arithmetic] = self._arithmetic
        for function in _UNARY_FUNCTIONS:
            self._handlers[function] = self._unary_function

    # ------------------------------------------------------------------ entry points

    def check_rule(self, tree: exp.Expr) -> nodes.Node:
        """Check a whole rule: it must be a condition; constants must evaluate."""
        root = self.check(tree)
        if root.vtype not in (ValueType.BOOLEAN, ValueType.NULL):
            raise self._error(
                f"a rule must be a condition (true or false), but {_snippet(tree)!r} is "
                f"{root.vtype.label}",
                tree,
            )
        self._check_constants(root)
        return root

    def check(self, node: exp.Expr) -> nodes.Node:
        """Check one expression."""
        handler = self._handlers.get(type(node))
        if handler is None:
            raise self._not_allowed(node)
        return handler(node)

    # ------------------------------------------------------------------ errors

    def _error(self, message: str, node: exp.Expr) -> RuleSyntaxError:
        return RuleSyntaxError(message, where=where(_position(node)))

    def _not_allowed(self, node: exp.Expr, detail: str = "") -> RuleSyntaxError:
        description = _DESCRIPTIONS.get(type(node))
        if isinstance(node, exp.Anonymous):
            description = f"function {node.name}()"
        elif description is None and isinstance(node, exp.Func):
            description = f"function {node.sql_name().lower()}()"
        elif description is None:
            description = f"{type(node).__name__} ({_snippet(node)!r})"
        if isinstance(node, exp.Func | exp.Anonymous) and not detail:
            detail = f"; allowed functions: {', '.join(ALLOWED_FUNCTIONS)}"
        return self._error(
            f"{description} is not allowed in a rule{detail} (in {_snippet(node)!r})", node
        )

    def _expect(self, node: nodes.Node, source: exp.Expr, *wanted: ValueType) -> None:
        if node.vtype is ValueType.NULL or node.vtype in wanted:
            return
        names = " or ".join(w.label for w in wanted)
        raise self._error(
            f"expected {names}, but {_snippet(source)!r} is {node.vtype.label}", source
        )

    def _check_args(self, node: exp.Expr, *allowed: str) -> None:
        if _has_extra_args(node, frozenset(allowed) | {"this", "expression", "expressions"}):
            raise self._not_allowed(node, detail=" in this form")

    # ------------------------------------------------------------------ leaves

    def _paren(self, node: exp.Expr) -> nodes.Node:
        return nodes.Paren(self.check(node.this))

    def _column(self, node: exp.Expr) -> nodes.Node:
        identifier = node.this
        if not isinstance(identifier, exp.Identifier):
            raise self._not_allowed(identifier if isinstance(identifier, exp.Star) else node)
        if any(node.args.get(part) for part in ("table", "db", "catalog")):
            raise self._error(
                f"table-qualified column {_snippet(node)!r} is not allowed: refer to fields "
                "by name only",
                node,
            )
        self._check_args(node)
        name = self._resolve(identifier.this, quoted=bool(identifier.quoted), node=node)
        self.used.add(name)
        return nodes.Field(name, FIELD_VALUE_TYPES[self.fields[name]])

    def _resolve(self, name: str, *, quoted: bool, node: exp.Expr) -> str:
        if name in self.fields:
            return name
        if not quoted:
            candidates = self._lower_names.get(name.lower(), [])
            if len(candidates) == 1:
                return candidates[0]
        close = difflib.get_close_matches(name, list(self.fields), n=3, cutoff=0.6)
        if not close:
            lowered = {key.lower(): key for key in self.fields}
            close = [
                lowered[match]
                for match in difflib.get_close_matches(name.lower(), list(lowered), n=3)
            ]
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        known = sorted(self.fields)
        listing = ", ".join(known[:20]) + (", ..." if len(known) > 20 else "")
        raise self._error(f"unknown field {name!r}{hint} (known fields: {listing or 'none'})", node)

    def _literal(self, node: exp.Expr) -> nodes.Node:
        text = node.this
        if node.is_string:
            return nodes.Literal(str(text), ValueType.STRING)
        if _INTEGER.fullmatch(text):
            value = int(text)
            if value > INT64_MAX:
                raise self._error(
                    f"integer literal {text} is out of range (at most {INT64_MAX}); write it "
                    "with a decimal point to make it a floating point number",
                    node,
                )
            kind = NumKind.INT32 if value <= INT32_MAX else NumKind.INT64
            return nodes.Literal(value, ValueType.NUMBER, kind)
        if _DECIMAL.fullmatch(text):
            number = float(text)
            if number in (float("inf"), float("-inf")):
                raise self._error(f"number literal {text} is out of range", node)
            return nodes.Literal(number, ValueType.NUMBER, NumKind.DOUBLE)
        raise self._error(f"number literal {text!r} is not supported", node)

    def _boolean(self, node: exp.Expr) -> nodes.Node:
        return nodes.Literal(bool(node.this), ValueType.BOOLEAN)

    def _null(self, node: exp.Expr) -> nodes.Node:
        return nodes.Literal(None, ValueType.NULL)

    def _cast(self, node: exp.Expr) -> nodes.Node:
        target = node.args.get("to")
        source = node.this
        if (
            isinstance(target, exp.DataType)
            and target.this in _TIMESTAMP_TYPES
            and isinstance(source, exp.Literal)
            and source.is_string
            and not _has_extra_args(node, frozenset({"this", "to", "_type"}))
            and not target.expressions
        ):
            return self._timestamp_literal(source)
        raise self._error(
            f"cast {_snippet(node)!r} is not allowed: the only cast is of a text literal to "
            "a timestamp, e.g. TIMESTAMP '2024-01-31 12:00:00'",
            node,
        )

    def _timestamp_literal(self, source: exp.Expr) -> nodes.Node:
        parsed = values.parse_timestamp(str(source.this))
        if parsed is None:
            raise self._error(
                f"{source.this!r} is not a valid timestamp; write ISO 8601, e.g. "
                "'2024-01-31' or '2024-01-31 12:00:00'",
                source,
            )
        return nodes.Literal(parsed, ValueType.TIMESTAMP)

    # ------------------------------------------------------------------ typing helpers

    def _coerce_timestamps(
        self, checked: Sequence[nodes.Node], sources: Sequence[exp.Expr]
    ) -> list[nodes.Node]:
        """Beside a timestamp, text literals are read as timestamps (as DuckDB casts them)."""
        present = {node.vtype for node in checked}
        if ValueType.TIMESTAMP not in present or ValueType.STRING not in present:
            return list(checked)
        converted: list[nodes.Node] = []
        for node, source in zip(checked, sources, strict=True):
            if (
                node.vtype is ValueType.STRING
                and isinstance(node, nodes.Literal)
                and isinstance(source, exp.Literal)
            ):
                node = self._timestamp_literal(source)
            converted.append(node)
        return converted

    def _unify(
        self, checked: Sequence[nodes.Node], sources: Sequence[exp.Expr], what: str
    ) -> tuple[list[nodes.Node], ValueType]:
        """Give ``checked`` one common type (NULL fits any), or explain why they have none."""
        converted = self._coerce_timestamps(checked, sources)
        present = {node.vtype for node in converted} - {ValueType.NULL}
        if len(present) > 1:
            labels = " and ".join(sorted(t.label for t in present))
            context = sources[0].parent or sources[0]
            raise self._error(f"cannot mix {labels} in {what}: {_snippet(context)!r}", context)
        return converted, (present.pop() if present else ValueType.NULL)

    def _check_constants(self, root: nodes.Node) -> None:
        """Evaluate constant number sub-expressions now, so overflow is a syntax error."""
        for node in root.walk():
            if node.constant and node.vtype is ValueType.NUMBER:
                try:
                    node.evaluate({})
                except RuleEvaluationError as error:
                    raise RuleSyntaxError(
                        f"a constant part of the rule cannot be computed: {error.message}"
                    ) from error

    # ------------------------------------------------------------------ operators

    def _negate(self, node: exp.Expr) -> nodes.Node:
        operand = self.check(node.this)
        self._expect(operand, node.this, ValueType.NUMBER)
        return nodes.Negate(operand)

    def _not(self, node: exp.Expr) -> nodes.Node:
        operand = self.check(node.this)
        self._expect(operand, node.this, ValueType.BOOLEAN)
        return nodes.Not(operand)

    def _connective(self, node: exp.Expr) -> nodes.Node:
        chain_type = type(node)
        sources: list[exp.Expr] = []
        stack: list[exp.Expr] = [node]
        while stack:  # flatten the chain without recursion, keeping left-to-right order
            current = stack.pop()
            if type(current) is chain_type:
                stack.append(current.expression)
                stack.append(current.this)
            else:
                sources.append(current)
        operands = [self.check(source) for source in sources]
        for operand, source in zip(operands, sources, strict=True):
            self._expect(operand, source, ValueType.BOOLEAN)
        return nodes.Connective(chain_type is exp.And, operands)

    def _comparison(self, node: exp.Expr) -> nodes.Node:
        op = _COMPARISON_OPS[type(node)]
        sources = [node.this, node.expression]
        checked = [self.check(source) for source in sources]
        if any(part.vtype is ValueType.NULL for part in checked):
            raise self._error(
                f"comparing with NULL ({_snippet(node)!r}) is never true; use "
                "'x IS NULL' or 'x IS NOT NULL'",
                node,
            )
        left, right = self._coerce_timestamps(checked, sources)
        if left.vtype is not right.vtype:
            raise self._error(
                f"cannot compare {left.vtype.label} with {right.vtype.label} in {_snippet(node)!r}",
                node,
            )
        return nodes.Comparison(op, left, right)

    def _arithmetic(self, node: exp.Expr) -> nodes.Node:
        self._check_args(node, "typed", "safe")
        op = _ARITHMETIC_OPS[type(node)]
        left = self.check(node.this)
        right = self.check(node.expression)
        self._expect(left, node.this, ValueType.NUMBER)
        self._expect(right, node.expression, ValueType.NUMBER)
        kind = NumKind.DOUBLE if op == "/" else combine_kinds(left.kind, right.kind)
        return nodes.Arithmetic(op, left, right, kind)

    def _literal_item(self, source: exp.Expr) -> nodes.Node:
        """An element of an IN list: a literal, a negative number or a timestamp literal."""
        negative_number = (
            isinstance(source, exp.Neg)
            and isinstance(source.this, exp.Literal)
            and not source.this.is_string
        )
        if not negative_number and not isinstance(
            source, exp.Literal | exp.Boolean | exp.Null | exp.Cast
        ):
            raise self._error(
                f"IN lists may hold only literals, but {_snippet(source)!r} is not one", source
            )
        return self.check(source)

    def _in(self, node: exp.Expr) -> nodes.Node:
        if node.args.get("query") or node.args.get("unnest") or node.args.get("field"):
            raise self._error("IN takes a list of literals, not a subquery or an array", node)
        self._check_args(node, "is_global")
        operand_source: exp.Expr = node.this
        item_sources: list[exp.Expr] = list(node.expressions)
        if not item_sources:
            raise self._error("IN needs at least one value", node)
        operand = self.check(operand_source)
        items = [self._literal_item(source) for source in item_sources]
        unified, _ = self._unify([operand, *items], [operand_source, *item_sources], "IN")
        return nodes.InList(unified[0], unified[1:])

    def _between(self, node: exp.Expr) -> nodes.Node:
        if node.args.get("symmetric"):
            raise self._error(
                "BETWEEN SYMMETRIC is not allowed in a rule; write BETWEEN low AND high", node
            )
        sources = [node.this, node.args["low"], node.args["high"]]
        checked = [self.check(source) for source in sources]
        unified, _ = self._unify(checked, sources, "BETWEEN")
        return nodes.Between(*unified)

    def _is(self, node: exp.Expr) -> nodes.Node:
        if not isinstance(node.expression, exp.Null):
            raise self._error(
                f"{_snippet(node)!r} is not allowed: only IS NULL and IS NOT NULL are", node
            )
        checked: nodes.Node = nodes.IsNull(self.check(node.this))
        return nodes.Not(checked) if node.args.get("negate") else checked

    def _like(self, node: exp.Expr, escape: str | None = None) -> nodes.Node:
        self._check_args(node, "negate")
        operand = self.check(node.this)
        pattern = self.check(node.expression)
        self._expect(operand, node.this, ValueType.STRING)
        self._expect(pattern, node.expression, ValueType.STRING)
        if isinstance(pattern, nodes.Literal) and isinstance(pattern.value, str):
            try:
                values.compile_like(pattern.value, escape)
            except RuleEvaluationError as error:
                raise self._error(error.message, node.expression) from error
        return nodes.Like(
            operand,
            pattern,
            escape=escape,
            insensitive=isinstance(node, exp.ILike),
            negated=bool(node.args.get("negate")),
        )

    def _escape(self, node: exp.Expr) -> nodes.Node:
        like = node.this
        escape = node.expression
        if not isinstance(like, exp.Like | exp.ILike):
            raise self._not_allowed(node, detail=" (ESCAPE goes with LIKE or ILIKE)")
        if (
            not (isinstance(escape, exp.Literal) and escape.is_string and len(escape.this) == 1)
            or escape.this in "%_"
        ):
            raise self._error(
                "ESCAPE must be a single character in quotes, other than % and _", node
            )
        return self._like(like, escape=escape.this)

    # ------------------------------------------------------------------ functions

    def _unary_function(self, node: exp.Expr) -> nodes.Node:
        self._check_args(node)
        name = _UNARY_FUNCTIONS[type(node)]
        arg = self.check(node.this)
        wanted = ValueType.STRING if name in ("lower", "upper", "length") else ValueType.NUMBER
        self._expect(arg, node.this, wanted)
        return nodes.UnaryFunction(name, arg)

    def _round(self, node: exp.Expr) -> nodes.Node:
        self._check_args(node, "decimals")
        arg = self.check(node.this)
        self._expect(arg, node.this, ValueType.NUMBER)
        digits_source = node.args.get("decimals")
        if digits_source is None:
            return nodes.Round(arg, None, None)
        digits_node = self.check(digits_source)
        digits = digits_node.evaluate({}) if digits_node.constant else None
        if type(digits) is not int or not -(2**31) <= digits <= INT32_MAX:
            raise self._error(
                "the second argument of round() must be a whole number literal, e.g. round(x, 2)",
                digits_source,
            )
        return nodes.Round(arg, digits_node, digits)

    def _variadic_args(self, node: exp.Expr, name: str) -> tuple[list[nodes.Node], ValueType]:
        sources = [node.this, *node.expressions]
        checked = [self.check(source) for source in sources]
        return self._unify(checked, sources, f"{name}()")

    def _coalesce(self, node: exp.Expr) -> nodes.Node:
        self._check_args(node, "is_nvl", "is_null")
        args, vtype = self._variadic_args(node, "coalesce")
        return nodes.Coalesce(args, vtype, combine_kinds(*(a.kind for a in args)))

    def _extreme(self, node: exp.Expr) -> nodes.Node:
        self._check_args(node, "ignore_nulls")
        greatest = isinstance(node, exp.Greatest)
        args, vtype = self._variadic_args(node, "greatest" if greatest else "least")
        return nodes.Extreme(
            args,
            vtype,
            combine_kinds(*(a.kind for a in args)),
            greatest=greatest,
        )

    def _case(self, node: exp.Expr) -> nodes.Node:
        self._check_args(node, "ifs", "default")
        operand_source: exp.Expr | None = node.this
        operand = None if operand_source is None else self.check(operand_source)
        conditions: list[nodes.Node] = []
        result_sources: list[exp.Expr] = []
        for branch in node.args.get("ifs") or []:
            if not isinstance(branch, exp.If) or branch.args.get("false") is not None:
                raise self._not_allowed(branch)
            condition = self.check(branch.this)
            if operand is None or operand_source is None:
                self._expect(condition, branch.this, ValueType.BOOLEAN)
            else:
                (operand, condition), _ = self._unify(
                    [operand, condition], [operand_source, branch.this], "CASE ... WHEN"
                )
            conditions.append(condition)
            result_sources.append(branch.args["true"])
        default_source = node.args.get("default")
        if default_source is not None:
            result_sources.append(default_source)
        results, vtype = self._unify(
            [self.check(source) for source in result_sources],
            result_sources,
            "the results of CASE",
        )
        default = results.pop() if default_source is not None else None
        kind = combine_kinds(*(r.kind for r in results), default.kind if default else None)
        return nodes.Case(
            operand, list(zip(conditions, results, strict=True)), default, vtype, kind
        )
