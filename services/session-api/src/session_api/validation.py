"""Request parameters: reading the body, and pydantic errors in Stripe's shape."""

from __future__ import annotations

import json
from typing import Any, TypeVar
from urllib.parse import parse_qsl

from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from billfold.http.body import read_bytes
from billfold.http.errors import ApiError
from session_api import forms
from session_api.state import SETTINGS

M = TypeVar("M", bound=BaseModel)

JSON = "application/json"
FORM = "application/x-www-form-urlencoded"

# Discriminated unions put the tag into the error location ("flow",
# "subscription_cancel", "subscription"); clients know the field as flow[subscription].
_UNION_TAGS = frozenset({"payment_method_update", "subscription_cancel"})


async def read_body(request: web.Request) -> dict[str, Any]:
    """The body's parameters as a dict; {} when there is no body."""
    if not request.body_exists:
        return {}
    # read() raises 413 (via client_max_size) for a body that lied about its length;
    # a body that has not all arrived within body_read_timeout is a 408.
    try:
        raw = await read_bytes(request, request.app[SETTINGS].body_read_timeout)
    except RequestPayloadError:
        # A body aiohttp could not decode: Content-Encoding gzip/deflate over bytes that
        # are not, a broken chunked encoding. The client's fault, so a 400, not a 500.
        raise ApiError(
            400,
            "invalid_request_error",
            "body_invalid_encoding",
            "The body could not be decoded: check its Content-Encoding and framing.",
        ) from None
    if not raw.strip():
        return {}
    ctype = request.content_type
    if ctype == JSON:
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError):
            raise ApiError(
                400, "invalid_request_error", "body_invalid_json", "The body is not valid JSON."
            ) from None
        if not isinstance(data, dict):
            raise ApiError(
                400, "invalid_request_error", "body_invalid_json", "The body must be a JSON object."
            )
        return data
    if ctype == FORM:
        try:
            text = raw.decode("utf-8")
            # errors="strict": a percent-escape that is not UTF-8 (%FF) is a 400, not a
            # U+FFFD silently stored or looked up in its place.
            pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=True, errors="strict")
        except ValueError:
            raise ApiError(
                400, "invalid_request_error", "body_invalid_form", "The form body is malformed."
            ) from None
        return forms.decode(pairs)
    raise ApiError(
        415,
        "invalid_request_error",
        "unsupported_media_type",
        f"Unsupported Content-Type {ctype!r}: send {JSON} or {FORM}.",
    )


def read_query(request: web.Request) -> dict[str, str]:
    """The query string's parameters as a dict; a name given twice is a 400.

    ``dict(request.query)`` would keep the first value silently, where the same repeat
    in a form body is refused: which one counts must not depend on who reads it.
    """
    params: dict[str, str] = {}
    for name, value in request.query.items():
        if name in params:
            raise ApiError(
                400,
                "invalid_request_error",
                "parameter_invalid",
                f"Query parameter {name} given more than once.",
                name,
            )
        params[name] = value
    return params


def param_path(loc: tuple[int | str, ...]) -> str:
    parts = [str(p) for p in loc]
    kept: list[str] = []
    for i, part in enumerate(parts):
        if i > 0 and part in _UNION_TAGS and parts[i - 1] == "flow":
            continue
        kept.append(part)
    if not kept:
        return ""
    return kept[0] + "".join(f"[{p}]" for p in kept[1:])


def to_api_error(err: ErrorDetails) -> ApiError:
    param = param_path(err["loc"])
    kind = err["type"]
    if kind == "extra_forbidden":
        return ApiError(
            400,
            "invalid_request_error",
            "parameter_unknown",
            f"Received unknown parameter: {param}.",
            param,
        )
    if kind in ("missing", "union_tag_not_found"):
        if kind == "union_tag_not_found":
            param += "[type]"
        return ApiError(
            400,
            "invalid_request_error",
            "parameter_missing",
            f"Missing required param: {param}.",
            param,
        )
    if kind == "union_tag_invalid":
        param += "[type]"
        ctx = err.get("ctx") or {}
        return ApiError(
            400,
            "invalid_request_error",
            "parameter_invalid",
            f"Invalid {param}: must be one of {ctx.get('expected_tags', 'the documented values')}.",
            param,
        )
    message = err["msg"].removeprefix("Value error, ")
    return ApiError(
        400,
        "invalid_request_error",
        "parameter_invalid",
        f"Invalid {param or 'body'}: {message}.",
        param or None,
    )


MAX_DEPTH = 16


def _reject_unstorable(value: Any, path: tuple[int | str, ...]) -> None:
    """Postgres text cannot hold NUL or lone surrogates: a 400 here, not a 500 later.
    Nesting is bounded too (no parameter of this API nests beyond three levels)."""
    if len(path) > MAX_DEPTH:
        raise ApiError(
            400,
            "invalid_request_error",
            "parameter_invalid",
            "Parameters are nested too deeply.",
            param_path(path[:1]) or None,
        )
    if isinstance(value, str):
        if "\x00" in value or not _encodable(value):
            param = param_path(path) or None
            raise ApiError(
                400,
                "invalid_request_error",
                "parameter_invalid",
                f"Invalid {param}: contains characters that are not allowed.",
                param,
            )
    elif isinstance(value, dict):
        for k, v in value.items():
            if isinstance(k, str) and ("\x00" in k or not _encodable(k)):
                parent = param_path(path)
                raise ApiError(
                    400,
                    "invalid_request_error",
                    "parameter_unknown",
                    "Received a parameter name with characters that are not allowed"
                    + (f" in {parent}." if parent else "."),
                    parent or None,
                )
            _reject_unstorable(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _reject_unstorable(v, (*path, i))


def _encodable(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def path_param(value: str) -> str | None:
    """An id from the URL, or None if it cannot name anything (caller answers 404)."""
    if not value or len(value) > 255 or "\x00" in value or not _encodable(value):
        return None
    return value


def validate(model: type[M], data: dict[str, Any]) -> M:
    _reject_unstorable(data, ())
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        raise to_api_error(errors[0]) from None
