"""The JSON API's writes, on the one action layer the HTML forms use (``actions``):

* ``PATCH /api/portal/v1/subscriptions/{id}`` — ``cancel_at_period_end`` (with an
  optional ``cancellation_reason``, only when cancelling) → the subscription as
  ``GET /subscriptions`` shows it, re-read from the mirror (billing-sync writes the
  mirror before it replies);
* ``POST /api/portal/v1/payment-methods/setup-session`` → ``{"url"}`` of Stripe's hosted
  card page (where it returns to: ``action_routes.setup_returns``).

Each request, in this order: authenticate → the section (hidden: 404 like an unknown
URL) → the write's own credential check (``require_write``: a cookie needs same-origin
and ``X-CSRF-Token``) → the permission (``actions.permit``: 403) → the body, strictly
(``billfold.http.json_params``: a repeated key, an unknown field, a wrong type are 400
naming the parameter) → ``Actions.perform``, which writes the audit row and the
``portal.action`` event. An ``ActionFailed`` becomes the Stripe-shaped error of its
status (billing-sync unreachable: 503 ``unavailable`` within the RPC deadline), never a
500.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, field_validator

from billfold.db import DB_POOL
from billfold.http import json_params
from billfold.http.errors import ApiError, from_http_exception
from billfold.http.responses import json_response
from billfold.logs import get_logger
from billfold.rpc import CancellationReason, CreateSetupSession, SetCancelAtPeriodEnd
from portal_web import api_views, call_ids, mirror, presenters
from portal_web.action_routes import current_default, setup_returns, setup_session
from portal_web.actions import ACTIONS, ActionFailed, Actor, permit
from portal_web.api_routes import (
    FRAMED,
    PREFIX,
    authenticate,
    mirror_unavailable,
    preflight,
    require_section,
    require_write,
)
from portal_web.browser_sessions import Principal
from portal_web.ids import utcnow
from portal_web.state import SETTINGS

log = get_logger("portal_web.api")

SUBSCRIPTION_PATH = "/subscriptions/{id}"
SETUP_SESSION_PATH = "/payment-methods/setup-session"


class SubscriptionUpdate(BaseModel):
    """``SubscriptionUpdateRequest`` in the OpenAPI document."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    cancel_at_period_end: bool
    cancellation_reason: CancellationReason | None = None

    @field_validator("cancellation_reason", mode="before")
    @classmethod
    def _object_or_absent(cls, value: Any) -> Any:
        if value is None:  # documented as an object: leave it out to give none
            raise ValueError("must be an object (leave it out to give no reason)")
        return value

    @field_validator("cancellation_reason")
    @classmethod
    def _only_when_cancelling(
        cls, value: CancellationReason | None, info: ValidationInfo
    ) -> CancellationReason | None:
        if value is not None and info.data.get("cancel_at_period_end") is not True:
            raise ValueError("a reason is given only with cancel_at_period_end: true")
        return value


class SetupSessionRequest(BaseModel):
    """No parameters: an empty body, ``{}``, or none."""

    model_config = ConfigDict(frozen=True, extra="forbid")


def api_error(request: web.Request, exc: ActionFailed) -> ApiError:
    """The action layer's failure in the API's error shape, with its status and the
    public code (every kind of "try again" is ``unavailable``)."""
    if exc.kind == "hidden":  # the section does not exist for this session
        return from_http_exception(web.HTTPNotFound(), request.method, request.path)
    if exc.kind == "forbidden":
        return ApiError(403, "permission_error", exc.public_code, exc.message)
    if exc.kind == "not_found":
        return ApiError(404, "invalid_request_error", exc.public_code, exc.message)
    if exc.kind == "stripe_error":
        return ApiError(402, "card_error", exc.public_code, exc.message, exc.param)
    if exc.kind == "invalid":
        return ApiError(400, "invalid_request_error", exc.public_code, exc.message, exc.param)
    return ApiError(503, "api_error", exc.public_code, exc.message, headers={"Retry-After": "5"})


def _permit(request: web.Request, principal: Principal, call_type: type[Any]) -> None:
    try:
        permit(principal, call_type)
    except ActionFailed as exc:
        raise api_error(request, exc) from None


async def _body(request: web.Request, model: type[json_params.M]) -> json_params.M:
    values = await json_params.read_json_object(request, request.app[SETTINGS].body_read_timeout)
    return json_params.validate(model, values or {})


async def _perform(request: web.Request, principal: Principal, call: Any) -> dict[str, Any]:
    key = request.headers.get(call_ids.API_HEADER)
    if key is not None:
        # Optional: a client retrying with the same key makes one call (``call_ids``).
        if not call_ids.valid_api_value(key):
            raise ApiError(
                400,
                "invalid_request_error",
                "parameter_invalid",
                "Idempotency-Key must be 8 to 200 letters, digits or _-:.",
                call_ids.API_HEADER,
            )
        call = call_ids.scoped(principal.id, key, call)
    try:
        return await request.app[ACTIONS].perform(Actor.of(request, principal), call)
    except ActionFailed as exc:
        raise api_error(request, exc) from None


def _ok(body: dict[str, Any]) -> web.Response:
    response = json_response(body)
    response.headers["Cache-Control"] = "no-store"
    return response


def _no_such_subscription(sub_id: str) -> ApiError:
    return ApiError(
        404,
        "invalid_request_error",
        "resource_missing",
        f"No such subscription: '{sub_id[:64]}'",
        "id",
    )


async def _own_subscription(
    request: web.Request, principal: Principal, sub_id: str
) -> mirror.Subscription:
    try:
        sub = await mirror.subscription(
            request.app[DB_POOL], principal.site_id, principal.customer_id, sub_id
        )
    except Exception as exc:  # the mirror cannot be read
        raise mirror_unavailable("plan", exc) from None
    if sub is None:  # not there, or another customer's: the same answer
        raise _no_such_subscription(sub_id)
    return sub


async def update_subscription(request: web.Request) -> web.StreamResponse:
    principal = await authenticate(request)
    require_section(request, principal, "plan")
    require_write(request, principal)
    _permit(request, principal, SetCancelAtPeriodEnd)
    update = await _body(request, SubscriptionUpdate)
    sub_id = request.match_info["id"]
    # Only the customer's own subscription reaches billing-sync (an unknown id costs no
    # RPC); billing-sync checks the ownership again.
    await _own_subscription(request, principal, sub_id)
    try:
        call = SetCancelAtPeriodEnd(
            site_id=principal.site_id,
            customer_id=principal.customer_id,
            subscription_id=sub_id,
            cancel_at_period_end=update.cancel_at_period_end,
            reason=update.cancellation_reason,
        )
    except ValidationError:  # an id the mirror holds but the call refuses: none of ours
        raise _no_such_subscription(sub_id) from None
    await _perform(request, principal, call)
    now = await _own_subscription(request, principal, sub_id)
    return _ok(api_views.subscription(now, utcnow()))


async def create_setup_session(request: web.Request) -> web.StreamResponse:
    principal = await authenticate(request)
    require_section(request, principal, "payment-methods")
    require_write(request, principal)
    _permit(request, principal, CreateSetupSession)
    await _body(request, SetupSessionRequest)
    was = await current_default(request, principal)
    success, cancelled = setup_returns(request.app[SETTINGS].portal_base_url, principal, was)
    result = await _perform(request, principal, setup_session(principal, success, cancelled))
    url = result.get("url")
    if not isinstance(url, str) or presenters.hosted_link(url) is None:
        log.error("setup_session_without_url", api=True)
        raise ApiError(
            503,
            "api_error",
            "unavailable",
            "The card page could not be opened right now; retry shortly.",
            headers={"Retry-After": "5"},
        )
    return _ok({"url": url})


def add_routes(app: web.Application) -> None:
    for base in ("", FRAMED):
        app.router.add_patch(base + PREFIX + SUBSCRIPTION_PATH, update_subscription)
        app.router.add_post(base + PREFIX + SETUP_SESSION_PATH, create_setup_session)
    for path in (SUBSCRIPTION_PATH, SETUP_SESSION_PATH):
        app.router.add_route("OPTIONS", PREFIX + path, preflight)
