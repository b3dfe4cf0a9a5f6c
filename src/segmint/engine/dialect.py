"""SQL dialect helpers: statements are written in DuckDB's dialect and transpiled.

After splink's ``dialects.py``: one canonical dialect in the code, SQLGlot for the rest.
"""

from __future__ import annotations

import sqlglot
import sqlglot.expressions as exp

CANONICAL = "duckdb"


def quote(identifier: str) -> str:
    """Quote an identifier (table or column name) safely for any dialect."""
    return exp.to_identifier(identifier, quoted=True).sql(dialect=CANONICAL)


def transpile(sql: str, dialect: str) -> str:
    """Render a statement written in DuckDB SQL for another dialect (e.g. ``spark``)."""
    if dialect == CANONICAL:
        return sql
    return ";\n".join(sqlglot.transpile(sql, read=CANONICAL, write=dialect))
