"""``segmint keys``: create, list and revoke API keys.

DuckDB lets one process write the warehouse file: use these commands while
``segmint serve`` is stopped (while it runs, manage keys through its admin API).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from segmint.cli.common import ProjectOption, console, open_project
from segmint.engine import Warehouse
from segmint.errors import UserInputError
from segmint.governance.keys import ROLE_HELP, ApiKeyInfo, Role, create_key, list_keys, revoke_key
from segmint.project import Project

keys_app = typer.Typer(
    help="API keys of the service (stored as hashes) and their roles.", no_args_is_help=True
)

_ROLES = "; ".join(f"{role.value}: {text}" for role, text in ROLE_HELP.items())
ActorOption = Annotated[str, typer.Option(help="Who acts (recorded in the audit log).")]


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys")


def _warehouse(proj: Project) -> Warehouse:
    """The project's warehouse, with a hint when the server holds the file."""
    try:
        return proj.warehouse
    except UserInputError as e:
        if "lock" in str(e).lower():
            raise UserInputError(
                f"{e.message} -- is `segmint serve` running? Stop it, or manage keys "
                "through its admin API",
                where=e.where,
            ) from e
        raise


@keys_app.command("create")
def create(
    role: Annotated[
        Role,
        typer.Option("--role", "-r", case_sensitive=False, help=f"Role of the key ({_ROLES})."),
    ],
    name: Annotated[
        str | None, typer.Option("--name", "-n", help="Label: what or who uses the key.")
    ] = None,
    actor: ActorOption = "cli",
    project: ProjectOption = Path("."),
) -> None:
    """Create a key and print it once, alone on the last line (only its hash is kept)."""
    with open_project(project) as proj:
        wh = _warehouse(proj)
        with wh.transaction():
            info, key = create_key(wh, role, name=name, actor=actor)
    label = f" ({escape(info.name)})" if info.name else ""
    console.print(
        f"created API key [bold]{info.key_id}[/]{label} with role [bold]{info.role.value}[/]; "
        "copy it now, it is not shown again:",
        soft_wrap=True,
    )
    typer.echo(key)


@keys_app.command("list")
def list_(
    project: ProjectOption = Path("."),
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List keys: id, name, role, dates (never the keys)."""
    with open_project(project) as proj:
        keys = list_keys(_warehouse(proj))
    if as_json:
        typer.echo(json.dumps([k.to_dict() for k in keys], indent=2))
        return
    if not keys:
        console.print("no API keys yet: create one with `segmint keys create --role ROLE`")
        return
    view = Table("key id", "name", "role", "created (UTC)", "last used", "status", title="API keys")
    for k in keys:
        view.add_row(
            k.key_id,
            escape(k.name or ""),
            k.role.value,
            _when(k.created_at),
            _when(k.last_used_at) or "never",
            "active" if k.active else f"revoked {_when(k.revoked_at)}",
        )
    console.print(view)


@keys_app.command("revoke")
def revoke(
    key_id: Annotated[str, typer.Argument(help="Id of the key, e.g. sk_3f9a2c1d.")],
    actor: ActorOption = "cli",
    project: ProjectOption = Path("."),
) -> None:
    """Revoke a key: requests presenting it get 401 from then on."""
    with open_project(project) as proj:
        wh = _warehouse(proj)
        before = {k.key_id: k for k in list_keys(wh)}.get(key_id.strip())
        with wh.transaction():
            info = revoke_key(wh, key_id, actor=actor)
    if before is not None and not before.active:
        console.print(f"{info.key_id} was already revoked ({_when(info.revoked_at)} UTC)")
    else:
        console.print(f"revoked {_describe(info)}")


def _describe(info: ApiKeyInfo) -> str:
    label = f" ({escape(info.name)})" if info.name else ""
    return f"[bold]{info.key_id}[/]{label}, role {info.role.value}"


def _when(value: object) -> str:
    return "" if value is None else str(value)[:19]
