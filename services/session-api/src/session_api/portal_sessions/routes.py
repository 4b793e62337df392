"""HTTP handlers for ``/v1/portal_sessions``."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from billfold.cache import REDIS
from billfold.http.errors import ApiError, not_found
from billfold.http.middlewares import REQUEST_ID
from billfold.http.responses import json_response
from session_api import idempotency
from session_api.auth import (
    OWNER_CACHE,
    Authenticated,
    authenticate,
    ensure_live,
    revoked_meanwhile,
)
from session_api.customers import repository as customers
from session_api.dbtypes import Conn
from session_api.ids import utcnow
from session_api.portal_sessions import repository, service
from session_api.portal_sessions.schemas import (
    CreatePortalSession,
    ListPortalSessions,
    session_json,
)
from session_api.state import CREATE_BATCHER, DB, LINK_INDEX, SETTINGS
from session_api.validation import path_param, read_body, read_query, validate

routes = web.RouteTableDef()

WRITE = "portal_sessions:write"
READ = "portal_sessions:read"
# The 201 carries the link token (returned once, also on a replay): no cache may keep it.
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


@routes.post("/v1/portal_sessions")
async def create_portal_session(request: web.Request) -> web.Response:
    app = request.app
    settings = app[SETTINGS]
    cache = app[OWNER_CACHE]
    pool = app[DB]
    # No pool connection is held while the client sends its body: authenticate (one
    # short query, or none with a cached owner), then read and validate the body
    # (bounded: 408), and only then take a connection (bounded wait: 503). A client
    # trickling its body holds its own socket, never a connection other tenants need.
    # A cached owner is safe: the create statement re-checks that the key is live.
    auth = await authenticate(request, pool, WRITE, cache=cache)
    try:
        params = validate(CreatePortalSession, await read_body(request))
        if idempotency.HEADER in request.headers:
            return await _create_idempotent(request, auth, params)
        # The group commit (CREATE_BATCHER): this request holds no connection while
        # its statement waits.
        created = await service.create_batched(
            app[CREATE_BATCHER], settings, auth.owner, params, request.get(REQUEST_ID)
        )
    except service.KeyRevoked:
        cache.drop(auth.key_hash)
        raise revoked_meanwhile() from None
    except ApiError:
        await ensure_live(pool, auth, cache)
        raise
    # Committed just now: index it before answering.
    await service.index(app[LINK_INDEX], settings, auth.site_id, created)
    return json_response(created.body, status=201, headers=NO_STORE)


async def _create_idempotent(
    request: web.Request, auth: Authenticated, params: CreatePortalSession
) -> web.Response:
    app = request.app
    key = idempotency.key_header(request)
    assert key is not None  # dispatched here on the header's presence
    async with app[DB].acquire() as conn:
        outcome, created = await _create(request, conn, auth, params, key)
        if created is None:  # a replay: the create statement's key check did not run
            await ensure_live(conn, auth, app[OWNER_CACHE])
    if created is not None:  # committed just now (not a replay): index it
        await service.index(app[LINK_INDEX], app[SETTINGS], auth.site_id, created)
    headers = {**NO_STORE, idempotency.REPLAYED_HEADER: "true"} if outcome.replayed else NO_STORE
    return json_response(outcome.body, status=outcome.status, headers=headers)


async def _create(
    request: web.Request, conn: Conn, auth: Authenticated, params: CreatePortalSession, key: str
) -> tuple[idempotency.Outcome, service.Created | None]:
    settings = request.app[SETTINGS]
    request_id = request.get(REQUEST_ID)
    made: list[service.Created] = []

    async def work(tx: Conn) -> tuple[int, dict[str, Any]]:
        result = await service.create(tx, settings, auth.owner, params, request_id)
        made.append(result)
        return 201, result.body

    outcome = await idempotency.run(
        conn,
        site_id=auth.site_id,
        key=key,
        req_hash=idempotency.request_hash(
            request.method, request.path, params.model_dump(mode="json", exclude_unset=True)
        ),
        api_key=auth.raw_key,
        work=work,
    )
    return outcome, (made[0] if made else None)


@routes.get("/v1/portal_sessions")
async def list_portal_sessions(request: web.Request) -> web.Response:
    async with request.app[DB].acquire() as conn:
        auth = await authenticate(request, conn, READ)
        params = validate(ListPortalSessions, read_query(request))
        customer_id = None
        if params.customer is not None:
            found = await customers.find(conn, auth.site_id, params.customer)
            if found is None:
                return _page([], has_more=False)  # no sessions for an unknown customer
            customer_id = found.id
        after = None
        if params.starting_after is not None:
            cursor = await repository.get(conn, auth.site_id, params.starting_after)
            if cursor is None:
                raise ApiError(
                    400,
                    "invalid_request_error",
                    "resource_missing",
                    f"No such portal session: '{params.starting_after}'",
                    "starting_after",
                )
            after = (cursor["created_at"], cursor["id"])
        rows = await repository.page(
            conn,
            auth.site_id,
            customer_id=customer_id,
            include_expired=params.include_expired,
            limit=params.limit,
            after=after,
        )
    now = utcnow()
    data = [session_json(r, now) for r in rows[: params.limit]]
    return _page(data, has_more=len(rows) > params.limit)


def _page(data: list[dict[str, Any]], *, has_more: bool) -> web.Response:
    return json_response(
        {"object": "list", "url": "/v1/portal_sessions", "data": data, "has_more": has_more}
    )


@routes.get("/v1/portal_sessions/{id}")
async def get_portal_session(request: web.Request) -> web.Response:
    session_id = request.match_info["id"]
    async with request.app[DB].acquire() as conn:
        auth = await authenticate(request, conn, READ)
        checked = path_param(session_id)
        row = await repository.get(conn, auth.site_id, checked) if checked else None
    if row is None:
        raise not_found("portal session", session_id, "id")
    return json_response(session_json(row, utcnow()))


@routes.delete("/v1/portal_sessions/{id}")
async def revoke_portal_session(request: web.Request) -> web.Response:
    app = request.app
    pool = app[DB]
    auth = await authenticate(request, pool, WRITE)
    session_id = path_param(request.match_info["id"])
    if session_id is None:
        raise not_found("portal session", request.match_info["id"], "id")
    await service.revoke(
        pool, app[REDIS], app[SETTINGS], auth.site_id, session_id, request.get(REQUEST_ID)
    )
    return web.Response(status=204)
