"""``segmint identity``: resolve, show, merge, unmerge and review through the CLI."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner, Result

from segmint.cli import identity_cmd
from segmint.cli.common import EXIT_OK, EXIT_USER_ERROR
from segmint.cli.main import _SegmintGroup
from segmint.engine.warehouse import Warehouse
from segmint.project import Project

SOURCES = """
sources:
  - name: crm
    kind: customers
    path: customers.csv
"""
CUSTOMERS = """\
customer_id,email,phone,signup_at
c1,ada@mail.org,+14155550101,2020-01-01T00:00:00
c2,bo@mail.org,+14155550123,2021-01-01T00:00:00
c3,cy@mail.org,+14155550123,2022-01-01T00:00:00
"""


def _app() -> typer.Typer:
    app = typer.Typer(cls=_SegmintGroup, no_args_is_help=True, add_completion=False)

    @app.callback()
    def _root() -> None:
        """segmint (identity commands only)."""

    identity_cmd.register(app)
    return app


class IdentityCli:
    """Run ``segmint identity ...`` on the test project and check the exit code."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.app = _app()
        self.runner = CliRunner()

    def __call__(self, *args: str, exit_code: int = EXIT_OK) -> Result:
        result = self.runner.invoke(
            self.app, ["identity", *args, "--project", str(self.folder)], catch_exceptions=True
        )
        assert result.exit_code == exit_code, (
            f"exit {result.exit_code} != {exit_code}\nstdout: {result.stdout}\n"
            f"stderr: {result.stderr}\nexception: {result.exception!r}"
        )
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "--json").stdout)


@pytest.fixture
def identity(tmp_path: Path, make_project: Callable[..., Project]) -> IdentityCli:
    project = make_project(SOURCES, {"customers.csv": CUSTOMERS})
    project.ingest()
    wh = project.warehouse
    wh.execute(
        "INSERT INTO events (message_id, type, user_id, anonymous_id, timestamp) VALUES "
        "('m1', 'identify', 'c1', 'a1', TIMESTAMP '2024-01-01'), "
        "('m2', 'track', NULL, 'a2', TIMESTAMP '2024-01-02')"
    )
    project.close()
    return IdentityCli(tmp_path)


def _one_error_line(result: Result, *fragments: str) -> None:
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    for fragment in fragments:
        assert fragment in result.stderr


def test_resolve_prints_counts_and_conflicts(identity: IdentityCli) -> None:
    result = identity("resolve")
    assert "persons" in result.stdout and "conflicts (not merged)" in result.stdout
    assert "phone:+14155550123" in result.stdout
    payload = identity.json("resolve")
    assert payload["persons"] == 4  # c1 (+ a1), c2, c3, anonymous a2
    assert payload["merges"] == [] and payload["new_persons"] == 0
    (conflict,) = payload["conflicts"]
    assert conflict["reason"] == "shared by several persons"


def test_show_by_person_or_identifier(identity: IdentityCli) -> None:
    identity("resolve")
    by_email = identity.json("show", "email:ADA@mail.org")
    values = {(i["type"], i["value"]) for i in by_email["identifiers"]}
    assert values == {
        ("customer_id", "c1"),
        ("user_id", "c1"),
        ("email", "ada@mail.org"),
        ("phone", "+14155550101"),
        ("anonymous_id", "a1"),
    }
    assert identity.json("show", by_email["person_id"])["person_id"] == by_email["person_id"]
    assert identity.json("show", "a1")["person_id"] == by_email["person_id"]
    shown = identity("show", "c1").stdout
    assert by_email["person_id"] in shown and "identify event" in shown


def test_show_errors_are_one_line_with_exit_code_2(identity: IdentityCli) -> None:
    identity("resolve")
    _one_error_line(identity("show", "nobody", exit_code=EXIT_USER_ERROR), "no person")
    _one_error_line(
        identity("show", "phone:+1 415 555 0123", exit_code=EXIT_USER_ERROR), "ambiguous"
    )


def test_merge_and_unmerge(identity: IdentityCli) -> None:
    identity("resolve")
    p2 = identity.json("show", "customer_id:c2")["person_id"]
    p3 = identity.json("show", "customer_id:c3")["person_id"]
    _one_error_line(
        identity("merge", "customer_id:c2", "customer_id:c3", exit_code=EXIT_USER_ERROR),
        "--reason",
    )
    record = identity.json("merge", "customer_id:c3", "customer_id:c2", "--reason", "same")
    assert record["person_id"] == p2  # c2 signed up first: the older person survives
    assert record["other_person_ids"] == [p3]
    assert identity.json("show", "c3")["person_id"] == p2
    _one_error_line(
        identity("merge", p2, "customer_id:c3", "--reason", "x", exit_code=EXIT_USER_ERROR),
        "already one person",
    )

    undone = identity("unmerge", record["merge_id"]).stdout
    assert "2 identifiers restored" in undone  # c3 and its e-mail
    assert identity.json("show", "c3")["person_id"] == p3
    assert "already undone" in identity("unmerge", record["merge_id"]).stdout
    assert identity.json("unmerge", record["merge_id"])["already_undone"] is True
    _one_error_line(identity("unmerge", "m_nope", exit_code=EXIT_USER_ERROR), "no merge")

    history = identity.json("show", p3)["history"]
    assert [(h["merge_id"], h["undone_at"] is not None) for h in history] == [
        (record["merge_id"], True)
    ]


def test_review_lists_and_decides(identity: IdentityCli, tmp_path: Path) -> None:
    identity("resolve")
    assert "no pending pairs" in identity("review").stdout
    assert identity.json("review") == []
    _one_error_line(
        identity("review", "--accept", "r_1", "--reject", "r_2", exit_code=EXIT_USER_ERROR),
        "not both",
    )
    _one_error_line(identity("review", "--accept", "r_nope", exit_code=EXIT_USER_ERROR), "r_nope")

    # Queue a pair as the probabilistic step would.
    with Warehouse(tmp_path / "segmint.duckdb") as wh:
        wh.execute(
            "INSERT INTO identity_review VALUES ('r_pair', 'c2', 'c3', 0.71, 1.4, "
            '\'{"prior": -9.0, "surname": ["exact", 7.5]}\', \'pending\', '
            "TIMESTAMP '2024-01-01', NULL, NULL, NULL)"
        )
    listed = identity("review").stdout
    assert "r_pair" in listed and "exact (+7.5)" in listed
    accepted = identity("review", "--accept", "r_pair", "--reason", "same household id").stdout
    assert "accepted r_pair" in accepted and "segmint identity unmerge" in accepted
    assert identity.json("show", "c2")["person_id"] == identity.json("show", "c3")["person_id"]
    (item,) = identity.json("review", "--status", "accepted")
    assert (item["status"], item["reason"]) == ("accepted", "same household id")
    _one_error_line(
        identity("review", "--reject", "r_pair", exit_code=EXIT_USER_ERROR), "already accepted"
    )
    _one_error_line(
        identity("review", "--status", "maybe", exit_code=EXIT_USER_ERROR), "unknown status"
    )


# ------------------------------------------------------------- settings from the project file
def _configure(folder: Path, identity_yaml: str) -> None:
    """Rewrite the test project's file with an ``identity:`` section."""
    (folder / "segmint.yaml").write_text(
        "warehouse: ./segmint.duckdb\n" + SOURCES + identity_yaml, encoding="utf-8"
    )


def test_blocked_values_from_the_project_file_are_not_linked(
    identity: IdentityCli, tmp_path: Path
) -> None:
    identity("resolve")
    assert identity.json("show", "email:ada@mail.org")["person_id"]
    _configure(
        tmp_path,
        "identity:\n  blocked_values:\n    email: ['ada@*']\n    phone: ['+14155550123']\n",
    )
    payload = identity.json("resolve")
    reasons = {
        (c["identifier_type"], c["identifier_value"]): c["reason"] for c in payload["conflicts"]
    }
    assert reasons == {
        ("email", "ada@mail.org"): "blocked value",
        ("phone", "+14155550123"): "blocked value",
    }
    _one_error_line(identity("show", "email:ada@mail.org", exit_code=EXIT_USER_ERROR), "no person")
    c1 = {(i["type"], i["value"]) for i in identity.json("show", "customer_id:c1")["identifiers"]}
    assert ("email", "ada@mail.org") not in c1 and ("phone", "+14155550101") in c1
    # The built-in list still applies alongside the project's values.
    with Warehouse(tmp_path / "segmint.duckdb") as wh:
        wh.execute("UPDATE customers SET email = 'test@test.com' WHERE customer_id = 'c2'")
    blocked = {
        c["identifier_value"]
        for c in identity.json("resolve")["conflicts"]
        if c["reason"] == "blocked value"
    }
    assert "test@test.com" in blocked


def test_linking_rules_from_the_project_file(identity: IdentityCli, tmp_path: Path) -> None:
    assert identity.json("resolve")["persons"] == 4
    _configure(tmp_path, "identity:\n  user_id_is_customer_id: false\n")
    # userId c1 (with its anonymous id a1) is no longer customer c1: a person of its own.
    assert identity.json("resolve")["persons"] == 5
    assert (
        identity.json("show", "user_id:c1")["person_id"]
        != (identity.json("show", "customer_id:c1")["person_id"])
    )
    _configure(tmp_path, "identity:\n  event_types: [alias]\n")
    identity("resolve")
    a1 = identity.json("show", "anonymous_id:a1")["person_id"]
    assert a1 != identity.json("show", "customer_id:c1")["person_id"]


def test_probabilistic_settings_come_from_the_file_and_options_override(
    identity: IdentityCli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from segmint.data.identity import review as review_mod

    seen: list[Any] = []
    columns = ["id_l", "id_r", "match_probability", "match_weight", "evidence"]

    def score(wh: Warehouse, config: Any = None) -> tuple[Any, Any]:
        import pandas as pd

        seen.append(config)
        match = pd.DataFrame([("c2", "c3", 0.99, 9.0, '{"prior": -9.0}')], columns=columns)
        return match, pd.DataFrame(columns=columns)

    monkeypatch.setattr(review_mod, "score_customers", score)
    _configure(
        tmp_path,
        "identity:\n  probabilistic: true\n  matching:\n    match_threshold: 0.97\n"
        "    review_threshold: 0.8\n    blocking_rules: [[email], [phone]]\n",
    )
    payload = identity.json("resolve")
    assert payload["probabilistic_matches"] == 1
    (config,) = seen
    assert config.review_band == (0.8, 0.97)
    assert config.blocking_rules == (("email",), ("phone",))
    assert identity.json("show", "c2")["person_id"] == identity.json("show", "c3")["person_id"]

    assert "probabilistic matches" in identity("resolve", "--match-threshold", "0.99").stdout
    assert seen[-1].review_band == (0.8, 0.99)
    identity("resolve", "--no-probabilistic")
    assert len(seen) == 2  # the matcher did not run
    _one_error_line(
        identity("resolve", "--review-threshold", "0.98", exit_code=EXIT_USER_ERROR),
        "review_threshold",
    )


def test_an_invalid_identity_section_is_one_error_line(
    identity: IdentityCli, tmp_path: Path
) -> None:
    _configure(tmp_path, "identity:\n  blocked_values:\n    customer_id: [c1]\n")
    _one_error_line(
        identity("resolve", exit_code=EXIT_USER_ERROR),
        "segmint.yaml:",
        "identity.blocked_values",
        "customer ids cannot be blocked",
    )
    _configure(tmp_path, "identity:\n  matching:\n    treshold: 0.9\n")
    _one_error_line(
        identity("resolve", exit_code=EXIT_USER_ERROR), "identity.matching.treshold: unknown key"
    )
