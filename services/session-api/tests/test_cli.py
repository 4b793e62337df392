"""The ``billfold`` commands session-api registers, run as a real subprocess with the
run's ``BILLFOLD_*`` environment (exported by the billfold-testing plugin)."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from billfold import tokens
from billfold.settings import Settings

BILLFOLD = str(Path(sys.executable).parent / "billfold")


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BILLFOLD, *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(_cli, *args, env=env)


def _one_error_line(result: subprocess.CompletedProcess[str], code: int = 2) -> str:
    assert result.returncode == code, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    assert result.stdout == ""
    return lines[0]


def _slug() -> str:
    return f"cli-{secrets.token_hex(4)}"


async def test_site_create_and_list(bf_settings: Settings, db_pool: asyncpg.Pool) -> None:
    slug = _slug()
    result = await cli(
        "site", "create", "--slug", slug, "--name", "Acme Inc",
        "--primary-color", "#1a73e8", "--logo-url", "https://cdn.example.com/logo.png",
        "--support-email", "help@acme.example", "--frame-ancestor", "https://app.acme.example",
        "--frame-ancestor", "https://admin.acme.example:8443/", "--session-ttl", "900",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("created site site_")
    assert f"({slug})" in result.stdout
    row = await db_pool.fetchrow("SELECT * FROM portal.sites WHERE slug = $1", slug)
    assert row is not None
    assert row["name"] == "Acme Inc"
    assert row["primary_color"] == "#1a73e8"
    assert row["logo_url"] == "https://cdn.example.com/logo.png"
    assert row["support_email"] == "help@acme.example"
    assert list(row["frame_ancestors"]) == [
        "https://app.acme.example",
        "https://admin.acme.example:8443",
    ]
    assert row["default_session_ttl"] == 900
    listed = await cli("site", "list")
    assert listed.returncode == 0
    assert any(line.split("\t")[:3] == [row["id"], slug, "Acme Inc"]
               for line in listed.stdout.splitlines())  # fmt: skip
    # The same slug again is bad input.
    again = await cli("site", "create", "--slug", slug, "--name", "Other")
    assert "already exists" in _one_error_line(again)


@pytest.mark.parametrize(
    "args",
    [
        ["site", "create", "--slug", "Not A Slug", "--name", "x"],
        ["site", "create", "--slug", "ok", "--name", "x", "--primary-color", "blue"],
        ["site", "create", "--slug", "ok", "--name", "x", "--logo-url", "javascript:x"],
        ["site", "create", "--slug", "ok", "--name", "x", "--support-email", "nope"],
        ["site", "create", "--slug", "ok", "--name", "x", "--frame-ancestor", "https://a/b"],
        ["site", "create", "--slug", "ok", "--name", "x", "--session-ttl", "5"],
        ["site", "create", "--slug", "ok"],
        ["site", "nonsense"],
        ["key", "create", "--site", "no-such-site", "--kind", "secret"],
        ["key", "create", "--site", "demo", "--kind", "root"],
        ["key", "list", "--site", "no-such-site"],
        ["key", "revoke", "not-a-key"],
        ["key", "revoke", "key_0000000000"],
    ],
)
async def test_bad_input_is_one_line_exit_2(bf_settings: Settings, args: list[str]) -> None:
    _one_error_line(await cli(*args))


async def test_unreachable_database_is_one_line(bf_settings: Settings) -> None:
    result = await cli(
        "site", "list", env={"BILLFOLD_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/x"}
    )
    assert "database" in _one_error_line(result, code=1)


async def test_key_lifecycle(client: TestClient[Any, Any], bf_settings: Settings) -> None:
    slug = _slug()
    assert (await cli("site", "create", "--slug", slug, "--name", "Keys")).returncode == 0
    made = await cli("key", "create", "--site", slug, "--kind", "secret")
    assert made.returncode == 0, made.stderr
    stdout_lines = made.stdout.splitlines()
    key = stdout_lines[-1]
    assert stdout_lines == [key]  # alone, and only once
    assert key.startswith("bf_sk_")
    assert key not in made.stderr
    pk = (await cli("key", "create", "--site", slug, "--kind", "publishable")).stdout.strip()
    assert pk.startswith("bf_pk_")

    listed = await cli("key", "list", "--site", slug)
    assert listed.returncode == 0
    assert key not in listed.stdout
    assert pk not in listed.stdout
    rows = [line.split("\t") for line in listed.stdout.splitlines()]
    assert [r[1] for r in rows] == ["secret", "publishable"]
    assert rows[0][2] == tokens.hint(key)
    assert all(r[4] == "active" for r in rows)

    headers = {"Authorization": f"Bearer {key}"}
    assert (await client.get("/v1/portal_sessions", headers=headers)).status == 200
    # A create (no customers on this site: 400) still warms the create path's key cache.
    resp = await client.post("/v1/portal_sessions", json={"customer": "cu_x"}, headers=headers)
    assert resp.status == 400
    revoked = await cli("key", "revoke", rows[0][0])
    assert revoked.returncode == 0
    assert revoked.stdout.strip() == f"revoked {rows[0][0]}"
    assert (await client.get("/v1/portal_sessions", headers=headers)).status == 401
    resp = await client.post("/v1/portal_sessions", json={"customer": "cu_x"}, headers=headers)
    assert resp.status == 401  # revocation from another process wins over the cache
    assert "revoked" in (await cli("key", "list", "--site", slug)).stdout.splitlines()[0]


async def test_demo_makes_the_site_and_a_working_key_and_never_writes_the_mirror(
    client: TestClient[Any, Any], db_pool: asyncpg.Pool
) -> None:
    mirrored = (
        "SELECT count(*) FROM mirror.customers c JOIN portal.sites s ON s.id = c.site_id "
        "WHERE s.slug = 'demo'"
    )
    before = await db_pool.fetchval(mirrored)
    outputs = []
    for _ in range(2):
        result = await cli("demo")
        assert result.returncode == 0, result.stderr
        outputs.append(json.loads(result.stdout))
    first, second = outputs
    assert set(first) == {"site", "site_id", "api_key"}
    assert first["site"] == second["site"] == "demo"
    assert first["site_id"] == second["site_id"]  # the same site, not a new one
    assert first["api_key"] != second["api_key"]
    # The drop-in example's origin may frame the demo portal, listed once however often.
    ancestors = await db_pool.fetchval(
        "SELECT frame_ancestors FROM portal.sites WHERE id = $1", first["site_id"]
    )
    assert ancestors.count("http://localhost:8090") == 1
    for out in outputs:
        assert out["api_key"].startswith("bf_sk_")
        assert out["api_key"] not in (await cli("key", "list", "--site", "demo")).stdout
        # The key works against the API: the site has no such customer (billing-sync
        # mirrors the demo's customers from Stripe), which is a 400, not a 401.
        headers = {"Authorization": f"Bearer {out['api_key']}"}
        resp = await client.post(
            "/v1/portal_sessions",
            json={"customer_external_id": "no-such-customer"},
            headers=headers,
        )
        assert resp.status == 400, await resp.text()
    # The mirror is billing-sync's: the demo wrote nothing there (see
    # billing-sync's test_demo.py for the customers it creates in Stripe).
    assert await db_pool.fetchval(mirrored) == before
