"""Requests aiohttp's HTTP parser rejects get our JSON error shape, never an echo.

aiohttp parses a request before any middleware runs. When its parser refuses one (a
control byte in a header value, a request line or header line over 8190 bytes, a
lowercase method, a ``Content-Encoding`` it cannot decode…), ``RequestHandler.
handle_error`` answers ``text/plain`` with the parser's message, which quotes the
offending bytes (an API key included), and logs that message at ERROR with a traceback.

aiohttp 3.14 has no supported hook for that reply (aio-libs/aiohttp#3287, still open):

* middlewares never see the request, and ``on_response_prepare`` is not sent for it
  (it has no route, so no ``match_info`` to find the app's signal through);
* ``handler_args`` (``web.Application``, ``AppRunner``, ``TestServer``) only become
  keyword arguments of ``RequestHandler.__init__``: none chooses the reply;
* ``request_factory`` builds the request object; the error handler that answers it is
  bound before the factory is called.

So, in this one module: :class:`_RequestHandler` overrides ``handle_error`` for parser
errors only (everything else goes to aiohttp's own), :class:`_Server` makes a
connection's protocol that subclass instead of ``RequestHandler``, and :func:`install`
wraps the app's (private) ``Application._make_handler`` so the server it returns is a
:class:`_Server`. That method is the one both ``web.run_app`` and pytest-aiohttp's
``aiohttp_client(app)`` reach, through ``AppRunner._make_server``, so an app factory
calling :func:`install` behaves the same in production and in tests
(``billfold.service.run`` calls it too, for any app whose factory forgot).

Two more things aiohttp answers or logs outside our middlewares are handled here, on
the same server:

* an ``Expect`` header other than ``100-continue``: aiohttp's router answers it before
  the middlewares with a ``text/plain`` 417 quoting the header (no request id, no access
  log line, no metric). :class:`_ExpectGuard`, wrapped around the server's request
  handler, passes such a request on without that header and marked
  (``EXPECT_REFUSED``), so ``error_middleware`` answers it like any other error;
* a body whose framing or ``Content-Encoding`` breaks after the handler answered
  (aiohttp reads an unread body to its end before reusing the connection): aiohttp logs
  that ``RequestPayloadError`` as "Unhandled exception" at ERROR with a traceback.
  :class:`_RequestHandler` logs one WARNING naming the decoder's error instead.

``libs/billfold/tests/test_malformed.py`` pins every aiohttp detail this relies on; if
an aiohttp upgrade breaks one, that test fails (and so does :func:`install`, at start-up,
if ``_make_handler`` is gone), rather than the key quietly coming back.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import hdrs, web
from aiohttp.http import HttpVersion11
from aiohttp.http_exceptions import HttpProcessingError
from multidict import CIMultiDict

from billfold.http.errors import ApiError
from billfold.http.middlewares import EXPECT_REFUSED, REQUEST_ID_HEADER, report_body_error
from billfold.http.middlewares import _new_request_id as new_request_id
from billfold.logs import get_logger

log = get_logger("billfold.http")

CODE = "request_malformed"
# Generic on purpose: nothing of the request is quoted back.
_MESSAGES = {
    400: "The request is not valid HTTP and could not be parsed.",
    413: "The request is too large.",
    414: "The request URL is too long.",
    431: "The request's header fields are too large.",
}


def _status(exc: HttpProcessingError, status: int) -> int:
    """aiohttp's own status for the error when it is a 4xx (in 3.14 always 400)."""
    for candidate in (exc.code, status):
        if 400 <= candidate < 500:
            return candidate
    return 400


def malformed_response(exc: HttpProcessingError, status: int = 400) -> web.Response:
    """The reply to a request the parser refused; logs one WARNING naming the class."""
    status = _status(exc, status)
    request_id = new_request_id()
    log.warning(
        "http_request_malformed", error=type(exc).__name__, status=status, request_id=request_id
    )
    error = ApiError(
        status,
        "invalid_request_error",
        CODE,
        _MESSAGES.get(status, _MESSAGES[400]),
        headers={REQUEST_ID_HEADER: request_id},
    )
    response = error.response(request_id)
    # The parser's state is unknown after an error: this connection is done.
    response.force_close()
    return response


class _RequestHandler(web.RequestHandler):
    """aiohttp's per-connection protocol, answering parser errors in our shape."""

    __slots__ = ()

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if not isinstance(exc, HttpProcessingError):
            # A handler's crash or timeout outside our middlewares: aiohttp's reply (no
            # echo of the request there) and its ERROR log line (redacted by billfold.logs).
            return super().handle_error(request, status, exc, message)
        # As aiohttp does: once bytes of a response went out, no other can follow.
        if request.writer.output_size > 0:
            raise ConnectionError("Response is sent already, cannot send the error")
        return malformed_response(exc, status)

    def log_exception(self, *args: Any, **kw: Any) -> None:
        exc = kw.get("exc_info")
        if isinstance(exc, web.RequestPayloadError):
            # Reading the rest of an unread body failed (bad framing or encoding) after
            # the response went out: the client's fault, one line, nothing of the body.
            report_body_error(exc)
            return
        super().log_exception(*args, **kw)


RequestHandlerFunc = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


class _ExpectGuard:
    """The server's request handler, with an unsupported ``Expect`` taken out of
    aiohttp's hands (see the module docstring)."""

    def __init__(self, handler: RequestHandlerFunc) -> None:
        self.handler = handler

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        expect = request.headers.get(hdrs.EXPECT)
        # The cases aiohttp's default expect handler refuses: HTTP/1.1, a value that is
        # not 100-continue (aiohttp ignores an empty one, and Expect under HTTP/1.0).
        if expect and request.version == HttpVersion11 and expect.lower() != "100-continue":
            headers = CIMultiDict(request.headers)
            del headers[hdrs.EXPECT]
            request = request.clone(headers=headers)
            request[EXPECT_REFUSED] = True
        return await self.handler(request)


class _Server(web.Server):
    """``web.Server`` whose connections get :class:`_RequestHandler`. No state of its
    own: :func:`install` turns the server aiohttp built into one."""

    __slots__ = ()

    def __call__(self) -> web.RequestHandler:
        return _RequestHandler(self, loop=self._loop, **self._kwargs)


class _MakeHandler:
    """Stands in for ``app._make_handler``: aiohttp's server, made a :class:`_Server`."""

    def __init__(self, make_handler: Any) -> None:
        self.make_handler = make_handler

    def __call__(self, *args: Any, **kwargs: Any) -> web.Server:
        server = self.make_handler(*args, **kwargs)
        if not isinstance(server, web.Server):  # pragma: no cover - an aiohttp change
            raise TypeError(f"aiohttp's _make_handler returned {type(server).__name__}")
        # Same layout (the subclass adds no attribute), only __call__ differs.
        server.__class__ = _Server
        server.request_handler = _ExpectGuard(server.request_handler)
        return server


def install(app: web.Application) -> None:
    """Make ``app`` answer requests aiohttp's parser rejects with a Stripe-shaped JSON
    400 (``request_malformed``), quoting nothing. Call it before the app starts
    (from the app factory); calling it again does nothing."""
    make_handler = getattr(app, "_make_handler", None)
    if make_handler is None:
        raise RuntimeError(
            "aiohttp.web.Application._make_handler is gone: billfold.http.malformed "
            "needs a new way to reach the server (see its docstring)"
        )
    if isinstance(make_handler, _MakeHandler):
        return
    # An instance attribute shadowing the method, on this app only. (Under python -X dev
    # aiohttp warns that setting an Application attribute "is discouraged": expected.)
    app._make_handler = _MakeHandler(make_handler)  # type: ignore[method-assign]
