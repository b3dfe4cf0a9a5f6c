"""Creating the canonical tables in a warehouse."""

from __future__ import annotations

from segmint.data.schema import TABLES
from segmint.engine import Warehouse


def ensure_tables(warehouse: Warehouse) -> None:
    """Create every canonical and bookkeeping table that does not exist yet."""
    for table in TABLES.values():
        warehouse.execute(table.ddl())
