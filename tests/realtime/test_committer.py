"""Group commit: which jobs share a group, and what a failing group does."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import pytest

from segmint.realtime.committer import GroupCommitter, Job


def started(committer: GroupCommitter) -> GroupCommitter:
    committer.start()
    return committer


class Recorder:
    """A ``handle`` that records each group's job payloads and answers every job."""

    def __init__(self) -> None:
        self.groups: list[list[object]] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        self.release.set()

    def __call__(self, jobs: Sequence[Job]) -> None:
        self.entered.set()
        self.release.wait(10)
        self.groups.append([job.payload for job in jobs])
        for job in jobs:
            job.future.set_result(job.payload)


def test_requests_waiting_while_a_group_commits_share_the_next_group() -> None:
    handle = Recorder()
    committer = GroupCommitter(handle, linger=0.0)
    handle.release.clear()
    committer.start()
    try:
        first = committer.submit("ingest", "a")
        assert handle.entered.wait(5)  # the writer committing "a" is held up
        rest = [committer.submit("ingest", name) for name in "bcd"]
        handle.release.set()
        assert [f.result(5) for f in (first, *rest)] == ["a", "b", "c", "d"]
    finally:
        committer.stop()
    assert handle.groups[-1] == ["b", "c", "d"]


def test_a_small_request_lingers_for_the_next_one() -> None:
    handle = Recorder()
    committer = started(GroupCommitter(handle, linger=30.0, group_size=2))
    try:
        first = committer.submit("ingest", "a")
        second = committer.submit("ingest", "b")  # arrives within the linger: same group
        assert [first.result(5), second.result(5)] == ["a", "b"]
    finally:
        committer.stop()
    assert handle.groups == [["a", "b"]]


def test_a_failing_group_fails_every_request_of_it() -> None:
    def handle(jobs: Sequence[Job]) -> None:
        raise RuntimeError("disk full")

    committer = started(GroupCommitter(handle, linger=30.0, group_size=2))
    try:
        futures = [committer.submit("ingest", name) for name in "ab"]
        for future in futures:
            with pytest.raises(RuntimeError, match="disk full"):
                future.result(5)
    finally:
        committer.stop()


def test_the_tick_runs_while_no_request_comes() -> None:
    ticked = threading.Event()
    committer = started(GroupCommitter(Recorder(), tick=ticked.set, tick_interval=0.01))
    try:
        assert ticked.wait(5)
    finally:
        committer.stop()
