"""Orchestration: draw chunks of customers and append every file chunk by chunk.

Drawing a chunk and writing the previous one overlap (the writer runs in a
thread; Arrow and Parquet release the GIL), so two cores are used. At most two
chunks are in memory at once.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa

from segmint.data.synthetic import _files, _segments, _text
from segmint.data.synthetic._catalog import Catalog, build_catalog
from segmint.data.synthetic._clock import Clock
from segmint.data.synthetic._consents import draw_consents
from segmint.data.synthetic._dirt import DirtRates
from segmint.data.synthetic._duplicates import draw_duplicates
from segmint.data.synthetic._event_text import render_events
from segmint.data.synthetic._events import draw_events
from segmint.data.synthetic._orders import draw_orders
from segmint.data.synthetic._people import draw_people
from segmint.data.synthetic._writers import CsvSink, JsonLinesSink, ParquetSink, Sink
from segmint.errors import UserInputError

logger = logging.getLogger(__name__)

#: Customers drawn and written per chunk (bounds memory; not part of the output).
CHUNK_CUSTOMERS = 10_000
FORMAT_VERSION = 1

_SOURCE_FILES = (
    _files.CUSTOMERS,
    _files.PRODUCTS,
    _files.ORDERS,
    _files.ORDER_ITEMS,
    _files.EVENTS,
    _files.CONSENTS,
)


@dataclass(frozen=True)
class GeneratedData:
    """What :func:`generate` wrote.

    Attributes
    ----------
    out_dir
        The output directory.
    files
        Path of each file, keyed ``customers``, ``products``, ``orders``,
        ``order_items``, ``events``, ``consents``, ``truth``, ``duplicates``,
        ``manifest``.
    counts
        Rows written per file (data lines, dirty rows included; not the header).
    dirt
        Number of dirty rows actually injected, per kind of :class:`DirtRates`.
    """

    out_dir: Path
    files: dict[str, Path]
    counts: dict[str, int]
    dirt: dict[str, int]


def _check_arguments(
    customers: object,
    seed: object,
    fmt: object,
    end: object,
    years: object,
    dirt_rates: object,
) -> None:
    """Raise :class:`UserInputError` for any invalid argument of :func:`generate`."""
    if isinstance(customers, bool) or not isinstance(customers, int) or customers < 1:
        raise UserInputError(f"must be a whole number >= 1, got {customers!r}", where="customers")
    if customers >= 10**9:
        raise UserInputError(f"must be below 1,000,000,000, got {customers!r}", where="customers")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise UserInputError(f"must be a whole number >= 0, got {seed!r}", where="seed")
    if fmt not in ("csv", "parquet"):
        raise UserInputError(f"must be 'csv' or 'parquet', got {fmt!r}", where="fmt")
    if not isinstance(end, date):
        raise UserInputError(f"must be a date, got {end!r}", where="end")
    if (
        isinstance(years, bool)
        or not isinstance(years, int | float)
        or not math.isfinite(years)
        or not 1.0 <= years <= 20.0
    ):
        raise UserInputError(f"must be between 1 and 20, got {years!r}", where="years")
    if dirt_rates is not None and not isinstance(dirt_rates, DirtRates):
        raise UserInputError(
            f"must be a DirtRates or None, got {type(dirt_rates).__name__}", where="dirt_rates"
        )


def generate(
    out_dir: str | Path,
    *,
    customers: int = 10_000,
    seed: int = 0,
    fmt: Literal["csv", "parquet"] = "csv",
    end: date = date(2026, 6, 30),
    years: float = 2.0,
    dirty: bool = True,
    dirt_rates: DirtRates | None = None,
) -> GeneratedData:
    """Write a synthetic retail data set with planted segments and known dirt.

    Parameters
    ----------
    out_dir
        Directory to write into (created if missing; files in it are replaced).
    customers
        Number of original customers (duplicate records come on top).
    seed
        Random seed: the same arguments always give byte-identical files.
    fmt
        ``"csv"`` (events as JSON Lines) or ``"parquet"``.
    end
        Everything happens before midnight at the start of this day (UTC),
        except injected future timestamps.
    years
        Length of the order and event history, 1 to 20 years.
    dirty
        Inject the defects of :class:`DirtRates`; ``False`` writes clean data.
    dirt_rates
        Rates of each defect; defaults to :class:`DirtRates()`.

    Returns
    -------
    GeneratedData
        Paths, row counts and the number of dirty rows of each kind.

    Raises
    ------
    UserInputError
        For invalid arguments.

    Examples
    --------
    >>> import tempfile
    >>> data = generate(tempfile.mkdtemp(), customers=200, seed=1)
    >>> sorted(data.files)[:3]
    ['consents', 'customers', 'duplicates']
    >>> data.counts["truth"]
    200
    """
    _check_arguments(customers, seed, fmt, end, years, dirt_rates)
    rates = (dirt_rates or DirtRates()) if dirty else DirtRates.none()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    clock = Clock.of(end, float(years))
    base = np.random.default_rng([seed, 0])
    catalog = build_catalog(base)
    setup = _Setup(
        seed=seed,
        fmt=fmt,
        clock=clock,
        catalog=catalog,
        salts=base.integers(0, 2**40, 3),
        id_width=max(8, len(str(2 * customers))),
        rates=rates,
    )
    paths = _paths(out, fmt)
    sinks = _open_sinks(paths, fmt)
    tally = _files.Tally()
    try:
        quiet = np.random.default_rng([seed, 3])
        sinks["products"].write(catalog.table().cast(_files.PRODUCTS.parquet_schema()), quiet, 0.0)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="segmint-synth") as writer:
            pending: Future[None] | None = None
            next_order, next_duplicate = 1, customers
            chunks = range(0, customers, CHUNK_CUSTOMERS)
            for index, first in enumerate(chunks):
                n = min(CHUNK_CUSTOMERS, customers - first)
                chunk = _draw_chunk(setup, index, first, n, next_order, next_duplicate, tally)
                next_order += chunk.orders
                next_duplicate += chunk.duplicates
                if pending is not None:
                    pending.result()
                pending = writer.submit(chunk.write, sinks)
                logger.debug("synthetic chunk %d/%d drawn", index + 1, len(chunks))
            if pending is not None:
                pending.result()
    finally:
        for sink in sinks.values():
            sink.close()

    for name, sink in sinks.items():
        if sink.malformed:
            tally.add("malformed_lines", name, sink.malformed)
    counts = {name: sink.rows for name, sink in sinks.items()}
    arguments: dict[str, object] = {
        "customers": customers,
        "seed": seed,
        "fmt": fmt,
        "end": end.isoformat(),
        "years": float(years),
        "dirty": bool(dirty),
        "dirt_rates": (dirt_rates or DirtRates()).as_dict(),
    }
    manifest = _manifest(arguments, clock, paths, counts, rates, tally)
    paths["manifest"].write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    logger.info("wrote synthetic data for %d customers to %s: %s", customers, out, counts)
    return GeneratedData(out_dir=out, files=paths, counts=counts, dirt=tally.totals())


@dataclass(frozen=True)
class _Setup:
    seed: int
    fmt: str
    clock: Clock
    catalog: Catalog
    salts: np.ndarray
    id_width: int
    rates: DirtRates


@dataclass
class _Chunk:
    """One chunk's tables, ready to append."""

    tables: dict[str, pa.Table]
    breaker: np.random.Generator
    malformed_rate: float
    orders: int
    duplicates: int

    def write(self, sinks: dict[str, Sink]) -> None:
        for name, table in self.tables.items():
            rate = self.malformed_rate if name in _files.BREAKABLE else 0.0
            sinks[name].write(table, self.breaker, rate)


def _paths(out: Path, fmt: str) -> dict[str, Path]:
    ext = {"events": "jsonl"} if fmt == "csv" else {}
    paths = {spec.stem: out / f"{spec.stem}.{ext.get(spec.stem, fmt)}" for spec in _SOURCE_FILES}
    paths["truth"] = out / "truth.csv"
    paths["duplicates"] = out / "duplicates.csv"
    paths["manifest"] = out / "manifest.json"
    return paths


def _open_sinks(paths: dict[str, Path], fmt: str) -> dict[str, Sink]:
    sinks: dict[str, Sink] = {}
    opener: Callable[[Path, _files.FileSpec], Sink] = ParquetSink if fmt == "parquet" else CsvSink
    try:
        for spec in _SOURCE_FILES:
            if fmt == "csv" and spec is _files.EVENTS:
                sinks[spec.stem] = JsonLinesSink(paths[spec.stem])
            else:
                sinks[spec.stem] = opener(paths[spec.stem], spec)
        sinks["truth"] = CsvSink(paths["truth"], _files.TRUTH)
        sinks["duplicates"] = CsvSink(paths["duplicates"], _files.DUPLICATES)
    except BaseException:
        for sink in sinks.values():
            sink.close()
        raise
    return sinks


def _draw_chunk(
    setup: _Setup,
    index: int,
    first: int,
    n: int,
    next_order: int,
    next_duplicate: int,
    tally: _files.Tally,
) -> _Chunk:
    """Draw one chunk of customers and everything they did, dirt included."""
    seed, fmt, clock, catalog, rates = (
        setup.seed,
        setup.fmt,
        setup.clock,
        setup.catalog,
        setup.rates,
    )
    rng = np.random.default_rng([seed, 1, index])
    spoil = np.random.default_rng([seed, 2, index])

    people = draw_people(rng, first, n, clock, catalog, id_width=setup.id_width, salts=setup.salts)
    consents = draw_consents(rng, people, clock)
    orders = draw_orders(rng, people, catalog, next_order)
    drawn = draw_events(rng, people, orders, consents, catalog, clock)
    events = render_events(rng, drawn, people, orders, consents, catalog, clock)
    duplicates = draw_duplicates(
        spoil, people, rates.duplicate_customers, next_duplicate, clock, id_width=setup.id_width
    )
    tally.segments += np.bincount(people.segment, minlength=len(_segments.SEGMENTS))
    tally.add("duplicate_customers", "customers", len(duplicates))
    tables = {
        "customers": _files.customers_table(people, duplicates, rates, spoil, tally, fmt),
        "orders": _files.orders_table(people, orders, duplicates, rates, spoil, tally, fmt),
        "order_items": _files.order_items_table(orders, catalog.product_id, fmt),
        "events": _files.events_table(events, rates, spoil, tally, fmt),
        "consents": _files.consents_table(people, consents, fmt),
        "truth": pa.table(
            {
                "customer_id": people.customer_id,
                "segment": _text.pick(pa.array(_segments.SEGMENT_NAMES), people.segment),
            }
        ),
        "duplicates": pa.table(
            {
                "duplicate_customer_id": duplicates.customer_id,
                "original_customer_id": _text.pick(people.customer_id, duplicates.original),
            }
        ),
    }
    return _Chunk(
        tables=tables,
        breaker=np.random.default_rng([seed, 4, index]),
        malformed_rate=rates.malformed_lines if fmt == "csv" else 0.0,
        orders=len(orders),
        duplicates=len(duplicates),
    )


def _manifest(
    arguments: dict[str, object],
    clock: Clock,
    paths: dict[str, Path],
    counts: dict[str, int],
    rates: DirtRates,
    tally: _files.Tally,
) -> dict[str, object]:
    """The content of ``manifest.json``."""
    bounds = _text.iso_timestamps(np.array([clock.start_s, clock.end_s]) * 1000).to_pylist()
    return {
        "generator": "segmint.data.synthetic",
        "format_version": FORMAT_VERSION,
        "seed": arguments["seed"],
        "arguments": arguments,
        "history": {"start": bounds[0], "end": bounds[1]},
        "files": {name: path.name for name, path in paths.items()},
        "counts": counts,
        "dirt_rates": rates.as_dict(),
        "dirt": tally.totals(),
        "dirt_by_file": {kind: dict(sorted(v.items())) for kind, v in tally.dirt.items()},
        "segments": {
            profile.name: {
                "share": profile.share,
                "customers": int(tally.segments[i]),
                "description": profile.description,
            }
            for i, profile in enumerate(_segments.SEGMENTS)
        },
    }
