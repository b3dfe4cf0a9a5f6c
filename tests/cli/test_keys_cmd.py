"""``segmint keys``: create prints the key once on its last line, list hides secrets, revoke."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from segmint.cli import keys_cmd
from segmint.cli.common import EXIT_OK, EXIT_USER_ERROR
from segmint.cli.main import _SegmintGroup
from segmint.governance import KeyCache, Role, authenticate, list_keys
from segmint.project import Project


@pytest.fixture
def app() -> typer.Typer:
    """The keys commands registered the way ``segmint.cli.main`` registers command groups."""
    app = typer.Typer(cls=_SegmintGroup)

    @app.callback()
    def _main() -> None:
        """segmint (test app)."""

    keys_cmd.register(app)
    return app


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "segmint.yaml").write_text("warehouse: ./segmint.duckdb\n", encoding="utf-8")
    return tmp_path


def run(app, *args: object, exit_code: int = EXIT_OK):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == exit_code, (
        f"exit {result.exit_code} != {exit_code}\nstdout: {result.stdout}\n"
        f"stderr: {result.stderr}\nexception: {result.exception!r}"
    )
    return result


def create(app, folder: Path, *options: str) -> tuple[str, str]:
    """Run ``keys create``; returns (everything but the last line, the last line)."""
    lines = run(app, "keys", "create", *options, "-p", folder).stdout.rstrip("\n").split("\n")
    return "\n".join(lines[:-1]), lines[-1]


def test_create_prints_the_key_alone_on_the_last_line(app, folder):
    head, key = create(app, folder, "--role", "ingest", "--name", "web site")
    assert re.fullmatch(r"sgm_[0-9a-f]{8}_[A-Za-z0-9_-]{43}", key), key
    assert key not in head  # printed once
    key_id = "sk_" + key.split("_")[1]
    assert key_id in head and "ingest" in head
    with Project(folder) as project:
        info = authenticate(project.warehouse, key)
        assert KeyCache.load(project.warehouse).authenticate(key) == info
    assert info is not None
    assert (info.key_id, info.role, info.name) == (key_id, Role.ingest, "web site")


def test_role_is_case_insensitive(app, folder):
    _, key = create(app, folder, "--role", "Analyst")
    with Project(folder) as project:
        info = authenticate(project.warehouse, key)
    assert info is not None and info.role is Role.analyst


def test_list_shows_keys_but_no_secrets(app, folder):
    _, first = create(app, folder, "--role", "admin", "--name", "ops")
    _, second = create(app, folder, "--role", "marketer")
    table = run(app, "keys", "list", "-p", folder).stdout
    rows = json.loads(run(app, "keys", "list", "--json", "-p", folder).stdout)
    for key in (first, second):
        assert key not in table
        assert key[13:] not in json.dumps(rows)
        assert "sk_" + key.split("_")[1] in table
    assert [(r["role"], r["name"], r["active"]) for r in rows] == [
        ("admin", "ops", True),
        ("marketer", None, True),
    ]
    assert all("hash" not in field for row in rows for field in row)


def test_list_of_a_new_project(app, folder):
    assert "no API keys" in run(app, "keys", "list", "-p", folder).stdout
    assert json.loads(run(app, "keys", "list", "--json", "-p", folder).stdout) == []


def test_revoke_then_the_key_fails(app, folder):
    _, key = create(app, folder, "--role", "analyst")
    _, kept = create(app, folder, "--role", "analyst")
    key_id = "sk_" + key.split("_")[1]
    assert key_id in run(app, "keys", "revoke", key_id, "-p", folder).stdout
    assert "already revoked" in run(app, "keys", "revoke", key_id, "-p", folder).stdout
    with Project(folder) as project:
        assert authenticate(project.warehouse, key) is None
        assert authenticate(project.warehouse, kept) is not None
    rows = json.loads(run(app, "keys", "list", "--json", "-p", folder).stdout)
    assert [r["active"] for r in rows] == [False, True]


def test_revoke_of_an_unknown_id_is_a_user_error(app, folder):
    result = run(app, "keys", "revoke", "sk_deadbeef", "-p", folder, exit_code=EXIT_USER_ERROR)
    assert result.stderr.startswith("error:")
    assert "sk_deadbeef" in result.stderr


def test_unknown_role_exits_2_listing_the_roles(app, folder):
    result = run(app, "keys", "create", "--role", "root", "-p", folder, exit_code=EXIT_USER_ERROR)
    assert "root" in result.stderr
    assert all(role.value in result.stderr for role in Role)
    with Project(folder) as project:
        assert list_keys(project.warehouse) == []


def test_role_is_required(app, folder):
    result = run(app, "keys", "create", "-p", folder, exit_code=EXIT_USER_ERROR)
    assert "--role" in result.stderr


def test_a_warehouse_held_by_another_process_gives_a_hint(app, folder):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, duckdb\n"
            "con = duckdb.connect(sys.argv[1])\n"
            "print('ready', flush=True)\n"
            "sys.stdin.read()\n",
            str(folder / "segmint.duckdb"),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        result = run(
            app, "keys", "create", "--role", "admin", "-p", folder, exit_code=EXIT_USER_ERROR
        )
    finally:
        holder.communicate("")
    assert "segmint serve" in result.stderr
    assert "sgm_" not in result.stdout
