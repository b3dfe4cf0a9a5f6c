"""Engine layer: the warehouse connection (Ibis over DuckDB by default) and dialect helpers."""

from segmint.engine.deferred import DeferredWrites, RowWriter
from segmint.engine.warehouse import Warehouse

__all__ = ["DeferredWrites", "RowWriter", "Warehouse"]
