"""The 201 that carries a link token tells every cache not to keep it, replays included."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from .conftest import Tenant

P = "/v1/portal_sessions"


def _assert_no_store(headers: Any) -> None:
    assert headers.getall("Cache-Control") == ["no-store"]
    assert headers.getall("Pragma") == ["no-cache"]


@pytest.mark.parametrize("form", [False, True], ids=["json", "form"])
async def test_created_session_is_not_stored(
    client: TestClient[Any, Any], tenant: Tenant, form: bool
) -> None:
    params = {"customer": tenant.customers[0].id}
    kwargs: dict[str, Any] = {"data": params} if form else {"json": params}
    resp = await client.post(P, headers=tenant.auth, **kwargs)
    assert resp.status == 201
    assert (await resp.json())["token"].startswith("bfl_")
    _assert_no_store(resp.headers)


async def test_idempotent_create_and_its_replay_are_not_stored(
    client: TestClient[Any, Any], tenant: Tenant
) -> None:
    headers = {**tenant.auth, "Idempotency-Key": str(uuid.uuid4())}
    params = {"customer": tenant.customers[0].id}
    first = await client.post(P, headers=headers, json=params)
    assert first.status == 201
    assert "Idempotent-Replayed" not in first.headers
    _assert_no_store(first.headers)
    replay = await client.post(P, headers=headers, json=params)
    assert replay.status == 201
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert (await replay.json())["token"] == (await first.json())["token"]
    _assert_no_store(replay.headers)
