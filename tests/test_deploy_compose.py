"""docker-compose.yml: valid against the compose spec, and the cross-references the schema
cannot see (depends_on targets and conditions, volumes, URLs, ports, migrate ordering).

No Docker engine is needed: the file is read with PyYAML and validated by
check-jsonschema's bundled compose-spec schema (offline).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
ENGINES = {
    "postgres": "postgres:16-alpine",
    "redis": "redis:7-alpine",
    "rabbitmq": "rabbitmq:3.13-management",
}
URL_SETTINGS = {
    "BILLFOLD_DATABASE_URL": ("postgres", 5432),
    "BILLFOLD_REDIS_URL": ("redis", 6379),
    "BILLFOLD_AMQP_URL": ("rabbitmq", 5672),
}
# What a container must listen on to be reachable from other containers.
ALL_INTERFACES = "0.0.0.0"  # noqa: S104
INTERPOLATION = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")

Service = dict[str, Any]


def defaults(value: str) -> str:
    """The value compose uses when no variable is set: ${VAR:-default} -> default, $$ -> $."""
    return INTERPOLATION.sub(lambda m: m.group(2) or "", value).replace("$$", "$")


def venv_tool(name: str) -> str:
    path = Path(sys.executable).parent / name
    if not path.exists():
        pytest.fail(f"{name} is not installed next to {sys.executable}; run `uv sync`")
    return str(path)


def environment(service: Service) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # KEY=VALUE form
        env = dict(item.split("=", 1) for item in env)
    return {k: defaults(str(v)) for k, v in env.items()}


def depends_on(service: Service) -> dict[str, dict[str, Any]]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):  # short form: no condition at all
        return {name: {} for name in deps}
    return dict(deps)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(doc, dict)
    return doc


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Service]:
    svcs = compose.get("services")
    assert isinstance(svcs, dict)
    assert svcs
    return svcs


@pytest.fixture(scope="module")
def one_shots(services: dict[str, Service]) -> set[str]:
    """Services others wait to *complete*: they exit, so they have no healthcheck."""
    return {
        target
        for svc in services.values()
        for target, opts in depends_on(svc).items()
        if opts.get("condition") == "service_completed_successfully"
    }


def test_compose_file_matches_the_compose_spec() -> None:
    result = subprocess.run(
        [venv_tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_engines_use_the_agreed_images(services: dict[str, Service]) -> None:
    for name, image in ENGINES.items():
        assert services[name]["image"] == image


def test_every_service_has_an_image_or_a_build(services: dict[str, Service]) -> None:
    for name, svc in services.items():
        assert "image" in svc or "build" in svc, name


def test_built_services_use_a_target_of_the_dockerfile(services: dict[str, Service]) -> None:
    stages = set(
        re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", (ROOT / "Dockerfile").read_text(), re.M | re.I)
    )
    built = {name: svc["build"] for name, svc in services.items() if "build" in svc}
    assert built, "no service is built from this repository"
    for name, build in built.items():
        assert isinstance(build, dict), f"{name}: use the long build form"
        assert build.get("context") == ".", f"{name}: build from the repo root"
        assert build.get("target") in stages, (
            f"{name}: target {build.get('target')} not in Dockerfile"
        )


def test_every_runnable_service_is_in_compose(services: dict[str, Service]) -> None:
    for main in ROOT.glob("services/*/src/*/__main__.py"):
        name, module = main.parts[-4], main.parts[-2]
        assert name in services, f"services/{name} exists but docker-compose.yml does not run it"
        assert services[name]["command"] == ["python", "-m", module]


def test_long_running_services_have_healthchecks(
    services: dict[str, Service], one_shots: set[str]
) -> None:
    assert one_shots == {"migrate"}
    for name, svc in services.items():
        if name in one_shots:
            assert svc.get("restart", "no") == "no", f"{name} is one-shot; restarting it loops"
            continue
        check = svc.get("healthcheck")
        assert check, f"{name} has no healthcheck"
        assert check.get("test"), f"{name} has an empty healthcheck"
        assert not check.get("disable"), f"{name} disables its healthcheck"


def test_depends_on_targets_exist_with_the_right_condition(
    services: dict[str, Service], one_shots: set[str]
) -> None:
    for name, svc in services.items():
        for target, opts in depends_on(svc).items():
            assert target in services, f"{name} depends on unknown service {target}"
            condition = opts.get("condition")
            expected = (
                "service_completed_successfully" if target in one_shots else "service_healthy"
            )
            assert condition == expected, (
                f"{name} -> {target}: condition {condition}, want {expected}"
            )
            if expected == "service_healthy":
                assert "healthcheck" in services[target], f"{target} cannot become healthy"


def test_migrate_runs_billfold_migrate_after_postgres(services: dict[str, Service]) -> None:
    migrate = services["migrate"]
    assert migrate["command"] == ["billfold", "migrate"]
    assert depends_on(migrate)["postgres"]["condition"] == "service_healthy"
    assert "ports" not in migrate


def test_services_using_the_database_wait_for_migrate(services: dict[str, Service]) -> None:
    users = [
        n
        for n, s in services.items()
        if "BILLFOLD_DATABASE_URL" in environment(s) and n != "migrate"
    ]
    assert "session-api" in users
    for name in users:
        deps = depends_on(services[name])
        assert deps.get("migrate", {}).get("condition") == "service_completed_successfully", name
        for engine in ENGINES:
            assert deps.get(engine, {}).get("condition") == "service_healthy", f"{name} -> {engine}"


def test_billfold_urls_point_at_compose_services(services: dict[str, Service]) -> None:
    billfold = {n: s for n, s in services.items() if "build" in s}
    for name, svc in billfold.items():
        env = environment(svc)
        for setting, (target, port) in URL_SETTINGS.items():
            assert setting in env, f"{name} lacks {setting}"
            url = urlsplit(env[setting])
            assert url.hostname == target, f"{name}: {setting}={env[setting]}"
            assert (url.port or port) == port, f"{name}: {setting}={env[setting]}"
            assert services[target]["image"] == ENGINES[target]
        assert env.get("BILLFOLD_HOST") == ALL_INTERFACES, (
            f"{name} would listen on the container's loopback"
        )


def test_credentials_are_overridable_not_hard_coded(compose: dict[str, Any]) -> None:
    """Passwords appear only as ${VAR:-local-dev-default}, never as bare literals."""
    for name, svc in compose["services"].items():
        env = svc.get("environment") or {}
        for key, raw in env.items():
            value = str(raw)
            if re.search(r"PASS(WORD)?$", key):
                assert value.startswith("${"), f"{name}: {key} is hard-coded"
            userinfo = re.match(r"^\w+://([^@/]*)@", value)
            if userinfo and ":" in defaults(userinfo.group(1)):
                assert "${" in userinfo.group(1), f"{name}: {key} embeds a literal password"


def test_published_ports_match_what_the_services_listen_on(
    services: dict[str, Service], one_shots: set[str]
) -> None:
    for name, svc in services.items():
        if "build" not in svc or name in one_shots:
            continue
        env = environment(svc)
        setting = "BILLFOLD_" + name.upper().replace("-", "_") + "_PORT"
        assert setting in env, f"{name}: set {setting} so the container port is explicit"
        container_port = env[setting]
        published = [defaults(str(p)).rsplit(":", 1)[-1] for p in svc.get("ports", [])]
        assert container_port in published, (
            f"{name}: publishes {published}, listens on {container_port}"
        )
        check = " ".join(map(str, svc["healthcheck"]["test"]))
        assert f":{container_port}/readyz" in check, f"{name}: healthcheck should ask /readyz"
    for engine, port in (("postgres", 5432), ("redis", 6379), ("rabbitmq", 5672)):
        published = [defaults(str(p)) for p in services[engine]["ports"]]
        assert f"127.0.0.1:{port}:{port}" in published, (
            f"{engine} must be reachable from the host for tests"
        )


def test_named_volumes_are_declared_and_used(
    compose: dict[str, Any], services: dict[str, Service]
) -> None:
    declared = set(compose.get("volumes") or {})
    used = set()
    for name, svc in services.items():
        for volume in svc.get("volumes", []):
            source = volume["source"] if isinstance(volume, dict) else str(volume).split(":", 1)[0]
            if source.startswith((".", "/", "~", "$")):
                continue  # bind mount
            assert source in declared, f"{name} uses undeclared volume {source}"
            used.add(source)
    assert declared == used, f"declared but unused volumes: {declared - used}"
    assert {"postgres", "rabbitmq"} <= {n for n, s in services.items() if s.get("volumes")}


def test_compose_defaults_agree_with_the_code_defaults(services: dict[str, Service]) -> None:
    """The engines' default credentials are what the code's default URLs expect on the host."""
    pg = environment(services["postgres"])
    assert pg["POSTGRES_DB"] == "billfold"
    assert pg["POSTGRES_USER"] == "postgres"
    # The default URL has no password: host connections (loopback-published) are trusted.
    assert pg["POSTGRES_HOST_AUTH_METHOD"] == "trust"
    rabbit = environment(services["rabbitmq"])
    assert (rabbit["RABBITMQ_DEFAULT_USER"], rabbit["RABBITMQ_DEFAULT_PASS"]) == ("guest", "guest")
