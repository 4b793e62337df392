"""Request bodies: a declared-too-large one is refused before anything else happens."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from .conftest import LogCapture, Tenant, assert_error, open_raw, read_response, request_head


async def test_declared_10mb_is_413_before_auth_and_before_any_body_byte(
    client: TestClient[Any, Any], tenant: Tenant, logs: LogCapture
) -> None:
    """Only the headers are sent, without a key: the answer can come neither from the
    handler (it would say 401: authentication comes first there) nor from aiohttp's
    client_max_size (it only acts while reading a body, and none is sent)."""
    for headers in ({}, tenant.auth):
        reader, writer = await open_raw(client)
        try:
            writer.write(
                request_head(
                    "POST",
                    "/v1/portal_sessions",
                    {
                        **headers,
                        "Content-Type": "application/json",
                        "Content-Length": "10000000",
                    },
                )
            )
            await writer.drain()
            resp = await read_response(reader)
        finally:
            writer.close()
        assert_error(resp.status, resp.json(), 413, "body_too_large")
    lines = [line for line in logs.lines() if line["event"] == "http_request"]
    assert [line["status"] for line in lines] == [413, 413]
    # Nobody was authenticated: no site was ever bound to the request's log context.
    assert all("site" not in line for line in lines)
