"""Webhook endpoints (Stripe's ``/v1/webhook_endpoints`` API) and signed event delivery.

Deliveries are signed exactly like Stripe's: ``Stripe-Signature: t=<unix>,v1=<hex>`` where
``v1`` is HMAC-SHA256 of ``"<t>.<raw body>"`` with the endpoint's ``whsec_`` secret. ``t`` is
real wall time, not the fake clock: receivers check it against their own clock (five
minutes tolerance in ``stripe.Webhook.construct_event``), and advancing the fake clock by a
month must not make every signature stale.

Failed deliveries (non-2xx or connection errors) are retried with exponential backoff; the
test switch :class:`DeliveryBehaviour` delays, duplicates and reorders deliveries.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import aiohttp
from stripe.params import (
    WebhookEndpointCreateParams,
    WebhookEndpointDeleteParams,
    WebhookEndpointListParams,
    WebhookEndpointRetrieveParams,
    WebhookEndpointUpdateParams,
)

from . import shapes
from .errors import invalid
from .forms import get_bool, get_list, get_str, merge_metadata, req_str
from .lists import paginate
from .params import Allow
from .routing import Ctx, Routes
from .state import FakeState

Json = dict[str, Any]
routes = Routes()


def sign(payload: str, secret: str, timestamp: int | None = None) -> str:
    """The ``Stripe-Signature`` header value for ``payload``."""
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{t}.{payload}".encode(), hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


@dataclass
class DeliveryBehaviour:
    """Test switch: make delivery misbehave the ways Stripe is allowed to."""

    delay: float = 0.0  #: seconds to wait before sending each batch
    duplicate: bool = False  #: send every event twice (same event id)
    #: hold deliveries until the queue has been quiet for ``reorder_window`` seconds (or a
    #: drain is requested), then send that batch in reverse order
    reorder: bool = False
    reorder_window: float = 0.2


@dataclass
class RetryPolicy:
    """Stripe retries for up to three days; tests want milliseconds."""

    attempts: int = 5  #: total tries per delivery
    backoff: float = 1.0  #: first retry after this many seconds, doubling each time
    timeout: float = 10.0  #: per-request timeout


@dataclass
class Delivery:
    endpoint_id: str
    url: str
    secret: str
    event_id: str
    event_type: str
    payload: str
    generation: int
    attempt: int = 0


@dataclass
class Dispatcher:
    """Queues an event for every matching endpoint and posts them in the background."""

    state: FakeState
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    behaviour: DeliveryBehaviour = field(default_factory=DeliveryBehaviour)
    log: list[Json] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._queue: list[Delivery] = []
        self._outstanding = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._worker: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._session: aiohttp.ClientSession | None = None
        self._flush = False
        self._generation = 0  # bumped by clear(): deliveries from before a reset are dropped
        self.state.event_listeners.append(self.on_event)

    # --- enqueueing (synchronous, called from handlers) -------------------------------------

    def on_event(self, event: Json) -> None:
        targets = [
            ep
            for ep in self.state.newest_first("webhook_endpoint")[::-1]
            if ep["status"] == "enabled"
            and ("*" in ep["enabled_events"] or event["type"] in ep["enabled_events"])
        ]
        if not targets:
            return
        event["pending_webhooks"] = len(targets)
        payload = json.dumps(self.state.render(event), indent=2)
        for ep in targets:
            self._queue.append(
                Delivery(
                    ep["id"],
                    ep["url"],
                    ep["_secret"],
                    event["id"],
                    event["type"],
                    payload,
                    self._generation,
                )
            )
            self._outstanding += 1
        self._kick()

    def _kick(self) -> None:
        if self._wake is None:
            self._wake = asyncio.Event()
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._run())
        self._wake.set()

    # --- sending ------------------------------------------------------------------------------

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self.behaviour.delay:
                await asyncio.sleep(self.behaviour.delay)
            if self.behaviour.reorder:
                await self._gather_batch()
            self._flush = False
            batch, self._queue = self._queue, []
            if self.behaviour.reorder:
                batch.reverse()
            for delivery in batch:
                await self._send(delivery)

    async def _gather_batch(self) -> None:
        # Events from consecutive API calls arrive one by one; to reorder them they must be
        # held together first. A drain() request releases the batch at once.
        assert self._wake is not None
        while not self._flush:
            try:
                await asyncio.wait_for(self._wake.wait(), self.behaviour.reorder_window)
            except TimeoutError:
                return
            self._wake.clear()

    async def _post(self, delivery: Delivery) -> int | None:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.retry.timeout)
            )
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
            "Stripe-Signature": sign(delivery.payload, delivery.secret),
        }
        try:
            async with self._session.post(
                delivery.url, data=delivery.payload.encode(), headers=headers
            ) as resp:
                await resp.read()
                return resp.status
        except (aiohttp.ClientError, TimeoutError, OSError):
            return None

    async def _send(self, delivery: Delivery) -> None:
        if delivery.generation != self._generation:
            return
        delivery.attempt += 1
        status = await self._post(delivery)
        if delivery.generation != self._generation:
            return  # reset while the request was in flight
        ok = status is not None and 200 <= status < 300
        self.log.append(
            {
                "event": delivery.event_id,
                "type": delivery.event_type,
                "endpoint": delivery.endpoint_id,
                "attempt": delivery.attempt,
                "status": status,
                "ok": ok,
                "at": time.monotonic(),
            }
        )
        if ok and self.behaviour.duplicate:
            await self._post(delivery)
        if ok or delivery.attempt >= self.retry.attempts:
            self._finish(delivery, ok)
            return
        delay = self.retry.backoff * 2 ** (delivery.attempt - 1)
        task = asyncio.get_running_loop().create_task(self._retry_later(delivery, delay))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _retry_later(self, delivery: Delivery, delay: float) -> None:
        await asyncio.sleep(delay)
        self._queue.append(delivery)
        self._kick()

    def _finish(self, delivery: Delivery, ok: bool) -> None:
        self._outstanding -= 1
        event = self.state.find("event", delivery.event_id)
        if ok and event is not None:
            event["pending_webhooks"] = max(0, int(event["pending_webhooks"]) - 1)

    # --- control ------------------------------------------------------------------------------

    @property
    def outstanding(self) -> int:
        return self._outstanding

    async def drain(self, limit: float = 10.0) -> int:
        """Wait up to ``limit`` seconds until every queued delivery succeeded or gave up
        (retries included); returns how many are still outstanding."""
        if self._outstanding and self._wake is not None:
            self._flush = True
            self._wake.set()
        deadline = time.monotonic() + limit
        # Polling keeps this simple; deliveries finish in milliseconds under test settings.
        while self._outstanding and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.005)
        return self._outstanding

    def clear(self) -> None:
        """Drop queued deliveries and retries (on reset)."""
        for task in list(self._tasks):
            task.cancel()
        self._generation += 1
        self._queue.clear()
        self._outstanding = 0
        self.log.clear()

    async def close(self) -> None:
        self.clear()
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        if self._session is not None:
            await self._session.close()

    def describe(self) -> Json:
        return {"behaviour": asdict(self.behaviour), "retry": asdict(self.retry)}


# --- /v1/webhook_endpoints -------------------------------------------------------------------


def _events_param(ctx: Ctx) -> list[str]:
    events = [str(e) for e in get_list(ctx.params, "enabled_events")]
    for name in events:
        if name != "*" and "." not in name:
            raise invalid(f"Invalid event type: {name}", param="enabled_events")
    return events


def _check_url(url: str) -> str:
    if not url.startswith(("http://", "https://")):
        raise invalid("Invalid URL: must be an http(s) URL", param="url", code="url_invalid")
    return url


@routes.post("/v1/webhook_endpoints", params=Allow(WebhookEndpointCreateParams))
def create_endpoint(ctx: Ctx) -> Json:
    url = _check_url(req_str(ctx.params, "url"))
    events = _events_param(ctx)
    if not events:
        raise invalid("Missing required param: enabled_events.", param="enabled_events")
    ep = shapes.blank("webhook_endpoint")
    ep.update(
        id=ctx.state.new_id("we_"),
        created=ctx.state.clock.now(),
        url=url,
        enabled_events=events,
        description=get_str(ctx.params, "description"),
        api_version=get_str(ctx.params, "api_version"),
        metadata=merge_metadata({}, ctx.params.get("metadata")),
        _secret="whsec_" + ctx.state.new_id("", 32),
    )
    ctx.state.add("webhook_endpoint", ep)
    # Stripe returns the signing secret once, on creation only.
    return {**ctx.state.render(ep), "secret": ep["_secret"]}


@routes.get("/v1/webhook_endpoints/{id}", params=Allow(WebhookEndpointRetrieveParams))
def retrieve_endpoint(ctx: Ctx) -> Json:
    return ctx.state.render(ctx.state.get("webhook_endpoint", ctx.arg("id")))


@routes.post("/v1/webhook_endpoints/{id}", params=Allow(WebhookEndpointUpdateParams))
def update_endpoint(ctx: Ctx) -> Json:
    ep = ctx.state.get("webhook_endpoint", ctx.arg("id"))
    if (url := get_str(ctx.params, "url")) is not None:
        ep["url"] = _check_url(url)
    if "enabled_events" in ctx.params:
        ep["enabled_events"] = _events_param(ctx)
    if (disabled := get_bool(ctx.params, "disabled")) is not None:
        ep["status"] = "disabled" if disabled else "enabled"
    if "description" in ctx.params:
        ep["description"] = get_str(ctx.params, "description") or None
    ep["metadata"] = merge_metadata(ep["metadata"], ctx.params.get("metadata"))
    return ctx.state.render(ep)


@routes.get("/v1/webhook_endpoints", params=Allow(WebhookEndpointListParams))
def list_endpoints(ctx: Ctx) -> Json:
    rows = ctx.state.newest_first("webhook_endpoint")
    return paginate(rows, ctx.params, "/v1/webhook_endpoints", ctx.state.render, "webhook_endpoint")


@routes.delete("/v1/webhook_endpoints/{id}", params=Allow(WebhookEndpointDeleteParams))
def delete_endpoint(ctx: Ctx) -> Json:
    ep = ctx.state.get("webhook_endpoint", ctx.arg("id"))
    ep["_deleted"] = True
    ep["status"] = "disabled"
    gone = shapes.blank("deleted_webhook_endpoint")
    gone["id"] = ep["id"]
    return gone
