"""Makefile, .ci/run and the shell helpers: cheap checks that the entry points wire up the
right steps. `make -n` prints what a target would run without running it.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CI = ROOT / ".ci" / "run"
SHELL_SCRIPTS = sorted([CI, *ROOT.glob("scripts/*.sh"), *ROOT.glob("deploy/**/*.sh")])
HINT = "docker compose up -d postgres redis rabbitmq"


def make_dry_run(*args: str) -> str:
    """`make -n --trace ARGS`: the commands and why each target ran (e.g. 'due to: bootstrap')."""
    # Flags of an outer make (when the suite itself runs under `make test`) must not leak in.
    env = {k: v for k, v in os.environ.items() if k not in {"MAKEFLAGS", "MFLAGS", "MAKELEVEL"}}
    result = subprocess.run(
        ["make", "--no-print-directory", "-n", "--trace", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout + result.stderr


def commands(output: str) -> list[str]:
    return [line for line in output.splitlines() if not line.startswith("Makefile:")]


def code_lines(path: Path) -> list[str]:
    return [
        ln.strip()
        for ln in path.read_text().splitlines()
        if ln.strip() and not ln.strip().startswith("#")
    ]


def test_make_test_bootstraps_then_runs_pytest() -> None:
    out = make_dry_run("test")
    assert re.search(r"update target 'test' due to: .*\bbootstrap\b", out), out
    cmds = commands(out)
    ordered = [
        "scripts/ensure-uv.sh",
        "sync --locked --all-packages",
        "scripts/ensure-services.sh",
        "pytest",
    ]
    positions = [next(i for i, c in enumerate(cmds) if step in c) for step in ordered]
    assert positions == sorted(positions), cmds
    (pytest_line,) = [c for c in cmds if re.search(r"\brun --no-sync pytest\b", c)]
    # Nothing may swallow pytest's status (exit 5, "no tests collected", must fail).
    assert "||" not in pytest_line
    assert not pytest_line.startswith("-")


def test_make_run_bootstraps_then_runs_the_script() -> None:
    out = make_dry_run("run")
    assert re.search(r"update target 'run' due to: .*\bbootstrap\b", out), out
    cmds = commands(out)
    assert cmds[-1] == "scripts/run.sh"
    assert any("scripts/ensure-services.sh" in c for c in cmds)


def test_make_lint_runs_ruff_and_strict_mypy_on_every_package() -> None:
    cmds = commands(make_dry_run("lint"))
    assert any(c.endswith("ruff check .") for c in cmds)
    assert any(c.endswith("ruff format --check .") for c in cmds)
    (mypy,) = [c for c in cmds if " mypy " in c]
    assert "--strict" in mypy
    expected = ["libs/billfold/src", "libs/billfold-testing/src"]
    expected += [str(p.relative_to(ROOT)) for p in sorted(ROOT.glob("services/*/src"))]
    for path in expected:
        assert f" {path}" in mypy, f"mypy does not check {path}"


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("fmt", "ruff format ."),
        ("migrate", "billfold migrate"),
        ("up", "docker compose up -d"),
    ],
)
def test_other_targets(target: str, expected: str) -> None:
    assert any(expected in c for c in commands(make_dry_run(target)))


def test_help_lists_the_two_entry_points() -> None:
    result = subprocess.run(
        ["make", "help"], cwd=ROOT, capture_output=True, text=True, timeout=30, check=True
    )
    for target in ("run", "test", "lint", "fmt", "migrate", "up", "bootstrap"):
        assert re.search(rf"make {target}\s", result.stdout), target


def test_ci_runs_lint_and_test_through_make() -> None:
    lines = code_lines(CI)
    assert CI.read_text().startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in lines
    assert any(re.match(r"make lint\b", ln) for ln in lines)
    assert any(re.match(r"make test\b", ln) for ln in lines)
    # Both results decide the exit status.
    assert lines[-1] == 'exit "$status"'


@pytest.mark.parametrize("script", SHELL_SCRIPTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_shell_scripts_parse_and_are_strict(script: Path) -> None:
    result = subprocess.run(
        ["bash", "-n", str(script)], capture_output=True, text=True, timeout=10, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "set -euo pipefail" in code_lines(script), f"{script.name}: add set -euo pipefail"
    assert os.access(script, os.X_OK), f"{script.name} is not executable"


def test_ensure_services_uses_the_agreed_start_commands() -> None:
    text = (ROOT / "scripts" / "ensure-services.sh").read_text()
    assert "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start" in text
    assert (
        'redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$1" --save "" --appendonly no'
        in text
    )
    assert "--dir /var/lib/redis --logfile /var/log/redis/ci.log" in text
    assert "rabbitmq-server -detached" in text
    assert "rabbitmq-diagnostics -q ping" in text
    assert HINT in text


def test_ensure_services_fails_with_one_clear_line_when_nothing_answers() -> None:
    # 127.0.0.2 is loopback (refuses at once) but not "this machine's default
    # server", so the script must not try to start anything, only explain.
    env = {
        **os.environ,
        "BILLFOLD_DATABASE_URL": "postgresql://postgres@127.0.0.2:1/billfold",
        "BILLFOLD_REDIS_URL": "redis://127.0.0.2:1/0",
        "BILLFOLD_AMQP_URL": "amqp://guest:guest@127.0.0.2:1/",
    }
    result = subprocess.run(
        [str(ROOT / "scripts" / "ensure-services.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode != 0
    errors = [ln for ln in result.stderr.splitlines() if "ERROR" in ln]
    assert len(errors) == 3, result.stderr
    for name, line in zip(("postgres", "redis", "rabbitmq"), errors, strict=True):
        assert name in line
        assert "127.0.0.2:1" in line
        assert HINT in line
    assert "starting" not in result.stderr


def test_run_script_covers_the_whole_flow() -> None:
    text = (ROOT / "scripts" / "run.sh").read_text()
    steps = [
        '"$billfold" migrate',
        "-m billfold_testing.stripe_fake",
        "services/*/src/*/__main__.py",
        "/readyz",
        '"$billfold" demo',
        '"$billfold" stripe webhook-register',
        '"$billfold" stripe demo',
        "/v1/portal_sessions",
        "wait -n",
    ]
    positions = [text.index(step) for step in steps]
    assert positions == sorted(positions), (
        "migrate, fake Stripe, start, wait ready, demo site, webhook, Stripe demo, link, "
        "then foreground"
    )
    assert "trap cleanup EXIT" in text
    assert 'kill -TERM -- "-$pid"' in text
    assert '/v1/portal_sessions -u "$API_KEY:"' in text
    assert "BILLFOLD_LOG_FORMAT=${BILLFOLD_LOG_FORMAT:-console}" in text


def test_make_screenshots_bootstraps_then_runs_the_script() -> None:
    out = make_dry_run("screenshots")
    assert re.search(r"update target 'screenshots' due to: .*\bbootstrap\b", out), out
    cmds = commands(out)
    assert any("python scripts/screenshots.py" in c for c in cmds), cmds
