"""The shared HTTP plumbing, on a small app built only from it."""

import asyncio
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from billfold.db import BoundedPool, create_pool
from billfold.http import health
from billfold.http.errors import invalid
from billfold.http.health import add_health_routes
from billfold.http.middlewares import standard_middlewares
from billfold.settings import Settings

AiohttpClient = Any
_BOUNDED: web.AppKey[BoundedPool] = web.AppKey("bounded_pool", BoundedPool)


async def _ok(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def _echo(request: web.Request) -> web.Response:
    body = await request.read()
    return web.json_response({"size": len(body)})


async def _bad(request: web.Request) -> web.Response:
    raise invalid("ttl_seconds must be at least 60.", "ttl_seconds")


async def _boom(request: web.Request) -> web.Response:
    raise RuntimeError("database password is hunter2")


async def _item(request: web.Request) -> web.Response:
    return web.json_response({"id": request.match_info["id"]})


async def _fails(app: web.Application) -> None:
    raise ConnectionRefusedError


async def _hangs(app: web.Application) -> None:
    await asyncio.sleep(30)


async def _fine(app: web.Application) -> None:
    return None


def _app(
    required: dict[str, Any] | None = None, optional: dict[str, Any] | None = None
) -> web.Application:
    app = web.Application(middlewares=standard_middlewares("test-http", 1024), client_max_size=1024)
    app.router.add_get("/ok", _ok)
    app.router.add_post("/echo", _echo)
    app.router.add_get("/bad", _bad)
    app.router.add_get("/boom", _boom)
    app.router.add_get("/items/{id}", _item)
    add_health_routes(
        app, required=required if required is not None else {"db": _fine}, optional=optional
    )
    return app


@pytest.fixture
async def client(aiohttp_client: AiohttpClient) -> TestClient[Any, Any]:
    return await aiohttp_client(_app())  # type: ignore[no-any-return]


async def test_request_id_is_echoed_or_made(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/ok", headers={"X-Request-Id": "trace-123"})
    assert resp.headers["X-Request-Id"] == "trace-123"
    resp = await client.get("/ok")
    assert resp.headers["X-Request-Id"].startswith("req_")
    # A header that could inject into logs is replaced, not echoed.
    resp = await client.get("/ok", headers={"X-Request-Id": "bad id\twith tab"})
    assert resp.headers["X-Request-Id"].startswith("req_")


async def test_api_errors_have_stripes_shape(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/bad", headers={"X-Request-Id": "r1"})
    assert resp.status == 400
    body = await resp.json()
    assert body == {
        "error": {
            "type": "invalid_request_error",
            "code": "parameter_invalid",
            "message": "ttl_seconds must be at least 60.",
            "param": "ttl_seconds",
            "request_id": "r1",
        }
    }


async def test_unknown_route_and_method_are_json(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/nope")
    assert resp.status == 404
    assert (await resp.json())["error"]["code"] == "route_not_found"
    resp = await client.delete("/ok")
    assert resp.status == 405
    assert (await resp.json())["error"]["code"] == "method_not_allowed"
    assert "GET" in resp.headers["Allow"]


async def test_a_bug_is_a_generic_500_without_details(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/boom")
    assert resp.status == 500
    body = await resp.json()
    assert body["error"]["type"] == "api_error"
    assert "hunter2" not in await resp.text()
    assert "Traceback" not in await resp.text()


async def test_body_limit_declared_and_chunked(client: TestClient[Any, Any]) -> None:
    resp = await client.post("/echo", data=b"x" * 1000)
    assert resp.status == 200
    resp = await client.post("/echo", data=b"x" * 2000)
    assert resp.status == 413
    assert (await resp.json())["error"]["code"] == "body_too_large"

    async def chunks() -> Any:
        for _ in range(10):
            yield b"y" * 500

    resp = await client.post("/echo", data=chunks())
    assert resp.status == 413
    assert (await resp.json())["error"]["type"] == "invalid_request_error"


async def test_health_ready_and_metrics(client: TestClient[Any, Any]) -> None:
    assert (await (await client.get("/healthz")).json()) == {"status": "ok"}
    resp = await client.get("/readyz")
    assert resp.status == 200
    assert (await resp.json())["checks"] == {"db": "ok"}
    await client.get("/items/secret_value_123")
    text = await (await client.get("/metrics")).text()
    assert 'billfold_http_requests_total{method="GET",route="/items/{id}"' in text
    assert "secret_value_123" not in text  # the route template, never the raw path


async def test_readyz_is_503_when_a_required_check_fails_or_hangs(
    aiohttp_client: AiohttpClient,
) -> None:
    client = await aiohttp_client(
        _app({"db": _fine, "redis": _fails, "amqp": _hangs}, {"extra": _fine})
    )
    resp = await client.get("/readyz")
    assert resp.status == 503
    body = await resp.json()
    assert body["status"] == "unavailable"
    assert body["checks"] == {
        "db": "ok",
        "redis": "error: ConnectionRefusedError",
        "amqp": "error: TimeoutError",
        "extra": "ok",
    }


class _Recorder:
    def __init__(self) -> None:
        self.warnings: list[tuple[str, dict[str, Any]]] = []

    def warning(self, event: str, **fields: Any) -> None:
        self.warnings.append((event, fields))


async def test_readyz_is_200_degraded_when_only_optional_checks_fail(
    aiohttp_client: AiohttpClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = _Recorder()
    monkeypatch.setattr(health, "log", recorder)
    client = await aiohttp_client(
        _app({"db": _fine}, {"cache": _fails, "broker": _hangs, "other": _fine})
    )
    resp = await client.get("/readyz")
    body = await resp.json()
    assert resp.status == 200, body
    assert body == {
        "status": "degraded",
        "checks": {
            "db": "ok",
            "cache": "error: ConnectionRefusedError",
            "broker": "error: TimeoutError",
            "other": "ok",
        },
    }
    # One warning per failing check, naming it and saying it is optional.
    assert sorted((e, f["check"], f["required"]) for e, f in recorder.warnings) == [
        ("readiness_check_failed", "broker", False),
        ("readiness_check_failed", "cache", False),
    ]


async def test_readyz_required_failure_wins_over_optional(
    aiohttp_client: AiohttpClient,
) -> None:
    client = await aiohttp_client(_app({"db": _fails}, {"cache": _fails}))
    resp = await client.get("/readyz")
    assert resp.status == 503
    assert (await resp.json())["status"] == "unavailable"
    client = await aiohttp_client(_app({"db": _fine}, {"cache": _fine}))
    resp = await client.get("/readyz")
    assert resp.status == 200
    assert await resp.json() == {"status": "ok", "checks": {"db": "ok", "cache": "ok"}}


def test_a_check_cannot_be_both_required_and_optional() -> None:
    with pytest.raises(ValueError, match="db"):
        _app({"db": _fine}, {"db": _fine})


async def test_declared_length_is_refused_by_our_middleware_not_aiohttps_limit(
    aiohttp_client: AiohttpClient,
) -> None:
    """aiohttp's own limit set far above ours: only our middleware can answer the 413,
    and it does before the handler runs (so before it authenticates or reads)."""
    calls: list[str] = []

    async def reads(request: web.Request) -> web.Response:
        calls.append(request.method)
        return web.json_response({"size": len(await request.read())})

    app = web.Application(
        middlewares=standard_middlewares("test-http", 1024), client_max_size=10 * 1024 * 1024
    )
    app.router.add_post("/reads", reads)
    client = await aiohttp_client(app)
    resp = await client.post("/reads", data=b"x" * 1024)
    assert resp.status == 200
    resp = await client.post("/reads", data=b"x" * 1025)
    assert resp.status == 413
    assert (await resp.json())["error"]["code"] == "body_too_large"
    assert calls == ["POST"]  # the handler never saw the refused one


async def test_a_saturated_pool_is_a_retryable_503(
    aiohttp_client: AiohttpClient, bf_settings: Settings
) -> None:
    """A handler whose bounded wait for a pool connection ran out (``BoundedPool`` over
    a real pool held by someone else) answers 503 with Retry-After, not a 500."""
    held: list[Any] = []

    async def needs_db(request: web.Request) -> web.Response:
        async with request.app[_BOUNDED].acquire():
            return web.json_response({"ok": True})

    pool = await create_pool(bf_settings, min_size=1, max_size=1)
    try:
        app = web.Application(middlewares=standard_middlewares("test-http", 1024))
        app[_BOUNDED] = BoundedPool(pool, acquire_timeout=0.2)
        app.router.add_get("/needs-db", needs_db)
        client = await aiohttp_client(app)
        assert (await client.get("/needs-db")).status == 200
        held.append(await pool.acquire())
        resp = await client.get("/needs-db")
        body = await resp.json()
        assert resp.status == 503, body
        assert body["error"]["type"] == "api_error"
        assert body["error"]["code"] == "service_busy"
        assert resp.headers["Retry-After"] == "1"
    finally:
        for conn in held:
            await pool.release(conn)
        await pool.close()
