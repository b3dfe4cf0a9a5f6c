"""Pipeline benchmark: `segmint` ingest + run against the plain pandas/scikit-learn reference.

Generates Parquet data with the project's generator (default 1M customers: ~10M orders,
~57M events), then runs segmint (ingest, features, CLV, choice of k, fit, bootstrap
stability, explain, in-engine scoring, publish) and ``bench/reference/pipeline_pandas.py``
each in a child process of this invocation; prints time per stage, peak memory and ratio.

    python bench/pipeline.py --customers 1000000
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._measure import run_child  # noqa: E402

PROJECT = """
warehouse: ./segmint.duckdb
sources:
  - {{name: crm, kind: customers, path: "{data}/customers.parquet"}}
  - {{name: orders, kind: orders, path: "{data}/orders.parquet"}}
  - {{name: web_events, kind: events, path: "{data}/events.parquet"}}
segmentation: {{seed: 0}}
"""


def _segmint(work: Path) -> None:
    from segmint.project import Project

    with Project(work / "segmint.yaml") as project:
        started = time.perf_counter()
        project.ingest()
        ingest = time.perf_counter() - started
        result = project.run()
    print(json.dumps({"ingest": ingest, **result.timings, "k": result.k}))


def _reference(data: Path) -> None:
    from bench.reference.pipeline_pandas import run

    print(json.dumps(run(data)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("bench/out/pipeline"))
    parser.add_argument("--skip-reference", action="store_true")
    parser.add_argument("--role", choices=["segmint", "reference"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    data = (args.out / f"c{args.customers}-s{args.seed}").resolve()
    work = args.out / "work"
    if args.role == "segmint":
        _segmint(work)
        return
    if args.role == "reference":
        _reference(data)
        return
    if not (data / "events.parquet").exists():
        from segmint.data.synthetic import generate

        print(f"generating {args.customers:,} customers (Parquet) into {data} ...", flush=True)
        generate(data, customers=args.customers, seed=args.seed, fmt="parquet")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    (work / "segmint.yaml").write_text(PROJECT.format(data=data))
    base = [
        __file__,
        "--customers",
        str(args.customers),
        "--seed",
        str(args.seed),
        "--out",
        str(args.out),
    ]
    roles = ["segmint"] + ([] if args.skip_reference else ["reference"])
    results = {}
    for role in roles:
        results[role] = run_child([*base, "--role", role])
        m = results[role]
        stages = ", ".join(f"{k} {v:.1f}s" for k, v in m.output.items() if k != "k")
        print(
            f"{role:>9}: {m.seconds:7.1f} s total, peak RSS {m.peak_rss_mb:7,.0f} MB, "
            f"k={m.output.get('k')} | {stages}",
            flush=True,
        )
    if "reference" in results:
        ratio = results["reference"].seconds / results["segmint"].seconds
        print(
            f"ratio: segmint is {ratio:.2f}x faster than the reference (target >= 3x); "
            f"targets: <= 120 s and <= 8 GB for 1M customers"
        )


if __name__ == "__main__":
    main()
