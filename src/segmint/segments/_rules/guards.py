"""Limits on rule text and syntax trees, checked so hostile input cannot exhaust the parser.

Order matters: the length is checked before anything reads the text, the tokens
(SQLGlot's tokenizer is a linear loop, no recursion) before the recursive-descent
parser runs, and the size of the tree before anything walks it recursively.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlglot.expressions as exp
from sqlglot.tokens import Token, TokenType

from segmint.errors import RuleSyntaxError
from segmint.segments._rules.base import (
    MAX_AST_DEPTH,
    MAX_AST_NODES,
    MAX_NESTING_DEPTH,
    MAX_RULE_LENGTH,
)

_OPENERS = frozenset({TokenType.L_PAREN, TokenType.CASE})
_CLOSERS = frozenset({TokenType.R_PAREN, TokenType.END})
_SIGNS = frozenset(
    getattr(TokenType, name)
    for name in ("DASH", "PLUS", "TILDA", "TILDE")
    if hasattr(TokenType, name)
)
#: Tokens after which ``-`` / ``+`` are binary operators rather than prefix signs.
_OPERAND_ENDS = frozenset(
    {
        TokenType.VAR,
        TokenType.IDENTIFIER,
        TokenType.NUMBER,
        TokenType.STRING,
        TokenType.R_PAREN,
        TokenType.END,
        TokenType.NULL,
        TokenType.TRUE,
        TokenType.FALSE,
    }
)
_BRACKETS = frozenset(
    {TokenType.L_BRACE, TokenType.R_BRACE, TokenType.L_BRACKET, TokenType.R_BRACKET}
)
#: Keywords that only start statements or subqueries; a rule is one expression.
_STATEMENT_KEYWORDS = frozenset(
    getattr(TokenType, name)
    for name in (
        "SELECT",
        "FROM",
        "WITH",
        "DROP",
        "INSERT",
        "UPDATE",
        "DELETE",
        "MERGE",
        "CREATE",
        "ALTER",
        "TRUNCATE",
        "UNION",
        "INTERSECT",
        "EXCEPT",
        "PRAGMA",
        "ATTACH",
        "DETACH",
        "COPY",
        "INSTALL",
        "LOAD",
        "EXECUTE",
        "GRANT",
        "DESCRIBE",
        "USE",
        "SET",
        "COMMAND",
    )
    if hasattr(TokenType, name)
)


def where(position: int | None) -> str | None:
    """The ``where`` of an error at a 0-based character offset."""
    return None if position is None else f"character {position + 1}"


def check_length(text: str) -> None:
    """Reject empty and over-long rule text."""
    if len(text) > MAX_RULE_LENGTH:
        raise RuleSyntaxError(
            f"rule is too long: {len(text):,} characters (the limit is {MAX_RULE_LENGTH:,})"
        )
    if not text.strip():
        raise RuleSyntaxError("rule is empty")


def check_tokens(tokens: Sequence[Token]) -> None:
    """Reject statement syntax and excessive nesting, looking only at the tokens.

    Nesting counts open parentheses, open ``CASE ... END`` and runs of prefix
    operators (``NOT NOT x``, ``- - x``), each of which costs the parser a level of
    recursion.
    """
    if not tokens:
        raise RuleSyntaxError("rule is empty")
    depth = 0
    prefix_run = 0
    previous: TokenType | None = None
    for token in tokens:
        kind = token.token_type
        if kind is TokenType.SEMICOLON:
            raise RuleSyntaxError(
                "';' is not allowed: a rule is a single condition, not SQL statements",
                where=where(token.start),
            )
        if kind in _STATEMENT_KEYWORDS:
            raise RuleSyntaxError(
                f"SQL keyword {token.text.upper()} is not allowed: a rule is a single "
                "condition, not a statement or subquery (quote a field named like a "
                'keyword: "name")',
                where=where(token.start),
            )
        if kind in _BRACKETS:
            raise RuleSyntaxError(
                f"{token.text!r} is not allowed: lists, structs and templates are not part "
                "of the rule language",
                where=where(token.start),
            )
        if kind in _OPENERS:
            depth += 1
            prefix_run = 0
        elif kind in _CLOSERS:
            depth = max(depth - 1, 0)
            prefix_run = 0
        elif kind is TokenType.NOT or (kind in _SIGNS and previous not in _OPERAND_ENDS):
            prefix_run += 1
        else:
            prefix_run = 0
        previous = kind
        if depth + prefix_run > MAX_NESTING_DEPTH:
            raise RuleSyntaxError(
                f"rule is nested too deeply (more than {MAX_NESTING_DEPTH} levels of "
                "parentheses, CASE or NOT/minus)",
                where=where(token.start),
            )


def _same_chain(parent: exp.Expr, child: exp.Expr) -> bool:
    return isinstance(parent, exp.And | exp.Or) and type(child) is type(parent)


def check_tree(tree: exp.Expr) -> None:
    """Reject syntax trees with too many nodes or too deep, without recursion.

    A chain of ``AND`` (or of ``OR``) counts as one level: the checker flattens it
    and SQLGlot renders it with a loop.
    """
    count = 0
    stack: list[tuple[exp.Expr, int]] = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        if not isinstance(node, exp.Identifier):  # part of its column, not a node of its own
            count += 1
        if count > MAX_AST_NODES:
            raise RuleSyntaxError(f"rule is too large: more than {MAX_AST_NODES:,} syntax nodes")
        if depth > MAX_AST_DEPTH:
            raise RuleSyntaxError(
                f"rule is nested too deeply: its syntax tree is more than {MAX_AST_DEPTH} "
                "levels deep (split long chains of arithmetic)"
            )
        for child in node.iter_expressions():
            stack.append((child, depth if _same_chain(node, child) else depth + 1))
