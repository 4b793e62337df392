"""Request parameters: reading the body, and pydantic errors in Stripe's shape."""

from __future__ import annotations

import json
from dataclasses import dataclass
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


@dataclass(frozen=True, slots=True)
class Params:
    """A request's parameters, and whether they arrived as text (a form body or a query
    string: the models then read the documented spellings of booleans and integers)."""

    values: dict[str, Any]
    text: bool = False


class _Repeated(dict[str, Any]):
    """A JSON object that named a key twice. ``json``'s hook sees one object at a time,
    not where it sits, so the error (which names the full parameter) is raised later."""

    def __init__(self, pairs: list[tuple[str, Any]], repeated: str) -> None:
        super().__init__(pairs)
        self.repeated = repeated


def _json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) == len(pairs):
        return obj
    seen: set[str] = set()
    for name, _ in pairs:
        if name in seen:
            return _Repeated(pairs, name)
        seen.add(name)
    raise AssertionError("unreachable: fewer keys than pairs means a repeat")


def _reject_repeated_keys(data: Any) -> None:
    """A key given twice is a 400 naming it, at any depth, as it is for a form body or a
    query string; json.loads alone would keep the last value silently."""
    stack: list[tuple[Any, tuple[int | str, ...]]] = [(data, ())]
    while stack:  # iterative: json nests up to the interpreter's recursion limit
        value, path = stack.pop()
        if isinstance(value, _Repeated):
            name = value.repeated
            nameable = "\x00" not in name and _encodable(name)
            param = param_path((*path, name) if nameable else path) or None
            raise ApiError(
                400,
                "invalid_request_error",
                "parameter_invalid",
                f"JSON key {param} given more than once."
                if nameable
                else "A JSON key is given more than once.",
                param,
            )
        if isinstance(value, dict):
            stack.extend((v, (*path, k)) for k, v in reversed(value.items()))
        elif isinstance(value, list):
            stack.extend((v, (*path, i)) for i, v in reversed(list(enumerate(value))))


async def read_body(request: web.Request) -> Params:
    """The body's parameters; none when there is no body."""
    if not request.body_exists:
        return Params({})
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
        return Params({})
    ctype = request.content_type
    if ctype == JSON:
        try:
            data = json.loads(raw, object_pairs_hook=_json_object)
        except (ValueError, RecursionError):
            raise ApiError(
                400, "invalid_request_error", "body_invalid_json", "The body is not valid JSON."
            ) from None
        if not isinstance(data, dict):
            raise ApiError(
                400, "invalid_request_error", "body_invalid_json", "The body must be a JSON object."
            )
        _reject_repeated_keys(data)
        return Params(data)
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


def validate(model: type[M], params: Params) -> M:
    """Strict validation: no type is coerced into another, except the documented text
    spellings of booleans and integers in a form body or a query string (forms.Bool,
    forms.Int)."""
    _reject_unstorable(params.values, ())
    try:
        return model.model_validate(params.values, strict=True, context={forms.TEXT: params.text})
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        raise to_api_error(errors[0]) from None
