"""Group commit: one writer thread, one durable write per group of requests.

DuckDB allows one writer, and a durable write costs a sync. Requests (ingest
batches, admin writes) are queued; the writer takes everything waiting, lingers
``linger`` seconds for stragglers when the group is small, hands the group to
``handle`` (which makes it durable once: an intake-log sync or a commit) and
completes each request's future. While one group is synced the next one queues
up, so under load groups grow and the sync is paid once per group, not once per
event. Between groups the writer runs ``tick`` (timers, expiry, flushes,
re-scoring).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

__all__ = ["GroupCommitter", "Job"]

logger = logging.getLogger(__name__)


@dataclass
class Job:
    """One queued request: what to do and where its answer goes."""

    kind: str
    payload: Any
    future: Future[Any] = field(default_factory=Future)
    size: int = 1


class GroupCommitter:
    """The single writer thread (see the module docstring).

    Parameters
    ----------
    handle
        Processes a group of jobs in one transaction and sets every job's future
        (result or exception).
    tick
        Called between groups at least every ``tick_interval`` seconds (timers,
        expiry, re-scoring), in the writer thread.
    linger
        Seconds to wait for more jobs when a group is smaller than ``group_size``.
    """

    def __init__(
        self,
        handle: Callable[[Sequence[Job]], None],
        *,
        tick: Callable[[], None] | None = None,
        tick_interval: float = 0.1,
        linger: float = 0.002,
        group_size: int = 2_000,
    ) -> None:
        self._handle = handle
        self._tick = tick
        self._tick_interval = tick_interval
        self._linger = linger
        self._group_size = group_size
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    def start(self) -> None:
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="segmint-writer", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the queued jobs, then stop the thread."""
        self._stopping.set()
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def backlog(self) -> int:
        return self._queue.qsize()

    def submit(self, kind: str, payload: Any, *, size: int = 1) -> Future[Any]:
        if self._stopping.is_set():
            raise RuntimeError("the writer is stopping")
        job = Job(kind, payload, size=size)
        self._queue.put(job)
        return job.future

    def _collect(self, first: Job) -> tuple[list[Job], bool]:
        group, size, stop = [first], first.size, False
        deadline = time.monotonic() + self._linger
        while size < self._group_size:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    job = self._queue.get(timeout=remaining)
                except queue.Empty:
                    break
            if job is None:
                stop = True
                break
            group.append(job)
            size += job.size
        return group, stop

    def _run_tick(self) -> None:
        if self._tick is None:
            return
        try:
            self._tick()
        except Exception:  # a failing background task must not kill the writer
            logger.exception("background tick failed")

    def _run(self) -> None:
        last_tick = time.monotonic()
        while True:
            try:
                first = self._queue.get(timeout=self._tick_interval)
            except queue.Empty:
                first = None
                if self._stopping.is_set():
                    break
            stop = False
            if first is not None:
                group, stop = self._collect(first)
                try:
                    self._handle(group)
                except Exception as e:  # the handler failed as a whole: fail every job
                    logger.exception("writer group failed")
                    for job in group:
                        if not job.future.done():
                            job.future.set_exception(e)
            elif self._stopping.is_set():
                break
            if time.monotonic() - last_tick >= self._tick_interval:
                self._run_tick()
                last_tick = time.monotonic()
            if stop:
                break
