"""A client generated from /openapi.json by a standard generator works against the live
service: create (JSON with sections and flow, and form), list paging, get, revoke,
errors and readiness (ok, degraded, unavailable) all parse into the generated models.

openapi-python-client (a dev dependency) runs offline from the venv, as a subprocess,
into a temporary directory; the generated package is imported from there. Every client
below sets ``raise_on_unexpected_status``: a status the document does not declare fails
the test instead of coming back unparsed.
"""

from __future__ import annotations

import importlib
import json
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from http import HTTPStatus
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from aiohttp.test_utils import TestServer

from billfold.settings import Settings
from billfold_testing.tcp_proxy import TcpProxy
from session_api import openapi
from session_api.app import create_app

from .conftest import Tenant

PACKAGE = "sapi_generated_client"
GENERATOR = Path(sys.executable).with_name("openapi-python-client")
# A closed local port as every proxy: a generator that tried the network would fail.
_NO_NETWORK = "http://127.0.0.1:9"


@pytest.fixture(scope="module")
def gen(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    """The generated client package (its modules reachable as attributes of ``gen``)."""
    root = tmp_path_factory.mktemp("generated-client")
    doc = root / "openapi.json"
    doc.write_text(json.dumps(openapi.document()))
    config = root / "config.json"
    # No post hooks: they would run ruff on the output, which is not what is tested.
    config.write_text(json.dumps({"post_hooks": [], "package_name_override": PACKAGE}))
    env = {
        **os.environ,
        **{k: _NO_NETWORK for k in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")},
        **{k.lower(): _NO_NETWORK for k in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")},
        "NO_PROXY": "",
        "no_proxy": "",
    }
    out = root / PACKAGE
    result = subprocess.run(
        [
            str(GENERATOR),
            "generate",
            "--path",
            str(doc),
            "--output-path",
            str(out),
            "--meta",
            "none",
            "--config",
            str(config),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # The generator reports what it could not express as warnings; there must be none.
    assert "Warning" not in result.stdout + result.stderr, result.stdout + result.stderr
    sys.path.insert(0, str(root))
    try:
        package = importlib.import_module(PACKAGE)
        for module in ("api.default", "models", "errors", "types"):
            importlib.import_module(f"{PACKAGE}.{module}")
        for name in (
            "create_portal_session",
            "list_portal_sessions",
            "get_portal_session",
            "revoke_portal_session",
            "get_customer",
            "get_readiness",
            "get_health",
        ):
            importlib.import_module(f"{PACKAGE}.api.default.{name}")
        yield package
    finally:
        sys.path.remove(str(root))
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
            del sys.modules[name]


@asynccontextmanager
async def _serve(
    aiohttp_server: Callable[..., Any], settings: Settings
) -> AsyncIterator[TestServer]:
    server: TestServer = await aiohttp_server(create_app(settings))
    try:
        yield server
    finally:
        await server.close()


def _client(gen: ModuleType, server: TestServer, key: str | None = None) -> Any:
    base_url = str(server.make_url("")).rstrip("/")
    if key is None:
        return gen.Client(base_url=base_url, raise_on_unexpected_status=True)
    return gen.AuthenticatedClient(base_url=base_url, token=key, raise_on_unexpected_status=True)


async def test_generated_client_drives_the_session_api(
    gen: ModuleType, aiohttp_server: Callable[..., Any], bf_settings: Settings, tenant: Tenant
) -> None:
    api = gen.api.default
    m = gen.models
    customer = tenant.customers[0]
    async with _serve(aiohttp_server, bf_settings) as server, _client(gen, server, tenant.key) as c:
        # Create, JSON, with sections and a flow.
        body = m.CreatePortalSessionRequest(
            customer=customer.id,
            ttl_seconds=600,
            single_use=False,
            return_url="https://app.example/account",
            sections=m.SectionsInput(
                invoices=m.SectionsInputInvoices(enabled=False),
                subscriptions=m.SectionsInputSubscriptions(allow_cancel=False),
            ),
            flow=m.SubscriptionCancelFlow(type_="subscription_cancel", subscription="sub_1"),
        )
        resp = await api.create_portal_session.asyncio_detailed(client=c, body=body)
        assert resp.status_code == HTTPStatus.CREATED, resp.content
        created = resp.parsed
        assert isinstance(created, m.CreatedPortalSession)
        assert created.token.startswith("bfl_")
        assert created.single_use is False
        assert created.sections.invoices.enabled is False
        assert created.sections.subscriptions.allow_cancel is False
        assert created.sections.subscriptions.enabled is True
        assert isinstance(created.flow, m.SubscriptionCancelFlow)
        assert created.flow.subscription == "sub_1"
        assert resp.headers["Cache-Control"] == "no-store"

        # Create, form: the flat form schema with the documented spellings.
        form = m.CreatePortalSessionForm(
            customer_external_id=customer.external_id,
            ttl_seconds="120",
            send_email=m.CreatePortalSessionFormSendEmail.FALSE,
            sectionsusageenabled=m.CreatePortalSessionFormSectionsusageenabled.FALSE,
            flowtype=m.CreatePortalSessionFormFlowtype.PAYMENT_METHOD_UPDATE,
        )
        resp = await api.create_portal_session.asyncio_detailed(client=c, body=form)
        assert resp.status_code == HTTPStatus.CREATED, resp.content
        from_form = resp.parsed
        assert isinstance(from_form, m.CreatedPortalSession)
        assert from_form.customer == customer.id
        assert from_form.sections.usage.enabled is False
        assert isinstance(from_form.flow, m.PaymentMethodUpdateFlow)

        third = await api.create_portal_session.asyncio(
            client=c, body=m.CreatePortalSessionRequest(customer=customer.id)
        )
        assert isinstance(third, m.CreatedPortalSession)

        # List, two pages, newest first.
        page = await api.list_portal_sessions.asyncio(client=c, customer=customer.id, limit=2)
        assert isinstance(page, m.PortalSessionList)
        assert [s.id for s in page.data] == [third.id, from_form.id]
        assert page.has_more is True
        rest = await api.list_portal_sessions.asyncio(
            client=c, customer=customer.id, limit=2, starting_after=page.data[-1].id
        )
        assert isinstance(rest, m.PortalSessionList)
        assert [s.id for s in rest.data] == [created.id]
        assert rest.has_more is False

        # Get, revoke, get again.
        got = await api.get_portal_session.asyncio(client=c, id=created.id)
        assert isinstance(got, m.PortalSession)
        assert got.status == m.PortalSessionStatus.ACTIVE
        assert isinstance(got.flow, m.SubscriptionCancelFlow)
        resp = await api.revoke_portal_session.asyncio_detailed(client=c, id=created.id)
        assert resp.status_code == HTTPStatus.NO_CONTENT
        got = await api.get_portal_session.asyncio(client=c, id=created.id)
        assert isinstance(got, m.PortalSession)
        assert got.status == m.PortalSessionStatus.REVOKED
        assert got.revoked_at is not None

        found = await api.get_customer.asyncio(client=c, id=customer.external_id)
        assert isinstance(found, m.Customer)
        assert found.id == customer.id


async def test_generated_client_parses_errors(
    gen: ModuleType, aiohttp_server: Callable[..., Any], bf_settings: Settings, tenant: Tenant
) -> None:
    api = gen.api.default
    m = gen.models
    async with _serve(aiohttp_server, bf_settings) as server:
        async with _client(gen, server, tenant.key) as c:
            cases = [
                # 404: no such session; an id with a slash matches no route at all.
                (api.get_portal_session, {"id": "ps_nope"}, 404, "resource_missing"),
                (api.revoke_portal_session, {"id": "ps_nope"}, 404, "resource_missing"),
                (api.get_customer, {"id": "nobody"}, 404, "resource_missing"),
                (
                    api.create_portal_session,
                    {"body": m.CreatePortalSessionRequest(customer="cu_nope")},
                    400,
                    "resource_missing",
                ),
                (
                    api.create_portal_session,
                    {
                        "body": m.CreatePortalSessionForm(
                            customer=tenant.customers[0].id, ttl_seconds="59"
                        )
                    },
                    400,
                    "parameter_invalid",
                ),
                # 413: over the 64 KiB body limit.
                (
                    api.create_portal_session,
                    {"body": m.CreatePortalSessionRequest(customer="x" * 70_000)},
                    413,
                    "body_too_large",
                ),
            ]
            for module, kwargs, status, code in cases:
                resp = await module.asyncio_detailed(client=c, **kwargs)
                assert resp.status_code == status, (module.__name__, resp.content)
                assert isinstance(resp.parsed, m.Error), resp.content
                assert resp.parsed.error.code == code

            # 409: one Idempotency-Key, two different requests.
            key = f"gen-{tenant.site_id}"
            for n, expected in ((0, 201), (1, 409)):
                resp = await api.create_portal_session.asyncio_detailed(
                    client=c,
                    body=m.CreatePortalSessionRequest(customer=tenant.customers[n].id),
                    idempotency_key=key,
                )
                assert resp.status_code == expected, resp.content
            assert isinstance(resp.parsed, m.Error)
            assert resp.parsed.error.type_ == m.ErrorErrorType.IDEMPOTENCY_ERROR

        # 401: no key.
        async with _client(gen, server) as anonymous:
            resp = await api.list_portal_sessions.asyncio_detailed(client=anonymous)
            assert resp.status_code == HTTPStatus.UNAUTHORIZED
            assert isinstance(resp.parsed, m.Error)
            assert resp.parsed.error.type_ == m.ErrorErrorType.AUTHENTICATION_ERROR


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_generated_client_reads_every_readiness(
    gen: ModuleType, aiohttp_server: Callable[..., Any], bf_settings: Settings
) -> None:
    api = gen.api.default
    m = gen.models
    async with _serve(aiohttp_server, bf_settings) as server, _client(gen, server) as c:
        ready = await api.get_readiness.asyncio(client=c)
        assert isinstance(ready, m.Readiness)
        assert ready.status == m.ReadinessStatus.OK
        health = await api.get_health.asyncio(client=c)
        assert isinstance(health, m.Health)

    # Degraded: Redis unreachable for this app (the API still serves: 200).
    no_redis = bf_settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{_closed_port()}/0"})
    async with _serve(aiohttp_server, no_redis) as server, _client(gen, server) as c:
        resp = await api.get_readiness.asyncio_detailed(client=c)
        assert resp.status_code == HTTPStatus.OK
        assert isinstance(resp.parsed, m.Readiness)
        assert resp.parsed.status == m.ReadinessStatus.DEGRADED
        checks = resp.parsed.checks.additional_properties
        assert checks["postgres"] == "ok"
        assert checks["redis"].startswith("error")

    # Unavailable: Postgres cut off behind a proxy (503, same schema).
    url = urlsplit(bf_settings.database_url)
    proxy = TcpProxy(url.hostname or "127.0.0.1", url.port or 5432)
    await proxy.start()
    try:
        userinfo, at, _ = url.netloc.rpartition("@")
        through = urlunsplit(url._replace(netloc=f"{userinfo}{at}127.0.0.1:{proxy.port}"))
        no_db = bf_settings.model_copy(update={"database_url": through})
        async with _serve(aiohttp_server, no_db) as server, _client(gen, server) as c:
            await proxy.cut()
            resp = await api.get_readiness.asyncio_detailed(client=c)
            assert resp.status_code == HTTPStatus.SERVICE_UNAVAILABLE, resp.content
            assert isinstance(resp.parsed, m.Readiness)
            assert resp.parsed.status == m.ReadinessStatus.UNAVAILABLE
            assert resp.parsed.checks.additional_properties["postgres"].startswith("error")
            await proxy.restore()  # so the app's pool closes without waiting on a dead link
    finally:
        await proxy.stop()
