"""The OpenAPI 3.1 document of the session API, served at ``/openapi.json``.

Written by hand (it is the contract tenants code against) and kept true by tests: its
paths must equal the app's routes, it must pass openapi-spec-validator, real responses
must validate against its schemas, and a client generated from it by a standard
generator (openapi-python-client) must work against the live service.

For generated clients: the JSON request body is listed first and has its own nested
schema, the form body a separate flat one (``sections[invoices][enabled]`` is one
property: generators cannot flatten nested objects the Stripe way); every status the
service can answer is declared on every operation, with the error schema.
"""

from __future__ import annotations

from billfold.http import openapi as oa
from billfold.http.openapi import Schema
from billfold.sections import SECTION_DEFAULTS
from session_api.portal_sessions.schemas import TTL_MAX, TTL_MIN

# The same bounds as the pydantic input models (schemas.py), so a client (or a fuzzer)
# generating documented-valid values is never refused.
_IDENT = {"type": "string", "minLength": 1, "maxLength": 255}
_LOCALE_PATTERN = "^(auto|[a-zA-Z]{2,3}(-[a-zA-Z0-9]{2,8})*)$"

_ID_PARAM = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
_ref = oa.ref
_nullable = oa.nullable
_object = oa.obj
_TIME = oa.TIME


_sections_schema = oa.sections_schema


_SUBSCRIPTION_PATTERN = "^sub_[A-Za-z0-9_]{1,250}$"
_FLOWS = {
    "PaymentMethodUpdateFlow": _object({"type": {"const": "payment_method_update"}}),
    "SubscriptionCancelFlow": _object(
        {
            "type": {"const": "subscription_cancel"},
            "subscription": {"type": "string", "pattern": _SUBSCRIPTION_PATTERN},
        }
    ),
}
_FLOW = {
    "oneOf": [_ref(name) for name in _FLOWS],
    "discriminator": {
        "propertyName": "type",
        "mapping": {
            "payment_method_update": "#/components/schemas/PaymentMethodUpdateFlow",
            "subscription_cancel": "#/components/schemas/SubscriptionCancelFlow",
        },
    },
    "description": "Open the portal straight into one action.",
}

_SESSION_PROPS: dict[str, Schema] = {
    "id": {"type": "string", "pattern": "^ps_"},
    "object": {"const": "portal_session"},
    "customer": {"type": "string", "description": "Billfold customer id (cu_…)."},
    "status": {"enum": ["active", "used", "expired", "revoked"]},
    "single_use": {"type": "boolean"},
    "sections": _ref("Sections"),
    "flow": _nullable(_ref("Flow")),
    "return_url": {"type": ["string", "null"], "format": "uri"},
    "locale": {"type": ["string", "null"]},
    "send_email": {"type": "boolean"},
    "expires_at": _TIME,
    "created_at": _TIME,
    "used_at": _nullable(_TIME),
    "used_ip": {"type": ["string", "null"], "description": "Where the link was used from."},
    "used_user_agent": {"type": ["string", "null"], "description": "The browser that used it."},
    "revoked_at": _nullable(_TIME),
}

_CREATE_PROPS: dict[str, Schema] = {
    "customer": {
        **_IDENT,
        "description": "Billfold (cu_…) or Stripe (cus_…) customer id. "
        "Exactly one of customer and customer_external_id.",
    },
    "customer_external_id": {**_IDENT, "description": "Your own id of the customer."},
    "return_url": {
        "type": "string",
        "format": "uri",
        "maxLength": 2048,
        "description": "An absolute http or https URL valid per RFC 3986 (percent-encode "
        "anything else), with a host, without credentials (user:pass@), port 1 to 65535 "
        "when given.",
    },
    "ttl_seconds": {
        "type": "integer",
        "minimum": TTL_MIN,
        "maximum": TTL_MAX,
        "description": "Link lifetime in seconds, a JSON integer; default the site's "
        "default, else 3600.",
    },
    "single_use": {"type": "boolean", "default": True},
    "sections": _ref("SectionsInput"),
    "flow": _ref("Flow"),
    "locale": {
        "type": "string",
        "maxLength": 35,
        "pattern": _LOCALE_PATTERN,
        "examples": ["en", "fr-CA", "auto"],
    },
    "send_email": {
        "type": "boolean",
        "default": False,
        "description": "Also email the link to the customer (notifier). Refused with "
        "400 email_unavailable when this server has no notifier public key.",
    },
}

# Form bodies: the documented spellings (forms.Bool, forms.Int), one flat property per
# Stripe-style field name. The TTL pattern is the decimal range TTL_MIN..TTL_MAX
# (60..604800, leading zeros allowed), so a generated valid value is never refused.
_FORM_BOOL: Schema = {"type": "string", "enum": ["true", "false"]}
_TTL_DIGITS = (
    "^0*([6-9][0-9]|[1-9][0-9]{2,4}|[1-5][0-9]{5}|60[0-3][0-9]{3}|604[0-7][0-9]{2}|604800)$"
)


def _form_props() -> dict[str, Schema]:
    props: dict[str, Schema] = {}
    for name, schema in _CREATE_PROPS.items():
        if name in ("sections", "flow"):
            continue
        if schema.get("type") == "boolean":
            props[name] = {**_FORM_BOOL, "default": "true" if schema["default"] else "false"}
        elif schema.get("type") == "integer":
            props[name] = {
                "type": "string",
                "pattern": _TTL_DIGITS,
                "description": f"Link lifetime in seconds, decimal digits ({TTL_MIN} to "
                f"{TTL_MAX}); default the site's default, else 3600.",
            }
        else:
            props[name] = schema
    for section, flags in SECTION_DEFAULTS.items():
        for flag in flags:
            props[f"sections[{section}][{flag}]"] = dict(_FORM_BOOL)
    props["flow[type]"] = {
        "type": "string",
        "enum": ["payment_method_update", "subscription_cancel"],
    }
    props["flow[subscription]"] = {
        "type": "string",
        "pattern": _SUBSCRIPTION_PATTERN,
        "description": "With flow[type]=subscription_cancel.",
    }
    return props


_ERROR_CODES = (
    "parameter_missing, parameter_invalid, parameter_unknown, resource_missing, "
    "body_invalid_json, body_invalid_form, body_invalid_encoding, unsupported_media_type, "
    "body_too_large, request_malformed, "
    "route_not_found, method_not_allowed, api_key_invalid, insufficient_scope, "
    "idempotency_key_in_use, request_timeout, service_busy, email_unavailable, internal_error"
)

SCHEMAS: dict[str, Schema] = {
    "Error": oa.error_schema(_ERROR_CODES),
    "Sections": _sections_schema(output=True),
    "SectionsInput": _sections_schema(output=False),
    "Flow": _FLOW,
    **_FLOWS,
    "PortalSession": _object(_SESSION_PROPS),
    "CreatedPortalSession": _object(
        {
            **_SESSION_PROPS,
            "token": {"type": "string", "pattern": "^bfl_", "description": "Returned once."},
            "url": {"type": "string", "format": "uri", "description": "Returned once."},
        }
    ),
    "CreatePortalSessionRequest": _object(_CREATE_PROPS, required=[]),
    "CreatePortalSessionForm": _object(_form_props(), required=[]),
    "PortalSessionList": _object(
        {
            "object": {"const": "list"},
            "url": {"type": "string"},
            "data": {"type": "array", "items": _ref("PortalSession")},
            "has_more": {"type": "boolean"},
        }
    ),
    "Customer": _object(
        {
            "id": {"type": "string", "pattern": "^cu_"},
            "object": {"const": "customer"},
            "stripe_id": {"type": ["string", "null"]},
            "external_id": {"type": ["string", "null"]},
            "email": {"type": ["string", "null"]},
            "name": {"type": ["string", "null"]},
            "created_at": _TIME,
        }
    ),
    "Health": _object({"status": {"const": "ok"}}),
    "Readiness": _object(
        {
            "status": {
                "enum": ["ok", "degraded", "unavailable"],
                "description": "ok: every check passes (200). degraded: Redis or RabbitMQ "
                "fails; the API still serves (200). unavailable: Postgres fails (503).",
            },
            "checks": {
                "type": "object",
                "description": "Each dependency (postgres, redis, rabbitmq): ok, or error: <type>.",
                "additionalProperties": {"type": "string"},
            },
        }
    ),
}


_error = oa.error
_json = oa.json_response

_AUTH_ERRORS = {
    "401": _error("No key, an unknown or revoked key, or a publishable key."),
    "403": _error("The key lacks the scope this endpoint needs."),
}

_HTTP_ERRORS = oa.HTTP_ERRORS
# What a request that needs Postgres can meet besides.
_SERVICE_ERRORS = {
    **_HTTP_ERRORS,
    "503": {
        **_error(
            "The service cannot serve now (Postgres unreachable, or no database connection"
            " came free in time: service_busy); retry after Retry-After when it is given."
        ),
        "headers": oa.RETRY_AFTER,
    },
}


def _api_responses(responses: dict[str, Schema]) -> dict[str, Schema]:
    """An /v1 operation's own responses over the ones every such request can meet."""
    return dict(sorted({**_SERVICE_ERRORS, **_AUTH_ERRORS, **responses}.items()))


_LIST_DESCRIPTION = (
    "Newest first (created_at, then id, descending), cursor-paginated with starting_after. "
    "By default only sessions whose expiry has not passed are listed, whatever their "
    "status (active, used or revoked: a used single-use link's browser session lives "
    "until expiry, so the tenant may still want to revoke it); include_expired=true adds "
    "the expired ones. A customer filter naming no customer of the site gives an empty "
    "list. Never returns tokens or URLs."
)

_IDEMPOTENCY_DESCRIPTION = (
    "Same Idempotency-Key and same parameters within 24 h: the first response is "
    "replayed (header Idempotent-Replayed: true), link token included. Same key with "
    "other parameters: 409 idempotency_error. Only successful responses are stored: a "
    "request that failed (for example an unknown customer not mirrored yet) may be "
    "retried with the same key. Concurrent requests with one key never both create."
)


def document() -> Schema:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Billfold session API",
            "version": "1.0.0",
            "description": "Create short-lived, branded customer-portal links for your "
            "customers. Authenticate with a secret key (bf_sk_…) as a Bearer token, as the "
            "HTTP Basic user name, or in X-API-Key. Errors are "
            '{"error": {"type", "code", "message", "param"}}.',
        },
        "servers": [{"url": "/"}],
        "security": [{"bearerAuth": []}, {"basicAuth": []}, {"apiKeyHeader": []}],
        "paths": {
            "/v1/portal_sessions": {
                "post": {
                    "operationId": "createPortalSession",
                    "summary": "Create a portal session (a link for one customer).",
                    "description": _IDEMPOTENCY_DESCRIPTION,
                    "parameters": [
                        {
                            "name": "Idempotency-Key",
                            "in": "header",
                            "required": False,
                            "schema": {"type": "string", "minLength": 1, "maxLength": 255},
                            "description": "Printable characters; send the header once.",
                        }
                    ],
                    "requestBody": {
                        "required": True,
                        "description": "JSON (strictly typed: booleans true/false, integers "
                        "as JSON integers; a key given twice is a 400), or a form with "
                        "nested fields written sections[invoices][enabled]=false, "
                        "flow[type]=…, booleans exactly true or false, integers in decimal "
                        "digits; a field given twice is a 400.",
                        "content": {
                            "application/json": {"schema": _ref("CreatePortalSessionRequest")},
                            "application/x-www-form-urlencoded": {
                                "schema": _ref("CreatePortalSessionForm")
                            },
                        },
                    },
                    "responses": _api_responses(
                        {
                            "201": _json(
                                "Created. token and url are returned only here.",
                                "CreatedPortalSession",
                                {
                                    "Idempotent-Replayed": {
                                        "description": "true when this is a replayed response.",
                                        "schema": {"type": "string"},
                                    },
                                    "Cache-Control": {
                                        "description": "no-store: the body holds the link token.",
                                        "schema": {"const": "no-store"},
                                    },
                                    "Pragma": {"schema": {"const": "no-cache"}},
                                },
                            ),
                            "400": _error("Invalid parameters or body."),
                            "409": _error("Idempotency-Key reused with other parameters."),
                            "415": _error("Content type other than JSON or form."),
                        }
                    ),
                },
                "get": {
                    "operationId": "listPortalSessions",
                    "summary": "List portal sessions.",
                    "description": _LIST_DESCRIPTION,
                    "parameters": [
                        {
                            "name": "customer",
                            "in": "query",
                            "schema": dict(_IDENT),
                            "description": "Billfold, Stripe or external customer id.",
                        },
                        {
                            "name": "include_expired",
                            "in": "query",
                            "schema": {"type": "boolean", "default": False},
                        },
                        {
                            "name": "limit",
                            "in": "query",
                            "schema": {
                                "type": "integer",
                                "minimum": 1,
                                "maximum": 100,
                                "default": 10,
                            },
                        },
                        {
                            "name": "starting_after",
                            "in": "query",
                            "schema": dict(_IDENT),
                            "description": "A session id (ps_…) of this site: the page after it.",
                        },
                    ],
                    "responses": _api_responses(
                        {
                            "200": _json("A page of sessions.", "PortalSessionList"),
                            "400": _error(
                                "Invalid parameters, a parameter given more than once, or an "
                                "unknown cursor."
                            ),
                        }
                    ),
                },
            },
            "/v1/portal_sessions/{id}": {
                "parameters": [_ID_PARAM],
                "get": {
                    "operationId": "getPortalSession",
                    "summary": "Retrieve a portal session (no token or URL).",
                    "responses": _api_responses(
                        {
                            "200": _json("The session.", "PortalSession"),
                            "404": _error("No such session on this site (resource_missing)."),
                        }
                    ),
                },
                "delete": {
                    "operationId": "revokePortalSession",
                    "summary": "Revoke a session: its link and every browser session made "
                    "from it stop working. Revoking twice is fine.",
                    "responses": _api_responses(
                        {
                            "204": {"description": "Revoked."},
                            "404": _error("No such session on this site (resource_missing)."),
                        }
                    ),
                },
            },
            "/v1/customers/{id}": {
                "parameters": [
                    {**_ID_PARAM, "description": "Billfold (cu_…), Stripe (cus_…) or external id."}
                ],
                "get": {
                    "operationId": "getCustomer",
                    "summary": "Check that a customer is mirrored.",
                    "responses": _api_responses(
                        {
                            "200": _json("The customer.", "Customer"),
                            "404": _error("No such customer on this site (resource_missing)."),
                        }
                    ),
                },
            },
            "/healthz": _public("getHealth", "Liveness.", _json("Alive.", "Health")),
            "/readyz": _public(
                "getReadiness",
                "Readiness: Postgres (required), Redis and RabbitMQ (optional) answer.",
                _json("Ready (ok), or degraded: an optional dependency fails.", "Readiness"),
                {"503": _json("Unavailable: Postgres fails.", "Readiness")},
            ),
            "/metrics": _public(
                "getMetrics",
                "Prometheus metrics.",
                {
                    "description": "Prometheus text format.",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                },
            ),
            "/openapi.json": _public("getOpenApiDocument", "This document.", oa.DOCUMENT_RESPONSE),
        },
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer"},
                "basicAuth": {
                    "type": "http",
                    "scheme": "basic",
                    "description": "The secret key as user name, empty password.",
                },
                "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
        },
    }


_public = oa.public_get

handler = oa.serve(document)
