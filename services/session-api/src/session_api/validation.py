"""Request parameters: reading the body, and pydantic errors in Stripe's shape."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import parse_qsl

from aiohttp import web
from pydantic import BaseModel
from pydantic_core import ErrorDetails

from billfold.http import json_params
from billfold.http.errors import ApiError
from session_api import forms
from session_api.state import SETTINGS

M = TypeVar("M", bound=BaseModel)

JSON = "application/json"
FORM = "application/x-www-form-urlencoded"

# Discriminated unions put the tag into the error location ("flow",
# "subscription_cancel", "subscription"); clients know the field as flow[subscription].
_UNION_TAGS = frozenset({"payment_method_update", "subscription_cancel"})


@dataclass(frozen=True, slots=True)
class Params:
    """A request's parameters, and whether they arrived as text (a form body or a query
    string: the models then read the documented spellings of booleans and integers)."""

    values: dict[str, Any]
    text: bool = False


async def read_body(request: web.Request) -> Params:
    """The body's parameters; none when there is no body."""
    if not request.body_exists:
        return Params({})
    # read() raises 413 (via client_max_size) for a body that lied about its length;
    # a body that has not all arrived within body_read_timeout is a 408.
    raw = await json_params.read_raw(request, request.app[SETTINGS].body_read_timeout)
    if not raw.strip():
        return Params({})
    ctype = request.content_type
    if ctype == JSON:
        return Params(json_params.loads_object(raw, param_path))
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
        return Params(forms.decode(pairs), text=True)
    raise ApiError(
        415,
        "invalid_request_error",
        "unsupported_media_type",
        f"Unsupported Content-Type {ctype!r}: send {JSON} or {FORM}.",
    )


def read_query(request: web.Request) -> Params:
    """The query string's parameters; a name given twice is a 400.

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
    return Params(params, text=True)


def param_path(loc: tuple[int | str, ...]) -> str:
    """Stripe's spelling of a parameter, without the discriminated unions' tags."""
    parts = [str(p) for p in loc]
    kept = [
        part
        for i, part in enumerate(parts)
        if not (i > 0 and part in _UNION_TAGS and parts[i - 1] == "flow")
    ]
    return json_params.param_path(tuple(kept))


def to_api_error(err: ErrorDetails) -> ApiError:
    return json_params.to_api_error(err, param_path)


def path_param(value: str) -> str | None:
    """An id from the URL, or None if it cannot name anything (caller answers 404)."""
    if not value or len(value) > 255 or "\x00" in value or not json_params.encodable(value):
        return None
    return value


def validate(model: type[M], params: Params) -> M:
    """Strict validation: no type is coerced into another, except the documented text
    spellings of booleans and integers in a form body or a query string (forms.Bool,
    forms.Int)."""
    return json_params.validate(
        model, params.values, context={forms.TEXT: params.text}, path_of=param_path
    )
