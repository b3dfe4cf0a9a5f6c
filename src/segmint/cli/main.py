"""``segmint``: the command-line entry point.

User errors (:class:`~segmint.errors.UserInputError`) become one red line on stderr
and exit code 2, without a traceback; ``--verbose`` turns on logs.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

import typer
from rich.markup import escape
from typer._click.core import Context
from typer.core import TyperGroup

from segmint.cli import (
    demo_cmd,
    features_cmd,
    identity_cmd,
    ingest_cmd,
    keys_cmd,
    models_cmd,
    privacy_cmd,
    project_cmd,
    quality_cmd,
    realtime_cmd,
    run_cmd,
)
from segmint.cli.common import EXIT_USER_ERROR, err_console
from segmint.errors import UserInputError
from segmint.logs import configure_logging


class _SegmintGroup(TyperGroup):
    """Turns user errors raised anywhere below into a clean message and exit code 2."""

    def invoke(self, ctx: Context) -> Any:
        try:
            return super().invoke(ctx)
        except UserInputError as e:
            err_console.print(f"[bold red]error:[/] {escape(str(e))}", soft_wrap=True)
            raise SystemExit(EXIT_USER_ERROR) from e


app = typer.Typer(
    name="segmint",
    cls=_SegmintGroup,
    help="Data-driven customer segmentation: ingest, segment, explain, activate.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show logs on stderr.")] = False,
) -> None:
    configure_logging(logging.INFO if verbose else logging.WARNING)


for module in (
    project_cmd,
    ingest_cmd,
    quality_cmd,
    features_cmd,
    run_cmd,
    models_cmd,
    identity_cmd,
    privacy_cmd,
    keys_cmd,
    realtime_cmd,
    demo_cmd,
):
    module.register(app)


def run() -> None:
    """Console-script entry point."""
    app()
