"""Stripe-shaped JSON errors: ``{"error": {"type", "code", "message", "param"}}``.

Handlers raise ``ApiError``; the error middleware renders it, and turns aiohttp's own
HTTP exceptions (unknown route, wrong method, body too large) into the same shape, so a
client never sees HTML or a stack trace.
"""

from __future__ import annotations

from typing import Any, Literal

from aiohttp import web

from billfold.http.responses import json_response

ErrorType = Literal[
    "invalid_request_error",
    "card_error",
    "authentication_error",
    "permission_error",
    "idempotency_error",
    "rate_limit_error",
    "api_error",
]


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        type_: ErrorType,
        code: str,
        message: str,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.type = type_
        self.code = code
        self.message = message
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "type": self.type,
                "code": self.code,
                "message": self.message,
                "param": self.param,
            }
        }

    def response(self, request_id: str | None = None) -> web.Response:
        body = self.body()
        if request_id:
            body["error"]["request_id"] = request_id
        return json_response(body, status=self.status, headers=self.headers)


def invalid(message: str, param: str | None = None, code: str = "parameter_invalid") -> ApiError:
    return ApiError(400, "invalid_request_error", code, message, param)


def missing(param: str, message: str | None = None) -> ApiError:
    return ApiError(
        400,
        "invalid_request_error",
        "parameter_missing",
        message or f"Missing required param: {param}.",
        param,
    )


def not_found(what: str, ident: str, param: str | None = None) -> ApiError:
    return ApiError(
        404, "invalid_request_error", "resource_missing", f"No such {what}: '{ident}'", param
    )


def unauthorized(message: str) -> ApiError:
    return ApiError(
        401,
        "authentication_error",
        "api_key_invalid",
        message,
        headers={"WWW-Authenticate": 'Bearer realm="billfold"'},
    )


_HTTP_CODES: dict[int, tuple[ErrorType, str, str]] = {
    404: ("invalid_request_error", "route_not_found", "Unrecognized request URL."),
    405: ("invalid_request_error", "method_not_allowed", "Method not allowed for this URL."),
    413: ("invalid_request_error", "body_too_large", "Request body is too large."),
    415: ("invalid_request_error", "unsupported_media_type", "Unsupported content type."),
    417: (
        "invalid_request_error",
        "expectation_unsupported",
        "Only 'Expect: 100-continue' is supported.",
    ),
}


def from_http_exception(exc: web.HTTPException, method: str, path: str) -> ApiError:
    type_, code, message = _HTTP_CODES.get(
        exc.status, ("invalid_request_error", "http_error", exc.reason)
    )
    if exc.status == 404:
        message = f"Unrecognized request URL ({method}: {path})."
    headers = {}
    if exc.status == 405 and "Allow" in exc.headers:
        headers["Allow"] = exc.headers["Allow"]
    return ApiError(exc.status, type_, code, message, headers=headers)


def request_timeout(seconds: float) -> ApiError:
    return ApiError(
        408,
        "invalid_request_error",
        "request_timeout",
        f"The request body did not arrive within {seconds:g} seconds.",
    )


# Whole seconds, as the header wants; a saturated pool usually drains within one.
RETRY_AFTER_SECONDS = 1


def service_busy() -> ApiError:
    return ApiError(
        503,
        "api_error",
        "service_busy",
        "The service is busy; retry the request shortly.",
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


def body_invalid_encoding() -> ApiError:
    """A body aiohttp could not read: bad chunked framing, or a Content-Encoding (gzip,
    deflate) over bytes that are not."""
    return ApiError(
        400,
        "invalid_request_error",
        "body_invalid_encoding",
        "The body could not be decoded: check its Content-Encoding and framing.",
    )


def expectation_unsupported() -> ApiError:
    """An ``Expect`` header other than ``100-continue`` (the value is not quoted back)."""
    type_, code, message = _HTTP_CODES[417]
    return ApiError(417, type_, code, message)


def internal_error() -> ApiError:
    return ApiError(500, "api_error", "internal_error", "An internal error occurred.")
