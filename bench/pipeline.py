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

from bench._measure import Measurement, run_child  # noqa: E402

PROJECT = """
warehouse: ./segmint.duckdb
sources:
  - {{name: crm, kind: customers, path: "{data}/customers.parquet"}}
  - {{name: orders, kind: orders, path: "{data}/orders.parquet"}}
  - {{name: web_events, kind: events, path: "{data}/events.parquet"}}
segmentation: {{seed: 0}}
"""


def _segmint(work: Path) -> None:
    from segmint.memory import peak_rss_mb, reset_peak_rss
    from segmint.project import Project

    with Project(work / "segmint.yaml") as project:
        reset_peak_rss()
        started = time.perf_counter()
        project.ingest()
        stages = {"ingest": {"seconds": time.perf_counter() - started, "peak_mb": peak_rss_mb()}}
        started = time.perf_counter()
        result = project.run()
        run_seconds = time.perf_counter() - started
    for name, seconds in result.timings.items():
        stages[name] = {"seconds": seconds, "peak_mb": result.peak_memory_mb.get(name)}
    print(json.dumps({"stages": stages, "run_seconds": run_seconds, "k": result.k}))


def _reference(data: Path) -> None:
    from bench.reference.pipeline_pandas import run

    print(json.dumps(run(data)))


def _peak_mb(m: Measurement) -> float:
    """The child's peak RSS: the stages reset the kernel's peak, so take the largest stage's."""
    stages = [s["peak_mb"] for s in m.output["stages"].values() if s["peak_mb"] is not None]
    return max([m.peak_rss_mb, *stages])


def _print_stages(role: str, m: Measurement) -> None:
    print(f"{role}: {m.seconds:.1f} s wall, peak RSS {_peak_mb(m):,.0f} MB, k={m.output['k']}")
    for name, stage in m.output["stages"].items():
        peak = stage["peak_mb"]
        peak_text = f"{peak:8,.0f} MB" if peak is not None else "       n/a"
        print(f"    {name:<12} {stage['seconds']:8.1f} s  peak {peak_text}", flush=True)


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
    results: dict[str, Measurement] = {}
    for role in roles:
        results[role] = run_child([*base, "--role", role])
        _print_stages(role, results[role])
    mine = results["segmint"]
    ingest = mine.output["stages"]["ingest"]["seconds"]
    run_seconds = mine.output["run_seconds"]
    print(
        f"segmint: ingest {ingest:.1f} s + run {run_seconds:.1f} s; "
        f"targets for 1M customers: run <= 120 s, peak <= 8,192 MB"
    )
    if "reference" in results:
        ref = results["reference"]
        ref_ingest = ref.output["stages"]["ingest"]["seconds"]
        ref_rest = sum(v["seconds"] for k, v in ref.output["stages"].items() if k != "ingest")
        whole, ref_whole = ingest + run_seconds, ref_ingest + ref_rest
        print(
            f"ratio, from files to segments: segmint {whole:.1f} s vs reference "
            f"{ref_whole:.1f} s = {ref_whole / whole:.2f}x"
        )
        print(
            f"ratio, from loaded data to segments (segmint run vs the reference after its "
            f"reading): {run_seconds:.1f} s vs {ref_rest:.1f} s = {ref_rest / run_seconds:.2f}x "
            f"(target >= 3x)"
        )


if __name__ == "__main__":
    main()
