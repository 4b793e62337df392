"""Requests aiohttp's parser refuses: our JSON 400, nothing of the request echoed or logged.

The last tests pin the aiohttp details ``billfold.http.malformed`` relies on: if one of
them fails after an aiohttp upgrade, read that module's docstring before changing it.
"""

from __future__ import annotations

import asyncio
import inspect
import io
import json
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from billfold import service
from billfold.http import malformed
from billfold.http.middlewares import standard_middlewares
from billfold.logs import configure_logging
from billfold.settings import Settings

AiohttpClient = Any
KEY = "bf_sk_Y7s2Tcmsoc0CC2YDMo4hj69riTa8bUoMik"
SECRET_PART = KEY[10:]  # what must never come back, whatever split the key
_H = "HTTP/1.1\r\nHost: x\r\n"

MALFORMED = {
    "nul-in-key": f"GET /ok {_H}X-API-Key: {KEY[:9]}\x00{KEY[9:]}\r\n\r\n",
    "control-before-key": f"GET /ok {_H}X-API-Key: \x7f{KEY}\r\n\r\n",
    "control-after-key": f"GET /ok {_H}Authorization: Bearer {KEY}\x7f\r\n\r\n",
    "long-request-line": f"GET /ok/{KEY}{'x' * 9000} {_H}\r\n",
    "long-header": f"GET /ok {_H}X-API-Key: {KEY}{'a' * 9000}\r\n\r\n",
    "too-many-headers": f"GET /ok {_H}" + "".join(f"X-{i}: {KEY}\r\n" for i in range(200)) + "\r\n",
    "lowercase-method": f"get /ok/{KEY} {_H}\r\n",
    "bad-content-length": f"POST /echo {_H}X-API-Key: {KEY}\r\nContent-Length: x{KEY}\r\n\r\n",
    "unsupported-content-encoding": (
        f"POST /echo {_H}Content-Encoding: br\r\nContent-Length: 2\r\nX-API-Key: {KEY}\r\n\r\n{{}}"
    ),
    "tls-on-plain-port": "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
}


async def _ok(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def _echo(request: web.Request) -> web.Response:
    return web.json_response({"size": len(await request.read())})


def _app(*, install: bool = True, middlewares: bool = True) -> web.Application:
    app = web.Application(
        middlewares=standard_middlewares("test-malformed", 1024) if middlewares else ()
    )
    app.router.add_get("/ok", _ok)
    app.router.add_post("/echo", _echo)
    if install:
        malformed.install(app)
    return app


async def _raw(client: TestClient[Any, Any], request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send bytes no HTTP client would; (status, headers, body)."""
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    try:
        writer.write(request)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), timeout=10)  # EOF: the server closed
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


@pytest.fixture
def log_stream() -> io.StringIO:
    out = io.StringIO()
    configure_logging("test-malformed", Settings(log_format="json", log_level="debug"), out)
    return out


@pytest.mark.parametrize("name", list(MALFORMED))
async def test_refused_requests_get_our_json_400_quoting_nothing(
    aiohttp_client: AiohttpClient, log_stream: io.StringIO, name: str
) -> None:
    client = await aiohttp_client(_app())
    status, headers, body = await _raw(client, MALFORMED[name].encode("latin-1"))
    assert status == 400, body
    assert headers["content-type"] == "application/json; charset=utf-8"
    assert SECRET_PART.encode() not in body
    error = json.loads(body)["error"]
    assert error == {
        "type": "invalid_request_error",
        "code": "request_malformed",
        "message": "The request is not valid HTTP and could not be parsed.",
        "param": None,
        "request_id": headers["x-request-id"],
    }
    # One WARNING naming the exception class; no traceback, no request bytes.
    text = log_stream.getvalue()
    assert SECRET_PART not in text
    assert "Traceback" not in text
    (line,) = [json.loads(raw) for raw in text.splitlines() if "http_request_malformed" in raw]
    assert line["level"] == "warning"
    assert line["event"] == "http_request_malformed"
    assert line["error"] in {
        "BadHttpMessage",
        "BadHttpMethod",
        "LineTooLong",
        "ContentEncodingError",
    }
    assert line["request_id"] == headers["x-request-id"]
    assert not [raw for raw in text.splitlines() if '"level":"error"' in raw]


async def test_status_is_aiohttps_own_when_it_names_a_4xx() -> None:
    from aiohttp.http_exceptions import BadHttpMessage, HttpProcessingError

    too_large = HttpProcessingError(code=431, message=f"X-API-Key: {KEY}")
    response = malformed.malformed_response(too_large)
    assert response.status == 431
    assert response.text is not None
    assert SECRET_PART not in response.text
    assert malformed.malformed_response(BadHttpMessage("x"), 400).status == 400
    assert malformed.malformed_response(HttpProcessingError(code=500), 400).status == 400


async def test_install_is_idempotent(
    aiohttp_client: AiohttpClient, log_stream: io.StringIO
) -> None:
    app = _app()
    malformed.install(app)
    client = await aiohttp_client(app)
    status, headers, _ = await _raw(client, MALFORMED["lowercase-method"].encode())
    assert status == 400
    assert headers["content-type"].startswith("application/json")


async def test_service_run_installs_it(
    aiohttp_client: AiohttpClient, log_stream: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran: list[web.Application] = []
    monkeypatch.setattr(asyncio, "set_event_loop_policy", lambda policy: None)
    monkeypatch.setattr(web, "run_app", lambda app, **kwargs: ran.append(app))
    app = _app(install=False)
    service.run(app, Settings(), 0)
    assert ran == [app]
    app.on_startup.clear()  # not service._tune_gc: it would freeze this test process's gc
    client = await aiohttp_client(app)
    status, headers, _ = await _raw(client, MALFORMED["control-before-key"].encode("latin-1"))
    assert status == 400
    assert headers["content-type"].startswith("application/json")


async def test_other_errors_keep_aiohttps_handling(
    aiohttp_client: AiohttpClient, log_stream: io.StringIO
) -> None:
    """A crash outside any middleware is not a parser error: aiohttp's 500, logged."""

    async def crash(request: web.Request) -> web.Response:
        raise RuntimeError("boom")

    app = _app(middlewares=False)
    app.router.add_get("/crash", crash)
    client = await aiohttp_client(app)
    resp = await client.get("/crash")
    assert resp.status == 500
    assert "RuntimeError" in log_stream.getvalue()


# --------------------------------------------------------------------------------------
# What billfold.http.malformed relies on in aiohttp. A failure here after an upgrade
# means aiohttp changed under us: see that module's docstring.
# --------------------------------------------------------------------------------------


async def test_aiohttp_still_answers_parser_errors_in_text_echoing_the_request(
    aiohttp_client: AiohttpClient, log_stream: io.StringIO
) -> None:
    """Without install(): the behaviour the override exists for. If this fails, aiohttp
    answers differently now (perhaps with a supported hook: issue #3287); revisit."""
    client = await aiohttp_client(_app(install=False))
    status, headers, body = await _raw(client, MALFORMED["control-before-key"].encode("latin-1"))
    assert status == 400
    assert headers["content-type"].startswith("text/plain")
    assert SECRET_PART.encode() in body


async def test_aiohttp_still_answers_an_unknown_expect_itself_in_text(
    aiohttp_client: AiohttpClient,
) -> None:
    """Without install(): aiohttp's router answers before any middleware (what
    ``_ExpectGuard`` exists for)."""
    client = await aiohttp_client(_app(install=False))
    resp = await client.post("/echo", data=b"{}", headers={"Expect": "200-ok"})
    assert resp.status == 417
    assert resp.content_type == "text/plain"
    assert "X-Request-Id" not in resp.headers
    assert "200-ok" in await resp.text()


def test_aiohttp_internals_the_override_uses() -> None:
    # The method overridden, with the arguments aiohttp passes it.
    params = list(inspect.signature(web.RequestHandler.handle_error).parameters)
    assert params == ["self", "request", "status", "exc", "message"]
    # The private method install() wraps, reached by AppRunner (run_app, TestServer).
    assert callable(getattr(web.Application, "_make_handler", None))
    assert "_make_handler(" in inspect.getsource(web.AppRunner._make_server)
    # Server builds a plain RequestHandler from these two attributes (what _Server.__call__
    # repeats with its subclass).
    source = inspect.getsource(web.Server.__call__)
    assert "RequestHandler(self, loop=self._loop, **self._kwargs)" in source
    # A connection takes the server's request_handler when it is made (what _ExpectGuard
    # wraps), and the app handles Expect before its middlewares.
    assert "manager.request_handler" in inspect.getsource(web.RequestHandler.__init__)
    assert "hdrs.EXPECT" in inspect.getsource(web.Application._handle)
    assert "headers" in inspect.signature(web.BaseRequest.clone).parameters
    # A body aiohttp cannot read raises RequestPayloadError; reading the rest of an unread
    # body after the response logs it through log_exception (what _RequestHandler
    # overrides).
    assert "payload_exception=RequestPayloadError" in inspect.getsource(web.RequestHandler)
    start = inspect.getsource(web.RequestHandler.start)
    assert 'self.log_exception("Unhandled exception", exc_info=exc)' in start
