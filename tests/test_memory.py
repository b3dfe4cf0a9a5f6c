"""Peak memory per stage (Linux: VmHWM and clear_refs)."""

from __future__ import annotations

import sys

import pytest

from segmint.memory import peak_rss_mb, reset_peak_rss

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/self")


def test_a_reset_starts_a_new_peak_that_an_allocation_raises() -> None:
    block = b"x" * (200 * 1024 * 1024)  # written, so resident
    high = peak_rss_mb()
    del block
    assert reset_peak_rss()
    after_reset = peak_rss_mb()
    assert high is not None and after_reset is not None
    assert after_reset < high - 150
    block = b"x" * (100 * 1024 * 1024)
    raised = peak_rss_mb()
    assert raised is not None and raised >= after_reset + 90
    del block
