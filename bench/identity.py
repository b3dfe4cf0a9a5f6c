"""Accuracy and speed of probabilistic deduplication on the Febrl data sets.

For each of ``dataset1.csv`` .. ``dataset3.csv`` the records are deduplicated with
:class:`segmint.data.identity.ProbabilisticMatcher` and ``MatchConfig.for_febrl()``
(the same configuration for all three). The truth: records ``rec-N-org`` and
``rec-N-dup-K`` describe the same person, so the true pairs are all pairs of
records sharing ``N``.

By default the predicted pairs are the pairs *implied by the clusters* (every two
records in the same cluster), the honest measure for deduplication because a
merge joins whole clusters; ``--evaluate pairs`` scores the thresholded pairs
instead. ``seconds`` is the wall time of fit + predict (reading the CSV excluded).

Usage::

    .venv/bin/python bench/identity.py [--data DIR] [--evaluate clusters|pairs]

Output, one line per data set::

    dataset=dataset1 records=1000 precision=1.000 recall=1.000 F1=1.000 seconds=2.1
"""

from __future__ import annotations

import argparse
import itertools
import logging
import time
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from segmint.data.identity import MatchConfig, ProbabilisticMatcher

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared/data/febrl"
DATASETS = ("dataset1", "dataset2", "dataset3")

Pair = tuple[str, str]


def read_febrl(path: Path) -> pd.DataFrame:
    """Read a Febrl CSV as text, with the blanks after each comma removed."""
    frame = pd.read_csv(path, dtype=str, skipinitialspace=True, keep_default_na=False)
    frame.columns = [c.strip() for c in frame.columns]
    return frame.apply(lambda column: column.str.strip()).replace("", None)


def _pairs_within(groups: Iterable[Iterable[str]]) -> set[Pair]:
    pairs: set[Pair] = set()
    for members in groups:
        pairs.update(itertools.combinations(sorted(members), 2))
    return pairs


def true_pairs(rec_ids: Iterable[str]) -> set[Pair]:
    """All pairs of records that share the ``N`` of ``rec-N-...``."""
    groups: dict[str, list[str]] = {}
    for rec_id in rec_ids:
        groups.setdefault(rec_id.split("-")[1], []).append(rec_id)
    return _pairs_within(groups.values())


def cluster_pairs(clusters: pd.DataFrame) -> set[Pair]:
    """All pairs of records that share a cluster."""
    return _pairs_within(clusters.groupby("cluster_id")["id"].apply(list))


def scores(predicted: set[Pair], truth: set[Pair]) -> tuple[float, float, float]:
    """Pairwise precision, recall and F1."""
    hits = len(predicted & truth)
    precision = hits / len(predicted) if predicted else 1.0
    recall = hits / len(truth) if truth else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def run(path: Path, evaluate: str) -> str:
    frame = read_febrl(path)
    start = time.perf_counter()
    with ProbabilisticMatcher(config=MatchConfig.for_febrl()) as matcher:
        result = matcher.fit(frame).predict()
    seconds = time.perf_counter() - start
    if evaluate == "clusters":
        predicted = cluster_pairs(result.clusters())
    else:
        predicted = {
            tuple(sorted(p)) for p in zip(result.matches.id_l, result.matches.id_r, strict=True)
        }
    precision, recall, f1 = scores(predicted, true_pairs(frame["rec_id"]))
    return (
        f"dataset={path.stem} records={len(frame)} precision={precision:.3f} "
        f"recall={recall:.3f} F1={f1:.3f} seconds={seconds:.1f}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="Febrl folder")
    parser.add_argument(
        "--evaluate",
        choices=("clusters", "pairs"),
        default="clusters",
        help="score the cluster-implied pairs (default) or the thresholded pairs",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    for name in DATASETS:
        path = args.data / f"{name}.csv"
        if not path.exists():
            parser.error(f"{path} does not exist")
        print(run(path, args.evaluate), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
