"""The aiohttp application: auth, parameter decoding and checking, idempotency, errors, routing.

``create_app()`` builds one independent fake (its own state and webhook dispatcher).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from . import (
    catalog,
    checkout,
    clock,
    control,
    customers,
    events,
    hosted,
    invoices,
    meters,
    payment_methods,
    payments,
    previews,
    setup_intents,
    subscriptions,
    webhooks,
)
from .dunning import DunningPolicy
from .errors import StripeError, authentication, redact_key, unknown_route
from .expand import expand
from .forms import decode, get_list
from .routing import STATE_KEY, Ctx, Route
from .state import FakeState, IdempotentResult, RequestInfo, random_token
from .webhooks import Dispatcher, RetryPolicy

Json = dict[str, Any]
log = logging.getLogger("billfold_testing.stripe_fake")
_NO_KEY = (
    "You did not provide an API key. You need to provide your API key in the Authorization "
    "header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY'). See "
    "https://stripe.com/docs/api#authentication for details, or we can help at "
    "https://support.stripe.com/."
)
# previews first: "/v1/invoices/create_preview" must win over "/v1/invoices/{id}".
_MODULES = (
    previews,
    customers,
    catalog,
    payment_methods,
    subscriptions,
    invoices,
    payments,
    setup_intents,
    checkout,
    meters,
    webhooks,
    events,
    clock,
)
_API_KEY = web.AppKey("stripe_fake_api_key", str)


def _json(body: Json, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    # Stripe pretty-prints its JSON with two-space indents. orjson: json.dumps with an
    # indent runs the pure-Python encoder, a third of the fake's CPU per request.
    return web.Response(
        body=orjson.dumps(body, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def _api_key(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    if scheme.lower() == "basic" and value:
        try:
            return base64.b64decode(value).decode().partition(":")[0]
        except (binascii.Error, UnicodeDecodeError):
            pass
    raise authentication(_NO_KEY)


def _check_key(key: str) -> None:
    # Only test-mode secret keys are accepted: the fake must never look live.
    if not key.startswith("sk_test_") or len(key) <= len("sk_test_"):
        raise authentication(f"Invalid API Key provided: {redact_key(key)}")


def _fingerprint(request: web.Request, body: str) -> str:
    raw = f"{request.method} {request.path}?{request.query_string}\n{body}"
    return hashlib.sha256(raw.encode()).hexdigest()


def _wrap(route: Route) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    handler = route.handler

    async def endpoint(request: web.Request) -> web.StreamResponse:
        state = request.app[STATE_KEY]
        request_id = "req_" + random_token(14)
        headers = {"Request-Id": request_id, "Stripe-Version": events.API_VERSION}
        try:
            key = _api_key(request)
            _check_key(key)
            # Stripe's limiters answer before anything runs (no idempotency record).
            if limited := state.rate_limiter.take(key):
                error, extra = limited
                headers.update(extra)
                raise error
            body = await request.text() if request.method == "POST" else ""
            idem = request.headers.get("Idempotency-Key")
            if idem:
                headers["Idempotency-Key"] = idem
            cache_key = (key, idem) if idem and request.method == "POST" else None
            fingerprint = _fingerprint(request, body)
            if cache_key and (hit := state.idempotency.get(cache_key)):
                if hit.fingerprint != fingerprint:
                    raise StripeError(
                        400,
                        "idempotency_error",
                        "Keys for idempotent requests can only be used with the same "
                        "parameters they were first used with. Try using a key other than "
                        f"'{idem}' if you meant to execute a different request.",
                    )
                return web.Response(
                    body=hit.body,
                    status=hit.status,
                    content_type="application/json",
                    headers={**headers, "Idempotent-Replayed": "true"},
                )
            params = decode(request.query_string)
            params.update(decode(body))
            # Like Stripe: an unknown parameter fails before the endpoint runs, and such a
            # failure is not stored under the idempotency key.
            route.params.check(params)
            if not state.base_url:
                state.base_url = f"{request.scheme}://{request.host}"
            state.request = None
            clock.run_due(state)  # wall time may have passed deadlines since the last call
            state.request = RequestInfo(request_id, idem)
            try:
                # One request happens at one instant: every timestamp it writes agrees.
                # A request about a customer on a test clock happens at the clock's time.
                moment = clock.request_time(state, params, dict(request.match_info))
                with state.clock.pinned(moment):
                    result = handler(Ctx(state, params, dict(request.match_info)))
                    result = expand(state, result, get_list(params, "expand"))
                response = _json(result, headers=headers)
            except StripeError as exc:
                response = _json(exc.body(request_id), exc.status, headers)
            finally:
                state.request = None
            # Stripe saves results once the endpoint started executing, errors included
            # (so a declined card stays declined on replay); 5xx are not saved.
            if cache_key and response.status < 500 and isinstance(response.body, bytes):
                state.idempotency[cache_key] = IdempotentResult(
                    fingerprint, response.status, response.body
                )
            return response
        except StripeError as exc:
            return _json(exc.body(request_id), exc.status, headers)
        except Exception:
            log.exception("stripe_fake: unhandled error in %s %s", request.method, request.path)
            return _json(
                {"error": {"type": "api_error", "message": "An unknown error occurred."}},
                500,
                headers,
            )

    return endpoint


@web.middleware
async def _unknown_routes(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except (web.HTTPNotFound, web.HTTPMethodNotAllowed):
        if not request.path.startswith("/v1/"):
            raise
        try:
            _check_key(_api_key(request))
            error = unknown_route(request.method, request.path)
        except StripeError as exc:
            error = exc
        return _json(error.body(), error.status)


def create_app(
    *,
    retry: RetryPolicy | None = None,
    base_url: str | None = None,
    dunning: DunningPolicy | None = None,
) -> web.Application:
    """A fresh, independent fake Stripe.

    ``base_url`` is where clients reach it (used in hosted URLs); when omitted it is taken
    from the first API request's Host header. ``dunning`` sets Smart Retries (default: retry
    3, 5 and 7 days apart, then cancel the subscription).
    """
    state = FakeState()
    state.base_url = base_url or ""
    state.dunning = dunning or DunningPolicy()
    dispatcher = Dispatcher(state, retry or RetryPolicy())
    app = web.Application(middlewares=[_unknown_routes])
    app[STATE_KEY] = state
    app[control.DISPATCHER_KEY] = dispatcher
    for module in _MODULES:
        for route in module.routes.entries:
            app.router.add_route(route.method, route.path, _wrap(route))
    app.router.add_get("/checkout/{id}", checkout.page)
    app.router.add_post("/checkout/{id}", checkout.submit)
    app.router.add_get("/i/{token}", hosted.invoice_page)
    app.router.add_get("/i/{token}/pdf", hosted.invoice_pdf)
    app.router.add_post("/i/{token}/authenticate", hosted.authenticate)
    control.add_routes(app)

    async def _close(_app: web.Application) -> None:
        await dispatcher.close()

    app.on_cleanup.append(_close)
    return app
