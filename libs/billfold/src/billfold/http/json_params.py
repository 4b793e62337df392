"""Strict JSON request parameters, shared by every JSON API that takes a body.

* :func:`loads_object` reads a body as one JSON object, refusing a key given twice at
  any depth (``json.loads`` alone keeps the last value silently) with a 400 naming it;
* :func:`read_json_object` reads the request's body within a deadline and checks its
  content type, for an API that takes JSON only;
* :func:`validate` checks values against a pydantic model strictly (no type coerced
  into another) after refusing what Postgres text cannot hold, and turns the first error
  into a Stripe-shaped 400 with its ``param``.

Parameter paths are written Stripe's way: ``a[b][0]``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from billfold.http.body import read_bytes
from billfold.http.errors import ApiError, body_invalid_encoding

M = TypeVar("M", bound=BaseModel)

JSON = "application/json"
#: No parameter of our APIs nests beyond three levels; deeper is refused early.
MAX_DEPTH = 16

Loc = tuple[int | str, ...]
PathOf = Callable[[Loc], str]


def param_path(loc: Loc) -> str:
    """``("a", "b", 0)`` → ``a[b][0]``; ``()`` → ``""``."""
    parts = [str(p) for p in loc]
    if not parts:
        return ""
    return parts[0] + "".join(f"[{p}]" for p in parts[1:])


def encodable(value: str) -> bool:
    """Whether ``value`` is valid UTF-8 text (no lone surrogates)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


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


def _reject_repeated_keys(data: Any, path_of: PathOf) -> None:
    stack: list[tuple[Any, Loc]] = [(data, ())]
    while stack:  # iterative: json nests up to the interpreter's recursion limit
        value, path = stack.pop()
        if isinstance(value, _Repeated):
            name = value.repeated
            nameable = "\x00" not in name and encodable(name)
            param = path_of((*path, name) if nameable else path) or None
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


def loads_object(raw: bytes, path_of: PathOf = param_path) -> dict[str, Any]:
    """``raw`` as one JSON object, or a 400: not JSON, not an object, a key repeated."""
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
    _reject_repeated_keys(data, path_of)
    return data


async def read_raw(request: web.Request, deadline_s: float) -> bytes:
    """The body within ``deadline_s`` (408 after), a body aiohttp cannot decode a 400."""
    try:
        return await read_bytes(request, deadline_s)
    except RequestPayloadError:
        # Content-Encoding gzip/deflate over bytes that are not, a broken chunked
        # encoding: the client's fault, so a 400, not a 500.
        raise body_invalid_encoding() from None


async def read_json_object(request: web.Request, deadline_s: float) -> dict[str, Any] | None:
    """The body of a JSON-only endpoint as an object; None when there is no body. Another
    content type is a 415."""
    if not request.body_exists:
        return None
    raw = await read_raw(request, deadline_s)
    if not raw.strip():
        return None
    if request.content_type != JSON:
        raise ApiError(
            415,
            "invalid_request_error",
            "unsupported_media_type",
            f"Unsupported Content-Type {request.content_type!r}: send {JSON}.",
        )
    return loads_object(raw)


def reject_unstorable(value: Any, path: Loc = (), path_of: PathOf = param_path) -> None:
    """Postgres text cannot hold NUL or lone surrogates: a 400 here, not a 500 later.
    Nesting is bounded too."""
    if len(path) > MAX_DEPTH:
        raise ApiError(
            400,
            "invalid_request_error",
            "parameter_invalid",
            "Parameters are nested too deeply.",
            path_of(path[:1]) or None,
        )
    if isinstance(value, str):
        if "\x00" in value or not encodable(value):
            param = path_of(path) or None
            raise ApiError(
                400,
                "invalid_request_error",
                "parameter_invalid",
                f"Invalid {param}: contains characters that are not allowed.",
                param,
            )
    elif isinstance(value, dict):
        for k, v in value.items():
            if isinstance(k, str) and ("\x00" in k or not encodable(k)):
                parent = path_of(path)
                raise ApiError(
                    400,
                    "invalid_request_error",
                    "parameter_unknown",
                    "Received a parameter name with characters that are not allowed"
                    + (f" in {parent}." if parent else "."),
                    parent or None,
                )
            reject_unstorable(v, (*path, k), path_of)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            reject_unstorable(v, (*path, i), path_of)


def to_api_error(err: ErrorDetails, path_of: PathOf = param_path) -> ApiError:
    """One pydantic error as a Stripe-shaped 400 naming its parameter."""
    param = path_of(err["loc"])
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


def validate(
    model: type[M],
    values: Mapping[str, Any],
    *,
    context: dict[str, Any] | None = None,
    path_of: PathOf = param_path,
) -> M:
    """``values`` as ``model``, strictly (no type coerced into another), or a 400."""
    reject_unstorable(values, (), path_of)
    try:
        return model.model_validate(values, strict=True, context=context)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        raise to_api_error(errors[0], path_of) from None
