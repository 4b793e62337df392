"""Building blocks for the OpenAPI 3.1 documents our services serve.

Each service writes its own document by hand (it is the contract its clients code
against); what every such document shares lives here, so the session API and the
portal's JSON API describe errors, times and the HTTP layer's answers the same way.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, get_args

from aiohttp import web

from billfold.http.errors import ErrorType
from billfold.sections import SECTION_DEFAULTS

Schema = dict[str, Any]

TIME: Schema = {"type": "string", "format": "date-time", "description": "ISO 8601, UTC."}

ERROR_TYPES = list(get_args(ErrorType))


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: Schema) -> Schema:
    if "type" in schema:
        kind = schema["type"]
        return {**schema, "type": [kind, "null"] if isinstance(kind, str) else [*kind, "null"]}
    return {"anyOf": [schema, {"type": "null"}]}


def obj(properties: dict[str, Schema], required: list[str] | None = None) -> Schema:
    """A closed object; every property required unless ``required`` says otherwise."""
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": properties,
        "required": required if required is not None else list(properties),
    }


def sections_schema(*, output: bool) -> Schema:
    """A portal session's ``sections`` (``billfold.sections``): as returned (every flag
    present) or as requested (any flag may be left out)."""
    props = {}
    for name, flags in SECTION_DEFAULTS.items():
        flag_props = {flag: {"type": "boolean"} for flag in flags}
        props[name] = obj(flag_props, required=list(flags) if output else [])
    return obj(props, required=list(props) if output else [])


def error_schema(codes: str) -> Schema:
    """The Stripe-shaped error body (``billfold.http.errors``); ``codes`` lists the
    service's error codes for its description."""
    return obj(
        {
            "error": {
                "type": "object",
                "additionalProperties": False,
                "required": ["type", "code", "message", "param"],
                "properties": {
                    "type": {"enum": list(ERROR_TYPES)},
                    "code": {"type": "string", "description": f"One of: {codes}."},
                    "message": {"type": "string"},
                    "param": {"type": ["string", "null"]},
                    "request_id": {"type": "string"},
                },
            }
        }
    )


def error(description: str) -> Schema:
    """A response whose body is the ``Error`` schema."""
    return {"description": description, "content": {"application/json": {"schema": ref("Error")}}}


def json_response(description: str, schema: str, headers: dict[str, Any] | None = None) -> Schema:
    out: Schema = {
        "description": description,
        "content": {"application/json": {"schema": ref(schema)}},
    }
    if headers:
        out["headers"] = headers
    return out


# What any request can meet, whatever its operation: the HTTP layer answers these
# before (or instead of) the handler. Declared on every operation so a generated client
# parses them as errors instead of meeting an undeclared status.
HTTP_ERRORS: dict[str, Schema] = {
    "400": error(
        "The request is not valid HTTP (request_malformed), or its parameters are invalid."
    ),
    "404": error("No route for this URL (route_not_found)."),
    "405": error("Method not allowed for this URL (method_not_allowed; see Allow)."),
    "408": error("The request body did not arrive in time."),
    "413": error("Body over 64 KiB (body_too_large)."),
    "500": error("An internal error (internal_error); retry later."),
}
RETRY_AFTER: Schema = {
    "Retry-After": {"description": "Seconds.", "schema": {"type": "string"}},
}


def public_get(
    operation_id: str, summary: str, ok: Schema, extra: dict[str, Schema] | None = None
) -> Schema:
    """A GET needing no credential (health, metrics, the document itself)."""
    responses = {**HTTP_ERRORS, "200": ok, **(extra or {})}
    return {
        "get": {
            "operationId": operation_id,
            "summary": summary,
            "security": [],
            "responses": dict(sorted(responses.items())),
        }
    }


DOCUMENT_RESPONSE: Schema = {
    "description": "OpenAPI 3.1.",
    "content": {"application/json": {"schema": {"type": "object"}}},
}


def serve(document: Callable[[], Schema]) -> Callable[[web.Request], Any]:
    """A handler answering ``document()``, rendered once."""
    rendered: list[bytes] = []

    async def handler(_: web.Request) -> web.Response:
        if not rendered:
            rendered.append(json.dumps(document(), separators=(",", ":")).encode())
        return web.Response(body=rendered[0], content_type="application/json")

    return handler
