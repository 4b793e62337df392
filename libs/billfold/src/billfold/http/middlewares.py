"""Middlewares, outermost first: request id, access log + metrics, errors, body limit;
``standard_middleware`` is all four in one (what services use)."""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable, Sequence

import structlog
from aiohttp import web
from aiohttp.typedefs import Middleware as _AiohttpMiddleware
from prometheus_client import Counter, Histogram

from billfold.db import PoolTimeout
from billfold.http.client_ip import CLIENT_IP, Network, request_client_ip
from billfold.http.errors import (
    ApiError,
    body_invalid_encoding,
    expectation_unsupported,
    from_http_exception,
    internal_error,
    service_busy,
)
from billfold.logs import get_logger, plain_request_id

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# aiohttp's own Protocol (not a Callable alias), so the list types as Application's
# ``middlewares`` argument under mypy --strict.
Middleware = _AiohttpMiddleware

REQUEST_ID_HEADER = "X-Request-Id"
REQUEST_ID: web.RequestKey[str] = web.RequestKey("request_id", str)
# Set by billfold.http.malformed on a request whose Expect header aiohttp would have
# refused itself (before any middleware): error_middleware answers it instead.
EXPECT_REFUSED: web.RequestKey[bool] = web.RequestKey("expect_refused", bool)

HTTP_REQUESTS = Counter(
    "billfold_http_requests_total", "HTTP requests", ["service", "method", "route", "status"]
)
HTTP_LATENCY = Histogram(
    "billfold_http_request_duration_seconds",
    "HTTP request latency",
    ["service", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)

log = get_logger("billfold.http")


def _route_name(request: web.Request) -> str:
    # The route template, never the raw path: paths can carry tokens and ids.
    info = request.match_info.route.resource
    return info.canonical if info is not None else "unmatched"


def _new_request_id() -> str:
    # 128 random bits as 32 hex digits, the shape uuid4().hex had, without the UUID object.
    return "req_" + os.urandom(16).hex()


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    # A caller's id only if short and plain ([A-Za-z0-9._:-]{1,64}); otherwise our own.
    request_id = plain_request_id(request.headers.get(REQUEST_ID_HEADER)) or _new_request_id()
    request[REQUEST_ID] = request_id
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(request_id=request_id)
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        exc.headers[REQUEST_ID_HEADER] = request_id
        raise
    response.headers[REQUEST_ID_HEADER] = request_id
    return response


Counting = Callable[[str, str, int, float], None]


def _counter(service: str) -> Counting:
    """Counts a request in the metrics. The labelled metric children are made once per
    (method, route, status) / route: ``.labels()`` on every request costs more than the
    observation itself."""
    counters: dict[tuple[str, str, int], Counter] = {}
    histograms: dict[str, Histogram] = {}

    def count(method: str, route: str, status: int, elapsed: float) -> None:
        counter = counters.get((method, route, status))
        if counter is None:
            if len(counters) >= 10_000:  # methods are client-chosen: stay bounded
                counters.clear()
            counter = counters[(method, route, status)] = HTTP_REQUESTS.labels(
                service, method, route, str(status)
            )
        counter.inc()
        histogram = histograms.get(route)
        if histogram is None:
            histogram = histograms[route] = HTTP_LATENCY.labels(service, route)
        histogram.observe(elapsed)

    return count


_UNLOGGED_ROUTES = frozenset(("/healthz", "/readyz", "/metrics"))


def _access_line(
    request: web.Request, count: Counting, status: int, start: float, client: str | None
) -> None:
    """The request's metrics and its one access-log line."""
    elapsed = time.perf_counter() - start
    route = _route_name(request)
    count(request.method, route, status, elapsed)
    if route not in _UNLOGGED_ROUTES:
        log.info(
            "http_request",
            method=request.method,
            path=request.path,
            route=route,
            status=status,
            duration_ms=round(elapsed * 1000, 2),
            remote=client,
        )


def access_log_middleware(service: str, trusted_proxies: Sequence[Network] = ()) -> Middleware:
    """Logs and counts every request, and sets ``request[CLIENT_IP]`` (the client behind
    our trusted proxies, see ``billfold.http.client_ip``) for whatever records an IP."""
    count = _counter(service)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        start = time.perf_counter()
        client = request_client_ip(request, trusted_proxies) if trusted_proxies else request.remote
        if client is not None:
            request[CLIENT_IP] = client
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            _access_line(request, count, status, start, client)

    return middleware


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        if request.get(EXPECT_REFUSED):
            raise expectation_unsupported()
        return await handler(request)
    except Exception as exc:  # each kind is answered in _error_response
        return _error_response(request, exc)


def _error_response(request: web.Request, exc: Exception) -> web.StreamResponse:
    """What a request that raised ``exc`` gets: a JSON error, or ``exc`` raised again
    (redirects and 204s pass through). Call it from an ``except`` block."""
    request_id = request.get(REQUEST_ID)
    if isinstance(exc, ApiError):
        return exc.response(request_id)
    if isinstance(exc, PoolTimeout):
        # Not a bug: the database pool stayed saturated for the allowed wait. Shed the
        # request with a retryable 503 rather than queue it behind the others.
        return service_busy().response(request_id)
    if isinstance(exc, web.HTTPException):
        if exc.status < 400:
            raise exc  # redirects and 204s pass through
        return from_http_exception(exc, request.method, request.path).response(request_id)
    if isinstance(exc, web.RequestPayloadError):
        # The body's framing or Content-Encoding is broken: the client's fault. One line,
        # no traceback; the connection is closed, its stream cannot be read any further.
        report_body_error(exc)
        response = body_invalid_encoding().response(request_id)
        response.force_close()
        return response
    # The only path to a 500: a bug or a dependency failure, never bad input.
    log.exception("unhandled_error", method=request.method, route=_route_name(request))
    return internal_error().response(request_id)


def report_body_error(exc: web.RequestPayloadError) -> None:
    """One WARNING per unreadable body, naming what the parser raised (never its text,
    which may quote the body). aiohttp raises the same exception object again when it
    reads the rest of the body after the response (``billfold.http.malformed``): the
    second time logs nothing."""
    if getattr(exc, "_billfold_reported", False):
        return
    exc._billfold_reported = True  # type: ignore[attr-defined]
    cause = exc.__cause__
    error = type(cause).__name__ if cause is not None else type(exc).__name__
    log.warning("http_request_body_invalid", error=error)


def _too_large(max_bytes: int) -> ApiError:
    return ApiError(
        413,
        "invalid_request_error",
        "body_too_large",
        f"Request body is larger than {max_bytes} bytes.",
    )


def body_limit_middleware(max_bytes: int) -> Middleware:
    """Refuse a declared-too-large body before reading it; aiohttp's client_max_size
    catches chunked bodies that lie about (or omit) their length.

    It looks only at the ``Content-Length`` header, before the handler runs: a declared
    10 MB request is a 413 before authentication, before a pool connection is taken and
    before a single body byte is read (client_max_size only acts while reading, after
    the handler authenticated the caller; tests pin that this middleware answers)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        length = request.content_length
        if length is not None and length > max_bytes:
            raise _too_large(max_bytes)
        return await handler(request)

    return middleware


def standard_middleware(
    service: str, max_body_bytes: int, trusted_proxies: Sequence[Network] = ()
) -> Middleware:
    """The four layers above (request id, access log + metrics, errors, body limit) as
    one middleware, with the same behaviour in the same order.

    Every request of every service passes through them; as four aiohttp middlewares each
    request paid four extra coroutine and ``partial`` layers for it. The separate
    middlewares stay for code that wants one of them alone; this is what services use
    (through :func:`standard_middlewares`)."""
    count = _counter(service)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        # request_id_middleware
        request_id = plain_request_id(request.headers.get(REQUEST_ID_HEADER)) or _new_request_id()
        request[REQUEST_ID] = request_id
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        # access_log_middleware
        start = time.perf_counter()
        client = request_client_ip(request, trusted_proxies) if trusted_proxies else request.remote
        if client is not None:
            request[CLIENT_IP] = client
        status = 500
        try:
            # error_middleware around body_limit_middleware around the handler.
            try:
                if request.get(EXPECT_REFUSED):
                    raise expectation_unsupported()
                length = request.content_length
                if length is not None and length > max_body_bytes:
                    raise _too_large(max_body_bytes)
                response = await handler(request)
            except Exception as exc:  # each kind is answered in _error_response
                response = _error_response(request, exc)
            status = response.status
        except web.HTTPException as exc:
            status = exc.status
            exc.headers[REQUEST_ID_HEADER] = request_id
            raise
        finally:
            _access_line(request, count, status, start, client)
        response.headers[REQUEST_ID_HEADER] = request_id
        return response

    return middleware


def standard_middlewares(
    service: str, max_body_bytes: int, trusted_proxies: Sequence[Network] = ()
) -> list[Middleware]:
    return [standard_middleware(service, max_body_bytes, trusted_proxies)]
