"""``GET /v1/customers/{id}``: is this customer mirrored yet?"""

from __future__ import annotations

from aiohttp import web

from billfold.http.errors import not_found
from billfold.http.responses import json_response
from session_api.auth import authenticate
from session_api.customers import repository
from session_api.ids import iso
from session_api.state import DB
from session_api.validation import path_param

routes = web.RouteTableDef()


@routes.get("/v1/customers/{id}")
async def get_customer(request: web.Request) -> web.Response:
    ident = request.match_info["id"]
    async with request.app[DB].acquire() as conn:
        auth = await authenticate(request, conn, "customers:read")
        checked = path_param(ident)
        customer = await repository.find(conn, auth.site_id, checked) if checked else None
    if customer is None:
        raise not_found("customer", ident, "id")
    return json_response(
        {
            "id": customer.id,
            "object": "customer",
            "stripe_id": customer.stripe_id,
            "external_id": customer.external_id,
            "email": customer.email,
            "name": customer.name,
            "created_at": iso(customer.created_at),
        }
    )
