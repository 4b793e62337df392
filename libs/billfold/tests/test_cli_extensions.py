"""Options one service adds to another's command (billfold.cli.extensible)."""

from __future__ import annotations

from typing import Any

import click
from click.testing import CliRunner

from billfold.cli import CommandExtension, Group, extensible


def _command(calls: list[tuple[str, Any]]) -> click.Group:
    extension = CommandExtension(
        params=[click.Option(["--colour"]), click.Option(["--shade"], type=int)],
        apply=lambda subject, values: calls.append(("extension", (subject, values))),
    )

    @click.group(cls=Group)
    def root() -> None:
        pass

    @root.command("update")
    @click.argument("site_ref")
    @click.option("--own")
    @extensible("billfold.tests.none", subject="site_ref", extensions=[extension])
    def update(site_ref: str, own: str | None) -> None:
        calls.append(("own", (site_ref, own)))

    return root


def test_only_the_parts_whose_options_were_given_run() -> None:
    calls: list[tuple[str, Any]] = []
    root = _command(calls)
    runner = CliRunner()
    done = runner.invoke(root, ["update", "acme", "--colour", "teal"])
    assert done.exit_code == 0, done.output
    assert calls == [("extension", ("acme", {"colour": "teal", "shade": None}))]
    calls.clear()
    done = runner.invoke(root, ["update", "acme", "--own", "x"])
    assert done.exit_code == 0, done.output
    assert calls == [("own", ("acme", "x"))]
    calls.clear()
    done = runner.invoke(root, ["update", "acme", "--own", "x", "--shade", "3"])
    assert calls == [("own", ("acme", "x")), ("extension", ("acme", {"colour": None, "shade": 3}))]


def test_no_option_at_all_is_one_usage_line() -> None:
    calls: list[tuple[str, Any]] = []
    done = CliRunner().invoke(_command(calls), ["update", "acme"])
    assert done.exit_code == 2
    assert "nothing to update: pass --own, --colour, --shade" in done.output
    assert calls == []
    assert "--colour" in CliRunner().invoke(_command(calls), ["update", "--help"]).output
