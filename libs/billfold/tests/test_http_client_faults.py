"""What a client can get wrong that aiohttp answers or logs outside our middlewares.

Each case is the client's fault, so: our JSON error shape with a request id, the access
log line and the metric every request gets, and at most one WARNING line (never an
ERROR, never a traceback, nothing of what the client sent). The app is a small one
built only from the shared ``billfold.http`` helpers, as a service builds its own.
"""

from __future__ import annotations

import asyncio
import gzip
import io
import json
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client import REGISTRY

from billfold.http import malformed
from billfold.http.health import add_health_routes
from billfold.http.middlewares import standard_middlewares
from billfold.logs import configure_logging
from billfold.settings import Settings

AiohttpClient = Any
SERVICE = "test-client-faults"
KEY = "bf_sk_Y7s2Tcmsoc0CC2YDMo4hj69riTa8bUoM"
# Bytes that are not what their Content-Encoding says, and say so at their first bytes:
# no gzip magic; a deflate block of the reserved type 3 ("invalid block type").
NOT_GZIP = b"junkjunkjunk-not-gzip"
NOT_DEFLATE = b"\xff" * 16


async def _fine(_: web.Application) -> None:
    return None


async def _echo(request: web.Request) -> web.Response:
    return web.json_response({"size": len(await request.read())})


def _app() -> web.Application:
    app = web.Application(middlewares=standard_middlewares(SERVICE, 1024))
    app.router.add_post("/echo", _echo)
    add_health_routes(app, required={"db": _fine})
    malformed.install(app)
    return app


@pytest.fixture
def log_stream() -> io.StringIO:
    # Restored after the test by the package's autouse fixture.
    out = io.StringIO()
    configure_logging(SERVICE, Settings(log_format="json", log_level="debug"), out)
    return out


@pytest.fixture
async def client(aiohttp_client: AiohttpClient) -> TestClient[Any, Any]:
    return await aiohttp_client(_app())  # type: ignore[no-any-return]


def _lines(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines() if line.strip()]


def _assert_quiet(out: io.StringIO, warning: str | None) -> list[dict[str, Any]]:
    """No ERROR and no traceback; exactly one WARNING, ``warning``, or none."""
    text = out.getvalue()
    assert "Traceback" not in text
    lines = _lines(out)
    assert [line for line in lines if line["level"] in ("error", "critical")] == []
    warnings = [line["event"] for line in lines if line["level"] == "warning"]
    assert warnings == ([warning] if warning else []), lines
    return lines


async def _send(client: TestClient[Any, Any], *parts: bytes) -> bytes:
    """Write ``parts`` on one connection; before each part after the first, wait for
    the server's response head, so that part arrives once the handler has answered."""
    assert client.server.port is not None
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    data = b""
    try:
        for i, part in enumerate(parts):
            if i:
                data += await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            writer.write(part)
            await writer.drain()
        data += await asyncio.wait_for(reader.read(), 20)  # EOF: the server closed
    finally:
        writer.close()
    return data


def _head(method: str, path: str, encoding: str, length: int) -> bytes:
    return (
        f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Encoding: {encoding}\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


def _response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


def _requests_counted(route: str, status: int) -> float:
    value = REGISTRY.get_sample_value(
        "billfold_http_requests_total",
        {"service": SERVICE, "method": "POST", "route": route, "status": str(status)},
    )
    return value or 0.0


# --- a body aiohttp cannot decode --------------------------------------------------------


@pytest.mark.parametrize(
    ("encoding", "junk"), [("gzip", NOT_GZIP), ("deflate", NOT_DEFLATE)], ids=["gzip", "deflate"]
)
async def test_a_body_the_handler_cannot_decode_is_a_json_400_and_one_warning(
    client: TestClient[Any, Any], log_stream: io.StringIO, encoding: str, junk: bytes
) -> None:
    raw = await _send(client, _head("POST", "/echo", encoding, len(junk)) + junk)
    status, headers, body = _response(raw)
    assert status == 400, raw
    assert headers["content-type"] == "application/json; charset=utf-8"
    assert headers["connection"] == "close"  # the stream cannot be read any further
    request_id = headers["x-request-id"]
    assert json.loads(body) == {
        "error": {
            "type": "invalid_request_error",
            "code": "body_invalid_encoding",
            "message": "The body could not be decoded: check its Content-Encoding and framing.",
            "param": None,
            "request_id": request_id,
        }
    }
    lines = _assert_quiet(log_stream, "http_request_body_invalid")
    (warning,) = [line for line in lines if line["level"] == "warning"]
    assert warning["error"] == "ContentEncodingError"
    assert warning["request_id"] == request_id
    (access,) = [line for line in lines if line["event"] == "http_request"]
    assert access["status"] == 400
    assert access["request_id"] == request_id


@pytest.mark.parametrize(
    ("encoding", "junk"), [("gzip", NOT_GZIP), ("deflate", NOT_DEFLATE)], ids=["gzip", "deflate"]
)
async def test_an_unread_body_that_cannot_be_decoded_logs_one_warning_not_a_traceback(
    client: TestClient[Any, Any], log_stream: io.StringIO, encoding: str, junk: bytes
) -> None:
    # POST /healthz is a 405: the handler never reads the body; aiohttp reads it after
    # the response to reuse the connection, and that read fails. The body is sent only
    # once the 405 is out, so the failure surely happens in that read.
    raw = await _send(client, _head("POST", "/healthz", encoding, len(junk)), junk)
    status, headers, body = _response(raw)
    assert status == 405
    assert json.loads(body)["error"]["code"] == "method_not_allowed"
    assert headers["x-request-id"]
    lines = _assert_quiet(log_stream, "http_request_body_invalid")
    (warning,) = [line for line in lines if line["level"] == "warning"]
    assert warning["error"] == "ContentEncodingError"


async def test_a_good_gzip_body_still_works(
    client: TestClient[Any, Any], log_stream: io.StringIO
) -> None:
    packed = gzip.compress(b'{"a": 1}')
    raw = await _send(
        client,
        _head("POST", "/echo", "gzip", len(packed)).replace(
            b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"
        )
        + packed,
    )
    status, _, body = _response(raw)
    assert status == 200
    assert json.loads(body) == {"size": 8}
    _assert_quiet(log_stream, None)


# --- X-Request-Id -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "incoming",
    [
        "x" * 65,  # too long
        "trace id",  # a space
        "trace/1",  # a character outside [A-Za-z0-9._:-]
        "tráce",  # not ASCII
    ],
)
async def test_a_request_id_that_is_not_short_and_plain_is_replaced(
    client: TestClient[Any, Any], log_stream: io.StringIO, incoming: str
) -> None:
    resp = await client.post("/echo", data=b"{}", headers={"X-Request-Id": incoming})
    assert resp.status == 200
    made = resp.headers["X-Request-Id"]
    assert made.startswith("req_")
    assert incoming not in log_stream.getvalue()
    (access,) = [line for line in _lines(log_stream) if line["event"] == "http_request"]
    assert access["request_id"] == made


async def test_a_short_plain_request_id_is_kept(client: TestClient[Any, Any]) -> None:
    for incoming in ("a", "x" * 64, "trace-1.2:3_4"):
        resp = await client.post("/echo", data=b"{}", headers={"X-Request-Id": incoming})
        assert resp.headers["X-Request-Id"] == incoming


async def test_a_key_passed_as_request_id_never_reaches_the_logs(
    client: TestClient[Any, Any], log_stream: io.StringIO
) -> None:
    # It fits the plain-id pattern, so it is used (the caller gets their own value
    # back); every log line redacts it, request_id being a field like any other.
    resp = await client.post("/echo", data=b"{}", headers={"X-Request-Id": KEY})
    assert resp.status == 200
    assert KEY[6:] not in log_stream.getvalue()
    (access,) = [line for line in _lines(log_stream) if line["event"] == "http_request"]
    assert access["request_id"] == "bf_sk_[redacted]"


# --- Expect -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/echo", "/no-such-route"])
async def test_an_unknown_expect_is_answered_like_any_other_error(
    client: TestClient[Any, Any], log_stream: io.StringIO, path: str
) -> None:
    route = "/echo" if path == "/echo" else "unmatched"
    before = _requests_counted(route, 417)
    resp = await client.post(
        path, data=b"{}", headers={"Expect": "200-ok-bf_sk_SECRETSECRET", "X-Request-Id": "e1"}
    )
    assert resp.status == 417
    assert resp.content_type == "application/json"
    assert resp.headers["X-Request-Id"] == "e1"
    body = await resp.json()
    assert body == {
        "error": {
            "type": "invalid_request_error",
            "code": "expectation_unsupported",
            "message": "Only 'Expect: 100-continue' is supported.",
            "param": None,
            "request_id": "e1",
        }
    }
    assert "200-ok" not in await resp.text()  # the header is not quoted back
    assert _requests_counted(route, 417) == before + 1
    lines = _assert_quiet(log_stream, None)
    (access,) = [line for line in lines if line["event"] == "http_request"]
    assert (access["status"], access["request_id"], access["route"]) == (417, "e1", route)
    assert "SECRETSECRET" not in log_stream.getvalue()


async def test_expect_100_continue_still_works(client: TestClient[Any, Any]) -> None:
    resp = await client.post("/echo", data=b"{}", expect100=True)
    assert resp.status == 200
    assert await resp.json() == {"size": 2}
