"""``segmint privacy``: PII report, erasure, consent, retention, suppression."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from segmint.cli.common import EXIT_FAILURE, ProjectOption, console, err_console, open_project
from segmint.config import PROJECT_FILE, PrivacyConfig, load_project
from segmint.data import privacy
from segmint.data.privacy.consent import purposes_of
from segmint.errors import UserInputError
from segmint.project import Project

privacy_app = typer.Typer(
    help="Privacy: PII report, erasure with suppression, consent, retention.",
    no_args_is_help=True,
)

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def register(app: typer.Typer) -> None:
    app.add_typer(privacy_app, name="privacy")


@contextlib.contextmanager
def project_key(config: PrivacyConfig, base_dir: Path) -> Iterator[None]:
    """Make the project file's ``privacy.key_file`` the key while the command runs.

    ``SEGMINT_PSEUDONYMIZATION_KEY`` or ``SEGMINT_PSEUDONYMIZATION_KEY_FILE`` in the
    environment take precedence; the key file is then not consulted.
    """
    path = config.key_path(base_dir)
    if path is None or privacy.KEY_ENV in os.environ or privacy.KEY_FILE_ENV in os.environ:
        yield
        return
    if not path.is_file():
        raise UserInputError(f"no key file at {path}", where="privacy.key_file")
    os.environ[privacy.KEY_FILE_ENV] = str(path)
    try:
        yield
    finally:
        os.environ.pop(privacy.KEY_FILE_ENV, None)


@contextlib.contextmanager
def _open_with_key(project: Path) -> Iterator[Project]:
    """Open the project with its pseudonymisation key (if it names a key file) in effect."""
    with open_project(project) as proj, project_key(proj.config.privacy, proj.base_dir):
        yield proj


@privacy_app.command("report")
def report(project: ProjectOption = Path("."), as_json: JsonOption = False) -> None:
    """Which personal data is stored where: rows, non-null and distinct values per column."""
    with open_project(project) as proj:
        stats = privacy.pii_report(proj.warehouse)
    if as_json:
        typer.echo(json.dumps([s.to_dict() for s in stats], indent=2))
        return
    view = Table("table", "column", "kind", "basis", "rows", "non-null", "distinct", title="PII")
    for s in stats:
        view.add_row(
            s.table,
            s.column,
            s.kind,
            s.basis,
            f"{s.rows:,}",
            f"{s.non_null:,}",
            f"{s.distinct:,}",
        )
    console.print(view)


@privacy_app.command("erase")
def erase(
    person: Annotated[
        str | None, typer.Option("--person", help="Person id (identity graph).")
    ] = None,
    email: Annotated[str | None, typer.Option("--email", help="E-mail address.")] = None,
    customer_id: Annotated[str | None, typer.Option("--customer-id", help="Customer id.")] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    actor: Annotated[str, typer.Option(help="Who asks (recorded in the audit log).")] = "cli",
    project: ProjectOption = Path("."),
    as_json: JsonOption = False,
) -> None:
    """Erase a person from every table and the file's bytes; block their future data.

    Other processes must not have the warehouse open: the file is rewritten.
    """
    given = [v for v in (person, email, customer_id) if v is not None]
    if len(given) != 1:
        raise UserInputError("give exactly one of --person, --email, --customer-id")
    if not yes:
        typer.confirm(
            "Erase every row of this person permanently and suppress their identifiers?",
            abort=True,
        )
    with _open_with_key(project) as proj:
        with console.status("erasing..."):
            result = privacy.erase(
                proj.warehouse, person=person, email=email, customer_id=customer_id, actor=actor
            )
    _print_erasures([result], as_json)
    if result.residual:
        raise typer.Exit(EXIT_FAILURE)


@privacy_app.command("resume")
def resume(project: ProjectOption = Path("."), as_json: JsonOption = False) -> None:
    """Complete erasure requests interrupted by a crash."""
    with _open_with_key(project) as proj:
        results = privacy.resume_erasures(proj.warehouse)
    if not results and not as_json:
        console.print("no unfinished erasure request")
        return
    _print_erasures(results, as_json)
    if any(r.residual for r in results):
        raise typer.Exit(EXIT_FAILURE)


def _print_erasures(results: list[privacy.ErasureReport], as_json: bool) -> None:
    if as_json:
        payload = [r.to_dict() for r in results]
        typer.echo(json.dumps(payload[0] if len(payload) == 1 else payload, indent=2))
    else:
        for r in results:
            view = Table("table", "rows deleted", title=f"erasure {r.request_id} ({r.state})")
            for table, count in sorted(r.rows_deleted.items()):
                view.add_row(table, f"{count:,}")
            view.add_row("[bold]total[/]", f"[bold]{r.total_rows:,}[/]")
            console.print(view)
            found = ", ".join(f"{n} {kind}" for kind, n in r.identifiers.items()) or "none"
            console.print(f"identifiers found: {found}")
            console.print(
                f"suppression list: {r.suppressed_added:,} new hashes; "
                f"file compacted: {'yes' if r.compacted else 'no'}"
            )
    for r in results:
        if r.residual:
            err_console.print(
                "[bold yellow]warning:[/] identifiers remain in "
                + escape(", ".join(r.residual))
                + " (columns segmint does not recognise as identifiers; erase them by hand)"
            )


@privacy_app.command("consent")
def consent(
    person: Annotated[str, typer.Argument(help="Customer id.")],
    at: Annotated[
        datetime | None, typer.Option(help="State at this time (UTC); default: now.")
    ] = None,
    project: ProjectOption = Path("."),
    as_json: JsonOption = False,
) -> None:
    """A person's consent state per purpose (and what may be done) and full history.

    Purposes without a recorded choice follow the policy of privacy.consent in
    the project file (by default analytics is opt-out, the others opt-in).
    """
    with _open_with_key(project) as proj:
        wh = proj.warehouse
        settings = proj.config.privacy.consent
        policy = settings.policy()
        state = privacy.consent_state(wh, person, at)
        history = privacy.consent_history(wh, person)
        named = [*privacy.PURPOSES, *settings.opt_out_purposes(), *settings.opt_in_purposes()]
        purposes = purposes_of(wh, list(dict.fromkeys(named)))
        allowed = {p: privacy.may_use(wh, person, p, at, policy=policy) for p in purposes}
    if as_json:
        payload = {
            "person": person,
            "at": at.isoformat() if at else None,
            "state": {p: c.to_dict() for p, c in state.items()},
            "may_use": allowed,
            "history": [c.to_dict() for c in history],
        }
        typer.echo(json.dumps(payload, indent=2))
        return
    view = Table("purpose", "choice", "since", "source", "may use", title="consent state")
    for purpose in purposes:
        choice = state.get(purpose)
        view.add_row(
            purpose,
            "-" if choice is None else ("granted" if choice.granted else "withdrawn"),
            "" if choice is None else f"{choice.at:%Y-%m-%d %H:%M}",
            "" if choice is None else escape(choice.source or ""),
            "[green]yes[/]" if allowed[purpose] else "[red]no[/]",
        )
    console.print(view)
    log = Table("at", "purpose", "choice", "source", title="consent history")
    for c in history:
        log.add_row(
            f"{c.at:%Y-%m-%d %H:%M:%S}",
            c.purpose,
            "granted" if c.granted else "withdrawn",
            escape(c.source or ""),
        )
    console.print(log)


@privacy_app.command("sync-consents")
def sync_consents(project: ProjectOption = Path(".")) -> None:
    """Record consent changes carried by events (context.consent.categoryPreferences)."""
    with open_project(project) as proj:
        added = privacy.sync_event_consents(proj.warehouse)
    console.print(f"{added:,} consent changes recorded from events")


@privacy_app.command("retention")
def retention(
    events_days: Annotated[
        float | None,
        typer.Option(
            help="Keep events of the last N days (default: privacy.retention.events_days)."
        ),
    ] = None,
    quarantine_days: Annotated[
        float | None,
        typer.Option(
            help="Keep quarantined rows of the last N days "
            "(default: privacy.retention.quarantine_days)."
        ),
    ] = None,
    compact: Annotated[
        bool | None,
        typer.Option(
            "--compact/--no-compact",
            help="Rewrite the file so deleted rows leave its bytes "
            "(default: privacy.retention.compact, off).",
            show_default=False,
        ),
    ] = None,
    project: ProjectOption = Path("."),
    as_json: JsonOption = False,
) -> None:
    """Delete events and quarantined rows older than the retention periods.

    The periods come from privacy.retention in the project file; the options
    override it.
    """
    with open_project(project) as proj:
        settings = proj.config.privacy.retention
        if events_days is None:
            events_days = settings.events_days
        if quarantine_days is None:
            quarantine_days = settings.quarantine_days
        if events_days is None and quarantine_days is None:
            raise UserInputError(
                "give --events-days and/or --quarantine-days, or set them under "
                "privacy.retention in the project file"
            )
        result = privacy.apply_retention(
            proj.warehouse,
            events_days=events_days,
            quarantine_days=quarantine_days,
            compact=settings.compact if compact is None else compact,
        )
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
        return
    console.print(
        f"deleted {result.events_deleted:,} events and "
        f"{result.quarantine_deleted:,} quarantined rows"
        + (" (file compacted)" if result.compacted else "")
    )


@privacy_app.command("suppressed")
def suppressed(project: ProjectOption = Path("."), as_json: JsonOption = False) -> None:
    """How many identifiers are suppressed, per type (counts only, never values)."""
    with open_project(project) as proj:
        counts = privacy.suppression_counts(proj.warehouse)
    if as_json:
        typer.echo(json.dumps([dataclasses.asdict(c) for c in counts], indent=2))
        return
    view = Table("identifier type", "scheme", "hashes", title="suppression list")
    for c in counts:
        view.add_row(c.identifier_type, c.scheme, f"{c.hashes:,}")
    view.add_row("[bold]total[/]", "", f"[bold]{sum(c.hashes for c in counts):,}[/]")
    console.print(view)


@privacy_app.command("pseudonymise")
def pseudonymise(
    values: Annotated[list[str], typer.Argument(help="Identifiers to pseudonymise.")],
    project: Annotated[
        Path | None,
        typer.Option(
            "--project",
            "-p",
            help="Project file or its folder, for privacy.key_file "
            "(default: ./segmint.yaml if there is one).",
            envvar="SEGMINT_PROJECT",
        ),
    ] = None,
) -> None:
    """Print the pseudonym (keyed HMAC-SHA256) of identifiers.

    The key comes from SEGMINT_PSEUDONYMIZATION_KEY, SEGMINT_PSEUDONYMIZATION_KEY_FILE
    or the project file's privacy.key_file, in that order.
    """
    if project is None and Path(PROJECT_FILE).is_file():
        project = Path(PROJECT_FILE)
    config, base_dir = load_project(project) if project is not None else (None, Path("."))
    with project_key(config.privacy if config else PrivacyConfig(), base_dir):
        key = privacy.require_key()
    for value in values:
        typer.echo(privacy.pseudonymise(value, key))
