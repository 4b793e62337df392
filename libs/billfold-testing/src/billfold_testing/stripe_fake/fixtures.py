"""pytest fixtures: a fresh fake Stripe per test, configured ``stripe`` clients, and a real
webhook receiver.

The fake and the receiver each run on their own event loop in a background thread, so both
the blocking ``stripe`` client (in sync or async tests) and the async client work against
them without deadlocking the test's own loop.

Registered as the ``billfold_stripe_fake`` pytest11 entry point, so any package with
billfold-testing installed gets: ``stripe_fake``, ``stripe_client``, ``stripe_async_client``,
``webhook_receiver``, ``stripe_webhook``.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
import pytest_asyncio
import stripe
from aiohttp import web

from .app import create_app
from .clock import advance as _advance
from .control import DISPATCHER_KEY
from .dunning import AfterRetries, DunningPolicy
from .limits import Kind
from .routing import STATE_KEY
from .state import FakeState
from .webhooks import Dispatcher, RetryPolicy

T = TypeVar("T")
Json = dict[str, Any]
API_KEY = "sk_test_billfold_fake_0000000000"
#: fast retries so a failing receiver costs milliseconds, not hours
TEST_RETRY = RetryPolicy(attempts=4, backoff=0.02, timeout=5.0)


class _LoopThread:
    """An aiohttp app served on 127.0.0.1:<free port> from a private event loop thread."""

    def __init__(self, app: web.Application, name: str) -> None:
        self.app = app
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._runner = web.AppRunner(app, access_log=None)
        self.port = 0

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        self.port = int(self._runner.addresses[0][1])
        self._ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self._runner.cleanup())
        self.loop.close()

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("server thread did not start")

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        """Run ``coro`` on the server's loop (the only place its state may be touched)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Callable[[], T]) -> T:
        async def wrapper() -> T:
            return fn()

        return self.run(wrapper())

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class StripeFake:
    """A running fake Stripe and handles to control it from tests."""

    def __init__(self, retry: RetryPolicy = TEST_RETRY) -> None:
        self._server = _LoopThread(create_app(retry=retry), "stripe-fake")
        self.api_key = API_KEY
        self._http_clients: list[stripe.HTTPClient] = []

    def start(self) -> StripeFake:
        self._server.start()
        self._server.app[STATE_KEY].base_url = self.base_url
        return self

    def stop(self) -> None:
        for http_client in self._http_clients:
            http_client.close()  # type: ignore[no-untyped-call]
        self._server.stop()

    @property
    def base_url(self) -> str:
        return self._server.url

    @property
    def state(self) -> FakeState:
        """Direct state access — read it only after :meth:`drain` or via :meth:`call`."""
        return self._server.app[STATE_KEY]

    @property
    def dispatcher(self) -> Dispatcher:
        return self._server.app[DISPATCHER_KEY]

    def call(self, fn: Callable[[], T]) -> T:
        return self._server.call(fn)

    def now(self) -> int:
        return self.call(self.state.clock.now)

    def advance(self, seconds: int) -> int:
        """Move the fake clock forward, running renewals, trial ends and cancellations."""
        return self.call(lambda: _advance(self.state, seconds))

    def drain(self, timeout: float = 10.0) -> None:
        """Wait until every webhook delivery queued so far succeeded or gave up."""
        left = self._server.run(self.dispatcher.drain(timeout), timeout + 5)
        if left:
            raise TimeoutError(f"{left} webhook deliveries still pending")

    def set_delivery(
        self,
        *,
        delay: float | None = None,
        duplicate: bool | None = None,
        reorder: bool | None = None,
    ) -> None:
        def apply() -> None:
            b = self.dispatcher.behaviour
            if delay is not None:
                b.delay = delay
            if duplicate is not None:
                b.duplicate = duplicate
            if reorder is not None:
                b.reorder = reorder

        self.call(apply)

    def set_dunning(
        self,
        *,
        retry_days: tuple[int, ...] | None = None,
        after_retries: AfterRetries | None = None,
    ) -> None:
        """Smart Retries settings: days between attempts, and the subscription's status once
        every retry failed (``canceled``, ``unpaid`` or ``past_due``)."""

        def apply() -> None:
            current = self.state.dunning
            self.state.dunning = DunningPolicy(
                retry_days=current.retry_days if retry_days is None else retry_days,
                after_retries=after_retries or current.after_retries,
            )

        self.call(apply)

    def rate_limit(
        self, requests: int, *, kind: Kind = "rate_limit", api_key: str | None = None
    ) -> None:
        """The next ``requests`` API requests (only those with ``api_key``, if given)
        answer Stripe's 429: ``rate_limit`` (the libraries do not retry it) or
        ``lock_timeout`` (``Stripe-Should-Retry: true``: they do)."""
        self.call(lambda: self.state.rate_limiter.arm(requests, kind, api_key))

    def rate_limited(self) -> int:
        """How many API requests were answered with a 429 so far."""
        return self.call(lambda: self.state.rate_limiter.limited)

    def deliveries(self) -> list[Json]:
        return self.call(lambda: list(self.dispatcher.log))

    def event_types(self) -> list[str]:
        """Types of all events so far, oldest first."""
        return self.call(lambda: [e["type"] for e in self.state.table("event").values()])

    def reset(self) -> None:
        def apply() -> None:
            self.state.reset()
            self.dispatcher.clear()

        self.call(apply)

    def client(self, **options: Any) -> stripe.StripeClient:
        """A ``stripe.StripeClient`` pointed at this fake (blocking HTTP)."""
        options.setdefault("max_network_retries", 0)
        if "http_client" not in options:
            # Owned here so stop() can close its connection pool.
            options["http_client"] = stripe.RequestsClient()
            self._http_clients.append(options["http_client"])
        return stripe.StripeClient(
            options.pop("api_key", self.api_key),
            base_addresses={"api": self.base_url},
            **options,
        )

    def async_client(self, **options: Any) -> stripe.StripeClient:
        """A client whose ``*_async`` methods use aiohttp (close its http_client after)."""
        options.setdefault("http_client", stripe.AIOHTTPClient())
        return self.client(**options)


@dataclass
class Received:
    headers: dict[str, str]
    body: str

    @property
    def json(self) -> Json:
        parsed: Json = json.loads(self.body)
        return parsed


@dataclass
class WebhookReceiver:
    """A real HTTP webhook receiver recording every request it gets.

    ``fail_next(n, status)`` makes the next ``n`` requests fail, to exercise retries.
    """

    received: list[Received] = field(default_factory=list)
    _failures: list[int] = field(default_factory=list)
    _lock: threading.Condition = field(default_factory=threading.Condition)

    def __post_init__(self) -> None:
        app = web.Application()
        app.router.add_post("/webhook", self._handle)
        self._server = _LoopThread(app, "webhook-receiver")

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.text()
        with self._lock:
            status = self._failures.pop(0) if self._failures else 200
            if status == 200:
                self.received.append(Received(dict(request.headers), body))
                self._lock.notify_all()
        return web.Response(status=status, text="ok" if status == 200 else "nope")

    @property
    def url(self) -> str:
        return self._server.url + "/webhook"

    def fail_next(self, count: int, status: int = 500) -> None:
        with self._lock:
            self._failures.extend([status] * count)

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self.received) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"got {len(self.received)} webhooks, wanted {count}")
                self._lock.wait(remaining)
            return list(self.received)

    def types(self) -> list[str]:
        with self._lock:
            return [str(r.json["type"]) for r in self.received]


def post_control(base_url: str, path: str, **params: Any) -> Json:
    """POST to a ``/_fake/...`` control endpoint (JSON in, JSON out)."""
    request = urllib.request.Request(  # noqa: S310 (loopback test server)
        base_url + path,
        data=json.dumps(params).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        result: Json = json.loads(response.read())
        return result


@pytest.fixture
def stripe_fake() -> Iterator[StripeFake]:
    """A fresh fake Stripe on a free loopback port, stopped after the test."""
    fake = StripeFake().start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def stripe_client(stripe_fake: StripeFake) -> stripe.StripeClient:
    """An official ``stripe.StripeClient`` talking to :func:`stripe_fake`."""
    return stripe_fake.client()


@pytest_asyncio.fixture
async def stripe_async_client(stripe_fake: StripeFake) -> AsyncIterator[stripe.StripeClient]:
    """Like :func:`stripe_client`, for ``await client.v1.<resource>.<verb>_async(...)``."""
    http_client = stripe.AIOHTTPClient()
    client = stripe_fake.client(http_client=http_client)
    yield client
    await http_client.close_async()  # type: ignore[no-untyped-call]


@pytest.fixture
def webhook_receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    receiver._server.start()
    try:
        yield receiver
    finally:
        receiver._server.stop()


@dataclass
class WebhookSetup:
    endpoint: Any
    secret: str
    receiver: WebhookReceiver


@pytest.fixture
def stripe_webhook(
    stripe_client: stripe.StripeClient, webhook_receiver: WebhookReceiver
) -> WebhookSetup:
    """A webhook endpoint for every event type (``*``), registered through Stripe's own API
    and pointing at :func:`webhook_receiver`."""
    endpoint = stripe_client.v1.webhook_endpoints.create(
        params={"url": webhook_receiver.url, "enabled_events": ["*"]}
    )
    return WebhookSetup(endpoint, str(endpoint.secret), webhook_receiver)
