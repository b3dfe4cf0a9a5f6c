"""``segmint privacy``: each command's output and exit codes."""

from __future__ import annotations

import json
import os
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from segmint.cli import privacy_cmd
from segmint.cli.common import EXIT_FAILURE, EXIT_OK, EXIT_USER_ERROR
from segmint.cli.main import _SegmintGroup
from segmint.data.privacy import KEY_ENV, KEY_FILE_ENV, pseudonymise
from segmint.project import Project
from tests.data.privacy.conftest import ADA, FILES, SOURCES, add_derived_tables


@pytest.fixture
def app() -> typer.Typer:
    app = typer.Typer(cls=_SegmintGroup)

    @app.callback()
    def _main() -> None:
        """segmint (test app)."""

    privacy_cmd.register(app)
    return app


@pytest.fixture
def folder(make_project: Callable[..., Project], tmp_path: Path) -> Path:
    project = make_project(
        SOURCES, {name: textwrap.dedent(text).lstrip("\n") for name, text in FILES.items()}
    )
    project.ingest()
    add_derived_tables(project)
    project.close()
    return tmp_path


def run(app, *args: object, exit_code: int = EXIT_OK, input: str | None = None):
    result = CliRunner().invoke(app, [str(a) for a in args], input=input)
    assert result.exit_code == exit_code, (
        f"exit {result.exit_code} != {exit_code}\nstdout: {result.stdout}\n"
        f"stderr: {result.stderr}\nexception: {result.exception!r}"
    )
    return result


def count(folder: Path, sql: str) -> int:
    with Project(folder) as project:
        return int(project.warehouse.scalar(sql))


def test_report(app, folder):
    rows = json.loads(run(app, "privacy", "report", "-p", folder, "--json").stdout)
    email = next(r for r in rows if (r["table"], r["column"]) == ("customers", "email"))
    assert (email["rows"], email["non_null"], email["distinct"]) == (3, 3, 3)
    assert "PII" in run(app, "privacy", "report", "-p", folder).stdout


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--email", ADA.email, "--customer-id", ADA.customer_id],
        ["--email", "no-at-sign"],
    ],
)
def test_erase_needs_exactly_one_valid_identifier(app, folder, args):
    result = run(app, "privacy", "erase", *args, "--yes", "-p", folder, exit_code=EXIT_USER_ERROR)
    assert result.stderr.startswith("error:")
    assert count(folder, "SELECT count(*) FROM customers") == 3


def test_erase_asks_before_it_erases(app, folder):
    run(
        app,
        "privacy",
        "erase",
        "--email",
        ADA.email,
        "-p",
        folder,
        input="n\n",
        exit_code=EXIT_FAILURE,
    )
    assert count(folder, "SELECT count(*) FROM customers") == 3
    run(app, "privacy", "erase", "--email", ADA.email, "-p", folder, input="y\n")
    assert count(folder, "SELECT count(*) FROM customers") == 2


def test_erase_then_suppressed_counts_then_resume(app, folder):
    result = run(
        app,
        "privacy",
        "erase",
        "--customer-id",
        ADA.customer_id,
        "--yes",
        "--actor",
        "dpo",
        "-p",
        folder,
        "--json",
    )
    report = json.loads(result.stdout)
    assert report["state"] == "done" and report["compacted"] is True
    assert report["rows_deleted"]["customers"] == 1 and report["total_rows"] > 10
    assert ADA.customer_id not in result.stdout and ADA.email not in result.stdout
    again = json.loads(
        run(
            app,
            "privacy",
            "erase",
            "--customer-id",
            ADA.customer_id,
            "--yes",
            "-p",
            folder,
            "--json",
        ).stdout
    )
    assert again["total_rows"] == 0

    counts = json.loads(run(app, "privacy", "suppressed", "-p", folder, "--json").stdout)
    by_type = {c["identifier_type"]: c["hashes"] for c in counts}
    assert by_type["customer_id"] == 2 and by_type["email"] == 1
    assert "suppression list" in run(app, "privacy", "suppressed", "-p", folder).stdout
    assert "no unfinished" in run(app, "privacy", "resume", "-p", folder).stdout


def test_consent_state_and_history(app, folder):
    run(app, "privacy", "sync-consents", "-p", folder)
    payload = json.loads(
        run(app, "privacy", "consent", ADA.customer_id, "-p", folder, "--json").stdout
    )
    assert payload["may_use"]["email_marketing"] is True
    assert payload["may_use"]["advertising"] is True  # granted by the event's consent banner
    assert payload["may_use"]["personalization"] is False
    assert [c["source"] for c in payload["history"]][0] == "web_form"
    before = json.loads(
        run(
            app, "privacy", "consent", ADA.customer_id, "--at", "2024-01-04", "-p", folder, "--json"
        ).stdout
    )
    assert before["may_use"]["email_marketing"] is False and before["state"] == {}
    assert "consent history" in run(app, "privacy", "consent", "CUST-BOB-1", "-p", folder).stdout


def test_retention(app, folder):
    run(app, "privacy", "retention", "-p", folder, exit_code=EXIT_USER_ERROR)
    run(app, "privacy", "retention", "--events-days", "-3", "-p", folder, exit_code=EXIT_USER_ERROR)
    payload = json.loads(
        run(app, "privacy", "retention", "--quarantine-days", "0", "-p", folder, "--json").stdout
    )
    assert payload["quarantine_deleted"] == 2 and payload["events_deleted"] == 0
    assert count(folder, "SELECT count(*) FROM quarantine") == 0


def test_pseudonymise_needs_the_key(app, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    monkeypatch.delenv(KEY_FILE_ENV, raising=False)
    result = run(app, "privacy", "pseudonymise", "c1", exit_code=EXIT_USER_ERROR)
    assert KEY_ENV in result.stderr
    key = "cli-test-key-with-enough-bytes"
    monkeypatch.setenv(KEY_ENV, key)
    result = run(app, "privacy", "pseudonymise", "c1", "Ada@Example.org")
    assert result.stdout.split() == [
        pseudonymise("c1", key.encode()),
        pseudonymise("ada@example.org", key.encode()),
    ]
    assert key not in result.output


def test_every_privacy_command_has_help(app):
    group = typer.main.get_command(app)
    commands = group.commands["privacy"].commands  # type: ignore[attr-defined]
    assert set(commands) >= {"report", "erase", "consent", "retention", "suppressed", "resume"}
    for name in commands:
        assert "Usage" in run(app, "privacy", name, "--help").stdout


# ------------------------------------------------------------- settings from the project file
def configure(folder: Path, privacy_yaml: str) -> None:
    """Rewrite the test project's file with a ``privacy:`` section."""
    (folder / "segmint.yaml").write_text(
        "warehouse: ./segmint.duckdb\n" + SOURCES + privacy_yaml, encoding="utf-8"
    )


def test_retention_periods_come_from_the_project_file(app, folder):
    configure(folder, "privacy:\n  retention:\n    events_days: 100000\n")
    payload = json.loads(run(app, "privacy", "retention", "-p", folder, "--json").stdout)
    assert (payload["events_deleted"], payload["quarantine_deleted"]) == (0, 0)
    assert payload["quarantine_cutoff"] is None and payload["events_cutoff"] is not None

    configure(folder, "privacy:\n  retention: {events_days: 30, quarantine_days: 0}\n")
    # An option overrides the file: events are kept, quarantine follows the file.
    payload = json.loads(
        run(app, "privacy", "retention", "--events-days", "100000", "-p", folder, "--json").stdout
    )
    assert (payload["events_deleted"], payload["quarantine_deleted"]) == (0, 2)
    events = count(folder, "SELECT count(*) FROM events")
    payload = json.loads(run(app, "privacy", "retention", "-p", folder, "--json").stdout)
    assert events > 0 and payload["events_deleted"] == events and payload["compacted"] is False
    assert count(folder, "SELECT count(*) FROM events") == 0


def test_retention_without_any_period_names_the_project_setting(app, folder):
    result = run(app, "privacy", "retention", "-p", folder, exit_code=EXIT_USER_ERROR)
    assert "privacy.retention" in result.stderr


def test_consent_policy_comes_from_the_project_file(app, folder):
    def may_use() -> dict[str, bool]:
        out = run(app, "privacy", "consent", ADA.customer_id, "-p", folder, "--json").stdout
        return json.loads(out)["may_use"]

    assert may_use()["personalization"] is False  # opt-in by default, never granted
    configure(folder, "privacy:\n  consent:\n    opt_out: [analytics, personalization]\n")
    allowed = may_use()
    assert allowed["personalization"] is True and allowed["advertising"] is False
    configure(folder, "privacy:\n  consent:\n    opt_in: [Analytics, profiling]\n")
    allowed = may_use()
    assert allowed["analytics"] is False and allowed["profiling"] is False  # listed purpose
    assert allowed["email_marketing"] is True  # her recorded grant still decides


KEY = "project-file-key-0123456789abcdef"


@pytest.fixture
def no_key_env(monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    monkeypatch.delenv(KEY_FILE_ENV, raising=False)


def test_pseudonymise_reads_the_key_file_named_in_the_project(app, folder, no_key_env, monkeypatch):
    (folder / "secrets").mkdir()
    (folder / "secrets" / "key").write_text(KEY + "\n")
    configure(folder, "privacy:\n  key_file: secrets/key\n")
    result = run(app, "privacy", "pseudonymise", "c1", "-p", folder)
    assert result.stdout.split() == [pseudonymise("c1", KEY.encode())]
    assert KEY not in result.output and KEY_FILE_ENV not in os.environ  # nothing left behind
    monkeypatch.chdir(folder)  # ./segmint.yaml is found without --project
    assert run(app, "privacy", "pseudonymise", "c1").stdout.split() == result.stdout.split()

    other = "environment-key-0123456789abcdef"
    monkeypatch.setenv(KEY_ENV, other)  # the environment wins over the project file
    result = run(app, "privacy", "pseudonymise", "c1", "-p", folder)
    assert result.stdout.split() == [pseudonymise("c1", other.encode())]


def test_a_missing_key_file_is_a_clear_error(app, folder, no_key_env):
    configure(folder, "privacy:\n  key_file: nowhere/key\n")
    result = run(app, "privacy", "pseudonymise", "c1", "-p", folder, exit_code=EXIT_USER_ERROR)
    assert "privacy.key_file" in result.stderr and "no key file" in result.stderr


def test_erasure_and_consent_use_the_project_key_file(app, folder, no_key_env):
    (folder / "key.txt").write_text(KEY)
    configure(folder, "privacy:\n  key_file: key.txt\n")
    run(app, "privacy", "erase", "--customer-id", ADA.customer_id, "--yes", "-p", folder)
    schemes = {
        c["scheme"]
        for c in json.loads(run(app, "privacy", "suppressed", "-p", folder, "--json").stdout)
    }
    assert len(schemes) == 1 and schemes.pop().startswith("hmac")
    # The erased person is recognised through the keyed hashes: nothing may be used.
    payload = json.loads(
        run(app, "privacy", "consent", ADA.customer_id, "-p", folder, "--json").stdout
    )
    assert not any(payload["may_use"].values())
    # Without the key the hashes cannot be checked: an error, not a silent "allowed".
    configure(folder, "")
    result = run(
        app, "privacy", "consent", ADA.customer_id, "-p", folder, exit_code=EXIT_USER_ERROR
    )
    assert KEY_ENV in result.stderr


def test_the_key_itself_in_the_project_file_is_refused(app, folder):
    configure(folder, f"privacy:\n  pseudonymization_key: {KEY}\n")
    result = run(app, "privacy", "report", "-p", folder, exit_code=EXIT_USER_ERROR)
    assert "must never be in the project file" in result.stderr and KEY not in result.output
