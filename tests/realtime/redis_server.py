"""A real ``redis-server`` for tests: started on a free loopback port, stopped afterwards.

Use the fixture factory in a test module (or a conftest)::

    from tests.realtime.redis_server import redis_server_fixture

    redis_server = redis_server_fixture(scope="module")

    def test_something(redis_server):
        client = redis_server.client()

The server runs without persistence (``--save '' --appendonly no``) in a temporary
directory. :meth:`RedisServer.stop` and :meth:`RedisServer.start` simulate an
outage: the server comes back on the same port, empty. Without the ``redis-server``
binary (Debian package ``redis-server``) the tests are skipped, except under
``CI=true``, where they fail.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

__all__ = ["RedisServer", "redis_server_fixture", "require_redis_server"]

START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def require_redis_server() -> str:
    """The path of ``redis-server``; skip the test (fail under CI) when it is missing."""
    binary = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    )
    missing = []
    if binary is None:
        missing.append("the redis-server binary (Debian package redis-server)")
    try:
        import redis  # noqa: F401
    except ImportError:
        missing.append("the Python package redis")
    if missing:
        reason = "stream tests need " + " and ".join(missing)
        if _in_ci():
            pytest.fail(reason + " (CI=true: not skipping)")
        pytest.skip(reason)
    assert binary is not None
    return binary


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """One ``redis-server`` process on ``127.0.0.1:port`` with its files in ``directory``."""

    def __init__(self, binary: str, directory: Path, port: int | None = None) -> None:
        self.binary = binary
        self.directory = directory
        self.port = port or _free_port()
        self.host = "127.0.0.1"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _log(self) -> str:
        path = self.directory / "redis.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def start(self) -> None:
        """Start the server (again, on the same port) and wait until it answers PING."""
        if self.running:
            return
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                self.host,
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
                "--logfile",
                "redis.log",
                "--daemonize",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        client = self.client()
        try:
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(
                        f"redis-server exited with {self.process.returncode}:\n{self._log()}"
                    )
                try:
                    # The pid check rules out another server that holds the port.
                    if client.ping() and client.info("server")["process_id"] == self.process.pid:
                        return
                except Exception:
                    if time.monotonic() > deadline:
                        self.stop()
                        raise RuntimeError(
                            f"redis-server did not answer within {START_TIMEOUT_S} s:\n"
                            f"{self._log()}"
                        ) from None
                    time.sleep(0.01)
        finally:
            client.close()

    def stop(self) -> None:
        """Stop the server (its data is gone: nothing is persisted)."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT_S)

    def client(self, **options: Any) -> Any:
        """A ``redis.Redis`` client for this server that fails fast when it is down.

        The client's own retries are off and its timeouts short, so that outages
        reach the code under test at once instead of after redis-py's backoff.
        """
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        settings: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "socket_timeout": 5.0,
            "socket_connect_timeout": 2.0,
            "retry": Retry(NoBackoff(), 0),
        }
        settings.update(options)
        return redis.Redis(**settings)


def redis_server_fixture(scope: str = "function") -> Any:
    """Make a pytest fixture yielding a started :class:`RedisServer`.

    Parameters
    ----------
    scope
        The pytest scope of the fixture (``"function"``, ``"module"``, ...).
    """

    @pytest.fixture(scope=scope)
    def _redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
        binary = require_redis_server()
        directory = tmp_path_factory.mktemp("redis")
        server: RedisServer | None = None
        for _attempt in range(3):
            # Another process may take the free port before redis binds it.
            server = RedisServer(binary, directory)
            try:
                server.start()
                break
            except RuntimeError:
                server.stop()
                server = None
        if server is None:
            pytest.fail(f"redis-server did not start; see {directory / 'redis.log'}")
        try:
            yield server
        finally:
            server.stop()

    return _redis_server
