"""An in-memory warehouse that records the statements it runs (to check what a write costs)."""

from __future__ import annotations

from typing import Any

from segmint.engine import Warehouse


class RecordingWarehouse(Warehouse):
    def __init__(self) -> None:
        super().__init__(":memory:")
        self.statements: list[str] = []

    def execute(self, sql: str, params: Any = None) -> None:
        self.statements.append(sql)
        super().execute(sql, params)

    def deletes(self) -> list[str]:
        return [sql for sql in self.statements if sql.startswith("DELETE")]
