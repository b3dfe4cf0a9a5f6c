"""``segmint identity``: resolve identities, show a person, merge, unmerge, review pairs."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from segmint.cli.common import ProjectOption, console, open_project
from segmint.data.identity.graph import (
    Conflict,
    MergeRecord,
    PersonView,
    ResolveResult,
    merge_persons,
    resolve_identities,
    show_person,
    unmerge,
)
from segmint.errors import UserInputError

identity_app = typer.Typer(
    help="Identity resolution: link identifiers to persons; show, merge, unmerge, review.",
    no_args_is_help=True,
)

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]
_SHOWN_CONFLICTS = 20


def register(app: typer.Typer) -> None:
    app.add_typer(identity_app, name="identity")


@identity_app.command("resolve")
def resolve(
    probabilistic: Annotated[
        bool | None,
        typer.Option(
            "--probabilistic/--no-probabilistic",
            help="Also match customer records without a shared identifier (Splink); "
            "unsure pairs go to `segmint identity review`. Default: identity.probabilistic "
            "of the project file (off).",
            show_default=False,
        ),
    ] = None,
    match_threshold: Annotated[
        float | None,
        typer.Option(
            help="Merge pairs at or above this match probability "
            "(default: identity.matching.match_threshold, 0.9).",
            min=0.0,
            max=1.0,
        ),
    ] = None,
    review_threshold: Annotated[
        float | None,
        typer.Option(
            help="Send pairs from this probability up to the match threshold to review "
            "(default: identity.matching.review_threshold, 0.5).",
            min=0.0,
            max=1.0,
        ),
    ] = None,
    project: ProjectOption = Path("."),
    as_json: JsonOption = False,
) -> None:
    """Link every identifier of customers and events to a person (ids stay stable).

    Blocked values, limits, event types and the matcher's settings come from the
    identity section of the project file; these options override it.
    """
    with open_project(project) as proj:
        options = proj.config.identity.resolve_options(
            probabilistic=probabilistic,
            match_threshold=match_threshold,
            review_threshold=review_threshold,
        )
        with console.status("resolving identities..."):
            result = resolve_identities(proj.warehouse, **options)
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
        return
    _print_result(result, probabilistic=options["probabilistic"])


@identity_app.command("show")
def show(
    person_or_identifier: Annotated[
        str,
        typer.Argument(
            help="Person id, or an identifier as type:value (email:ada@mail.org) or bare value."
        ),
    ],
    project: ProjectOption = Path("."),
    as_json: JsonOption = False,
) -> None:
    """A person's identifiers, the evidence linking them and their merge history."""
    with open_project(project) as proj:
        view = show_person(proj.warehouse, person_or_identifier)
    if as_json:
        typer.echo(json.dumps(view.to_dict(), indent=2))
        return
    _print_person(view)


@identity_app.command("merge")
def merge(
    person_a: Annotated[str, typer.Argument(help="First person (id or type:value).")],
    person_b: Annotated[str, typer.Argument(help="Second person (id or type:value).")],
    reason: Annotated[str, typer.Option("--reason", help="Why they are one person.")] = "",
    project: ProjectOption = Path("."),
    as_json: JsonOption = False,
) -> None:
    """Merge two persons by hand (the older survives); undo with `unmerge`."""
    if not reason.strip():
        raise UserInputError("give a reason with --reason")
    with open_project(project) as proj:
        record = merge_persons(proj.warehouse, person_a, person_b, reason=reason)
    if as_json:
        typer.echo(json.dumps(record.to_dict(), indent=2))
        return
    console.print(
        f"merged [bold]{escape(', '.join(record.other_person_ids))}[/] into "
        f"[bold]{escape(record.person_id)}[/] ({len(record.identifiers)} identifiers moved); "
        f"undo with: segmint identity unmerge {escape(record.merge_id)}",
        soft_wrap=True,
    )


@identity_app.command("unmerge")
def unmerge_command(
    merge_id: Annotated[str, typer.Argument(help="The merge to undo (m_...).")],
    project: ProjectOption = Path("."),
    as_json: JsonOption = False,
) -> None:
    """Undo a merge: identifiers go back to their previous person (idempotent)."""
    with open_project(project) as proj:
        result = unmerge(proj.warehouse, merge_id)
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
        return
    if result.already_undone:
        console.print(f"{escape(result.merge_id)} was already undone; nothing changed")
        return
    skipped = f", {result.skipped} left (moved since)" if result.skipped else ""
    console.print(
        f"undid {escape(result.merge_id)}: {result.restored} identifiers restored{skipped}",
        soft_wrap=True,
    )


@identity_app.command("review")
def review(
    accept: Annotated[
        str | None, typer.Option("--accept", help="Accept pair ID: merge the two persons.")
    ] = None,
    reject: Annotated[
        str | None, typer.Option("--reject", help="Reject pair ID: keep them apart.")
    ] = None,
    reason: Annotated[str | None, typer.Option("--reason", help="Why (recorded).")] = None,
    status: Annotated[
        str, typer.Option(help="Pairs to list: pending, accepted, rejected or all.")
    ] = "pending",
    limit: Annotated[int, typer.Option(help="At most this many pairs.", min=1)] = 50,
    project: ProjectOption = Path("."),
    as_json: JsonOption = False,
) -> None:
    """List customer pairs the matcher was unsure about, or decide one."""
    from segmint.data.identity.review import accept_review, list_review, reject_review

    if accept is not None and reject is not None:
        raise UserInputError("give --accept or --reject, not both")
    with open_project(project) as proj:
        wh = proj.warehouse
        if accept is not None:
            item, record = accept_review(wh, accept, reason=reason)
            if as_json:
                payload = {"review": item.to_dict(), "merge": record and record.to_dict()}
                typer.echo(json.dumps(payload, indent=2))
                return
            merged = (
                f"; merged into {escape(record.person_id)} (undo: segmint identity unmerge "
                f"{escape(record.merge_id)})"
                if record
                else "; already one person"
            )
            console.print(f"accepted {escape(item.review_id)}{merged}", soft_wrap=True)
            return
        if reject is not None:
            item = reject_review(wh, reject, reason=reason)
            if as_json:
                typer.echo(json.dumps(item.to_dict(), indent=2))
                return
            console.print(f"rejected {escape(item.review_id)}: they will not be linked")
            return
        items = list_review(wh, status=None if status == "all" else status, limit=limit)
    if as_json:
        typer.echo(json.dumps([i.to_dict() for i in items], indent=2))
        return
    if not items:
        console.print(f"no {'' if status == 'all' else status + ' '}pairs to review")
        return
    view = Table(
        "id",
        "customer",
        "customer",
        "probability",
        "weight",
        "strongest evidence",
        "status",
        title="review",
    )
    for i in items:
        evidence = ", ".join(f"{f} {lvl} ({w:+.1f})" for f, lvl, w in i.top_evidence())
        view.add_row(
            i.review_id,
            escape(i.customer_id_l),
            escape(i.customer_id_r),
            f"{i.match_probability:.3f}",
            f"{i.match_weight:.1f}",
            escape(evidence),
            i.status,
        )
    console.print(view)


# --------------------------------------------------------------------------- printing
def _when(moment: datetime | None) -> str:
    return "-" if moment is None else f"{moment:%Y-%m-%d %H:%M}"


def _print_result(result: ResolveResult, *, probabilistic: bool) -> None:
    view = Table("", "count", title="identity resolution")
    view.add_row("identifiers", f"{result.identifiers:,}")
    view.add_row("persons", f"{result.persons:,}")
    view.add_row("new persons", f"{result.new_persons:,}")
    view.add_row("ambiguous identifiers", f"{result.ambiguous:,}")
    view.add_row("links used", f"{result.links:,}")
    view.add_row("blocked values", f"{result.blocked:,}")
    view.add_row("merges", f"{len(result.merges):,}")
    view.add_row("splits", f"{len(result.splits):,}")
    view.add_row("conflicts", f"{len(result.conflicts):,}")
    if probabilistic:
        view.add_row("probabilistic matches", f"{result.probabilistic_matches:,}")
        view.add_row("pairs to review", f"{result.review_pending:,}")
    console.print(view)
    _print_conflicts(result.conflicts)
    if result.merges:
        _print_history(result.merges[:_SHOWN_CONFLICTS], title="merges of this run")
    console.print(f"done in {result.seconds:.1f} s")


def _print_conflicts(conflicts: Sequence[Conflict]) -> None:
    if not conflicts:
        return
    view = Table("identifier", "reason", "links", "persons", title="conflicts (not merged)")
    for c in conflicts[:_SHOWN_CONFLICTS]:
        view.add_row(
            escape(f"{c.identifier_type}:{c.identifier_value}"),
            c.reason,
            f"{c.links:,}",
            escape(", ".join(c.person_ids)),
        )
    console.print(view)
    if len(conflicts) > _SHOWN_CONFLICTS:
        console.print(
            f"... and {len(conflicts) - _SHOWN_CONFLICTS:,} more (table identity_conflicts)"
        )


def _print_history(records: Sequence[MergeRecord], *, title: str) -> None:
    view = Table(
        "id",
        "action",
        "person",
        "other persons",
        "rule",
        "identifiers",
        "origin",
        "at",
        "undone",
        title=title,
    )
    for r in records:
        view.add_row(
            r.merge_id,
            r.action,
            r.person_id,
            escape(", ".join(r.other_person_ids) or "-"),
            escape(r.rule or r.reason or ""),
            f"{len(r.identifiers):,}",
            r.origin,
            _when(r.at),
            _when(r.undone_at) if r.undone_at else "",
        )
    console.print(view)


def _print_person(view: PersonView) -> None:
    note = f" (was {escape(view.redirected_from)})" if view.redirected_from else ""
    console.print(f"person [bold]{escape(view.person_id)}[/]{note}")
    ids = Table("type", "identifier", "first seen", "last seen", "source", title="identifiers")
    for i in view.identifiers:
        ids.add_row(
            i.type, escape(i.value), _when(i.first_seen), _when(i.last_seen), escape(i.source or "")
        )
    console.print(ids)
    if view.links:
        links = Table("from", "to", "evidence", "strength", "seen", "record", title="links")
        for link in view.links:
            rule = escape(link.rule) + (" [dim](undone)[/]" if link.undone_at else "")
            links.add_row(
                escape(f"{link.type_a}:{link.value_a}"),
                escape(f"{link.type_b}:{link.value_b}"),
                rule,
                link.strength,
                f"{link.observations:,}",
                escape(link.ref or ""),
            )
        console.print(links)
    if view.history:
        _print_history(view.history, title="history")
    _print_conflicts(view.conflicts)
