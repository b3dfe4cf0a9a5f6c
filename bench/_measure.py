"""Run a function in a child process and measure its wall time and peak memory (RSS)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Measurement:
    seconds: float
    peak_rss_mb: float
    output: Any


def run_child(args: list[str], env: dict[str, str] | None = None) -> Measurement:
    """Run ``python args...`` in a fresh process; its last stdout line must be JSON."""
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, *args],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    assert process.stdout is not None
    out = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    if status != 0:
        raise RuntimeError(f"child {args} failed with status {status}")
    last = [line for line in out.splitlines() if line.strip()][-1]
    return Measurement(seconds, usage.ru_maxrss / 1024, json.loads(last))
