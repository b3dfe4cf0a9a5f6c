"""``segmint serve``, ``segmint events reprocess|recover``, ``segmint consume redis|kafka``."""

from __future__ import annotations

import gc
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated

import typer

from segmint.cli.common import ProjectOption, console, err_console

events_app = typer.Typer(
    help="Real-time events: dead letters, recovery after a crash.", no_args_is_help=True
)
consume_app = typer.Typer(help="Read events from a stream.", no_args_is_help=True)
#: Seconds a thread holds the GIL before it must offer it (Python's default is 5 ms). The
#: event loop and the writer hand it back and forth, and every hand-over can wait this long.
SWITCH_INTERVAL = 0.001


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
    app.add_typer(events_app, name="events")
    app.add_typer(consume_app, name="consume")


def serve(
    project: ProjectOption = Path("."),
    host: Annotated[str, typer.Option(help="Interface to listen on (loopback by default).")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(help="Port.", min=1, max=65535)] = 8000,
) -> None:
    """Run the real-time service: Segment-compatible intake, read API, /metrics."""
    import uvicorn

    from segmint.api import create_app
    from segmint.realtime.service import RealtimeService

    service = RealtimeService.open(project)
    # The state loaded at start-up lives as long as the process: keep it out of the
    # collector's generations, and collect less often (full collections pause both the
    # event loop and the writer).
    gc.freeze()
    gc.set_threshold(50_000, 50, 1_000)
    sys.setswitchinterval(SWITCH_INTERVAL)
    err_console.print(f"segmint serving {service.wh.path} on http://{host}:{port}")
    uvicorn.run(create_app(service), host=host, port=port, log_level="warning", access_log=False)


@events_app.command("reprocess")
def reprocess(
    project: ProjectOption = Path("."),
    limit: Annotated[int, typer.Option(help="At most this many dead letters.", min=1)] = 10_000,
) -> None:
    """Retry the events in failed_events (run with the server stopped)."""
    from segmint.realtime.service import RealtimeService

    with RealtimeService.open(project) as service:
        result = service.reprocess_failed(limit=limit)
    console.print(
        f"retried {result.retried}: accepted {result.accepted}, duplicate {result.duplicate}, "
        f"still failing {result.still_failing}"
    )


@events_app.command("recover")
def recover(project: ProjectOption = Path(".")) -> None:
    """Write the events a crashed server acknowledged but had not yet written to the
    warehouse (they are in its intake log; ``segmint serve`` does this on start too).
    Run with the server stopped."""
    from segmint.realtime.service import RealtimeService

    service = RealtimeService.open(project)
    replayed = service.processor.replayed_events
    service.close()
    console.print(f"recovered {replayed} acknowledged events from the intake log")


def _run_until_signal(consumer: object) -> None:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    consumer.run(stop)  # type: ignore[attr-defined]


@consume_app.command("redis")
def consume_redis(
    stream: Annotated[str, typer.Option(help="Stream to read.")],
    group: Annotated[str, typer.Option(help="Consumer group.")],
    project: ProjectOption = Path("."),
    url: Annotated[str, typer.Option(help="Redis URL.")] = "redis://127.0.0.1:6379/0",
    field: Annotated[str, typer.Option(help="Entry field holding the message JSON.")] = "data",
) -> None:
    """Consume Segment messages from a Redis stream (commit, then XACK) until stopped."""
    import redis

    from segmint.realtime.consumers import RedisStreamConsumer
    from segmint.realtime.service import RealtimeService

    client = redis.Redis.from_url(url)
    with RealtimeService.open(project) as service:
        consumer = RedisStreamConsumer(client, stream, group, service, field=field)
        err_console.print(f"consuming {stream} as group {group}; Ctrl-C stops")
        _run_until_signal(consumer)


@consume_app.command("kafka")
def consume_kafka(
    topic: Annotated[list[str], typer.Option(help="Topic to read (repeatable).")],
    group: Annotated[str, typer.Option(help="Consumer group.")],
    project: ProjectOption = Path("."),
    bootstrap: Annotated[str, typer.Option(help="Kafka bootstrap servers.")] = "127.0.0.1:9092",
) -> None:
    """Consume Segment messages from Kafka (commit, then commit offsets) until stopped."""
    from segmint.realtime.consumers import KafkaConsumer, make_kafka_consumer
    from segmint.realtime.service import RealtimeService

    with RealtimeService.open(project) as service:
        consumer = KafkaConsumer(make_kafka_consumer(bootstrap, group), topic, service)
        err_console.print(f"consuming {', '.join(topic)} as group {group}; Ctrl-C stops")
        _run_until_signal(consumer)
