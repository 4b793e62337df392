"""Test-control endpoints under ``/_fake/`` — not part of Stripe's API, no API key needed.

``POST /_fake/reset``                 forget every object, event and queued delivery
``GET  /_fake/clock``                 the fake's current time
``POST /_fake/clock/advance``         ``seconds=N`` or ``to=<unix>``: move time, run billing
``POST /_fake/webhooks/behaviour``    ``delay``, ``duplicate``, ``reorder`` delivery switch
``POST /_fake/webhooks/drain``        wait (``timeout`` s) until queued deliveries settle
``GET  /_fake/webhooks/deliveries``   every delivery attempt with its HTTP status
``POST /_fake/billing/dunning``       ``retry_days=3,5,7``, ``after_retries=canceled|unpaid|
                                      past_due``: Smart Retries settings (GET shows them)
``POST /_fake/rate_limit``           ``requests=N``, ``kind=rate_limit|lock_timeout``,
                                      ``api_key=sk_test_…`` (optional): the next N API
                                      requests (with that key) answer Stripe's 429 (GET
                                      shows what is armed and how many were limited)
``GET  /_fake/health``
Parameters may be sent as JSON, form fields or query string.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from .clock import advance
from .dunning import DunningPolicy
from .forms import decode
from .limits import KINDS
from .routing import STATE_KEY
from .webhooks import Dispatcher

Json = dict[str, Any]
DISPATCHER_KEY = web.AppKey("stripe_fake_dispatcher", Dispatcher)


async def _params(request: web.Request) -> Json:
    params: Json = decode(request.query_string)
    text = await request.text()
    if text:
        if request.content_type == "application/json":
            body = json.loads(text)
            if not isinstance(body, dict):
                raise web.HTTPBadRequest(text="expected a JSON object")
            params.update(body)
        else:
            params.update(decode(text))
    return params


def _number(params: Json, key: str) -> float | None:
    value = params.get(key)
    if value is None or value == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise web.HTTPBadRequest(text=f"{key} must be a number") from None


def _flag(params: Json, key: str) -> bool | None:
    value = params.get(key)
    if value is None:
        return None
    return value in (True, "true", "1", "yes", "on")


async def reset(request: web.Request) -> web.Response:
    request.app[STATE_KEY].reset()
    request.app[DISPATCHER_KEY].clear()
    return web.json_response({"reset": True})


async def clock(request: web.Request) -> web.Response:
    return web.json_response({"now": request.app[STATE_KEY].clock.now()})


async def clock_advance(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    params = await _params(request)
    seconds, to = _number(params, "seconds"), _number(params, "to")
    if (seconds is None) == (to is None):
        raise web.HTTPBadRequest(text="pass exactly one of seconds= or to=")
    delta = int(seconds) if seconds is not None else int(to or 0) - state.clock.now()
    if delta < 0:
        raise web.HTTPBadRequest(text="the clock only moves forward")
    events_before = len(state.table("event"))
    now = advance(state, delta)
    return web.json_response({"now": now, "events": len(state.table("event")) - events_before})


async def webhook_behaviour(request: web.Request) -> web.Response:
    dispatcher = request.app[DISPATCHER_KEY]
    params = await _params(request)
    if (delay := _number(params, "delay")) is not None:
        dispatcher.behaviour.delay = max(0.0, delay)
    for key in ("duplicate", "reorder"):
        if (flag := _flag(params, key)) is not None:
            setattr(dispatcher.behaviour, key, flag)
    return web.json_response(dispatcher.describe())


async def webhook_drain(request: web.Request) -> web.Response:
    params = await _params(request)
    limit = _number(params, "timeout") or 10.0
    left = await request.app[DISPATCHER_KEY].drain(limit)
    return web.json_response({"pending": left}, status=200 if left == 0 else 504)


async def webhook_deliveries(request: web.Request) -> web.Response:
    return web.json_response({"deliveries": request.app[DISPATCHER_KEY].log})


def _describe_dunning(policy: DunningPolicy) -> Json:
    return {"retry_days": list(policy.retry_days), "after_retries": policy.after_retries}


async def dunning(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    if request.method == "POST":
        params = await _params(request)
        raw = params.get("retry_days", list(state.dunning.retry_days))
        parts = raw.split(",") if isinstance(raw, str) else raw
        try:
            days = tuple(int(d) for d in parts if str(d).strip())
            after = params.get("after_retries", state.dunning.after_retries)
            state.dunning = DunningPolicy(retry_days=days, after_retries=after)
        except (TypeError, ValueError) as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
    return web.json_response(_describe_dunning(state.dunning))


async def rate_limit(request: web.Request) -> web.Response:
    limiter = request.app[STATE_KEY].rate_limiter
    if request.method == "POST":
        params = await _params(request)
        requests = _number(params, "requests")
        if requests is None or requests < 0:
            raise web.HTTPBadRequest(text="requests= must be a number >= 0")
        kind = params.get("kind") or "rate_limit"
        if kind not in KINDS:
            raise web.HTTPBadRequest(text=f"kind must be one of {', '.join(KINDS)}")
        limiter.arm(int(requests), kind, params.get("api_key"))
    return web.json_response(limiter.describe())


async def health(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


def add_routes(app: web.Application) -> None:
    app.router.add_post("/_fake/reset", reset)
    app.router.add_get("/_fake/clock", clock)
    app.router.add_post("/_fake/clock/advance", clock_advance)
    app.router.add_post("/_fake/webhooks/behaviour", webhook_behaviour)
    app.router.add_post("/_fake/webhooks/drain", webhook_drain)
    app.router.add_get("/_fake/webhooks/deliveries", webhook_deliveries)
    app.router.add_get("/_fake/billing/dunning", dunning)
    app.router.add_post("/_fake/billing/dunning", dunning)
    app.router.add_get("/_fake/rate_limit", rate_limit)
    app.router.add_post("/_fake/rate_limit", rate_limit)
    app.router.add_get("/_fake/health", health)
