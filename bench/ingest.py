"""Ingest benchmark: segmint vs a plain pandas read-validate-write reference.

Generates synthetic orders (CSV) and events (JSON Lines) with the project's generator
(default 1M customers: ~10M orders, ~50M events), then loads them with ``segmint ingest``
and with ``bench/reference/ingest_pandas.py``, each in its own child process of this
invocation, and prints rows/s, CPU seconds, peak memory and the speed ratio.

With ``--repeat N`` the two alternate N times and the ratio of the median times is
printed too: on a shared machine a single pair of runs can be skewed by whatever else
happens to run at the same moment.

    python bench/ingest.py --customers 1000000 --data bench/out/ingest
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._measure import Measurement, run_child  # noqa: E402

PROJECT = """
warehouse: ./segmint.duckdb
sources:
  - name: orders
    kind: orders
    path: {orders}
  - name: web_events
    kind: events
    path: {events}
"""


def _cpu_seconds() -> float:
    """CPU time of this process so far, all threads (user + system)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _segmint(work: Path) -> None:
    from segmint.project import Project

    with Project(work / "segmint.yaml") as project:
        results = project.ingest()
    out = {r.source: r.to_dict() for r in results}
    print(json.dumps({"cpu_seconds": _cpu_seconds(), "result": out}))


def _pandas(data: Path, work: Path) -> None:
    from bench.reference.ingest_pandas import ingest_events, ingest_orders

    out = {
        "orders": ingest_orders(data / "orders.csv", work),
        "web_events": ingest_events(data / "events.jsonl", work),
    }
    print(json.dumps({"cpu_seconds": _cpu_seconds(), "result": out}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--data", type=Path, default=Path("bench/out/ingest"))
    parser.add_argument(
        "--repeat", type=int, default=1, help="alternate the two runs this many times"
    )
    parser.add_argument("--role", choices=["segmint", "pandas"], help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    data = args.data / f"c{args.customers}-s{args.seed}"
    if args.role == "segmint":
        _segmint(args.work)
        return
    if args.role == "pandas":
        _pandas(data, args.work)
        return

    if not (data / "orders.csv").exists():
        from segmint.data.synthetic import generate

        print(f"generating {args.customers:,} customers into {data} ...", flush=True)
        generate(data, customers=args.customers, seed=args.seed, fmt="csv")
    rows = {
        "orders": sum(1 for _ in (data / "orders.csv").open()) - 1,
        "web_events": sum(1 for _ in (data / "events.jsonl").open()),
    }
    total = sum(rows.values())
    print(f"input: {rows['orders']:,} order lines, {rows['web_events']:,} event lines")

    measured: dict[str, list[Measurement]] = {"segmint": [], "pandas": []}
    for _ in range(max(1, args.repeat)):
        for role in ("segmint", "pandas"):
            m = _run(role, args, data)
            measured[role].append(m)
            print(
                f"{role:>8}: {m.seconds:8.1f} s  {total / m.seconds:12,.0f} rows/s  "
                f"cpu {m.output['cpu_seconds']:7.1f} s  peak RSS {m.peak_rss_mb:8,.0f} MB  "
                f"{json.dumps(m.output['result'])}",
                flush=True,
            )
        pair = {role: runs[-1] for role, runs in measured.items()}
        ratio = pair["pandas"].seconds / pair["segmint"].seconds
        print(
            f"ratio: segmint is {ratio:.2f}x the pandas reference's throughput "
            f"(target >= 3x); peak memory {pair['segmint'].peak_rss_mb:,.0f} MB vs "
            f"{pair['pandas'].peak_rss_mb:,.0f} MB",
            flush=True,
        )
    if args.repeat > 1:
        seconds = {
            role: statistics.median(m.seconds for m in runs) for role, runs in measured.items()
        }
        print(
            f"median of {args.repeat} runs each: segmint {seconds['segmint']:.1f} s, pandas "
            f"{seconds['pandas']:.1f} s; ratio {seconds['pandas'] / seconds['segmint']:.2f}x"
        )


def _run(role: str, args: argparse.Namespace, data: Path) -> Measurement:
    work = args.data / f"work-{role}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    (work / "segmint.yaml").write_text(
        PROJECT.format(
            orders=(data / "orders.csv").resolve(), events=(data / "events.jsonl").resolve()
        )
    )
    return run_child(
        [
            __file__,
            "--role",
            role,
            "--work",
            str(work),
            "--data",
            str(args.data),
            "--customers",
            str(args.customers),
            "--seed",
            str(args.seed),
        ]
    )


if __name__ == "__main__":
    main()
