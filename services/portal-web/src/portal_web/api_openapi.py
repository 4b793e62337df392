"""The OpenAPI 3.1 document of the portal's JSON API, served at
``/api/portal/v1/openapi.json``.

Written by hand like the session API's (``session_api.openapi``) from the same building
blocks (``billfold.http.openapi``), and kept true the same way: its operations equal the
live API routes (under both servers: top level and framed), it passes
openapi-spec-validator, real responses validate against its schemas, and schemathesis
drives it.

The write operations (``PATCH /subscriptions/{id}``, ``POST
/payment-methods/setup-session``) are served by ``api_writes`` on the action layer.
"""

from __future__ import annotations

from typing import Any

from billfold.http import openapi as oa
from billfold.http.openapi import Schema, nullable, obj, ref
from billfold.rpc.calls import CancellationReason

PREFIX = "/api/portal/v1"

_ERROR_CODES = (
    "authentication_required, authorization_invalid, session_invalid, session_expired, "
    "session_revoked, link_single_use, csrf_invalid, parameter_invalid, resource_missing, "
    "route_not_found, method_not_allowed, body_too_large, request_malformed, "
    "mirror_unavailable, service_busy, internal_error, action_not_allowed, "
    "parameter_unknown, parameter_missing, body_invalid_json, body_invalid_encoding, "
    "unsupported_media_type, unavailable, and Stripe's codes (card_declined, …) on 402"
)

_STR = {"type": "string"}
_NSTR = {"type": ["string", "null"]}
_NTIME = nullable(oa.TIME)
_CURRENCY = {"type": "string", "description": "ISO 4217, lower case (Stripe's)."}
_MINOR = {
    "type": "integer",
    "description": "In the currency's smallest unit (cents; yen for JPY), as Stripe.",
}
_DECIMAL = {
    "type": ["string", "null"],
    "pattern": r"^-?[0-9]+(\.[0-9]+)?$",
    "description": "A decimal number as text, in the currency's smallest unit.",
}
_BADGE = obj(
    {
        "text": {
            "type": "string",
            "description": "What the page shows, in the session's language.",
        },
        "tone": {"enum": ["ok", "info", "warn", "bad", "muted"]},
    }
)
_TIER_ROW = obj({"range": _STR, "price": _STR})


def _list(item: str, extra: dict[str, Schema] | None = None) -> Schema:
    return obj(
        {
            "object": {"const": "list"},
            "url": _STR,
            "data": {"type": "array", "items": ref(item)},
            "has_more": {"type": "boolean"},
            **(extra or {}),
        }
    )


_CANCELLATION_REASON = CancellationReason.model_json_schema()

SCHEMAS: dict[str, Schema] = {
    "Error": oa.error_schema(_ERROR_CODES),
    "Sections": oa.sections_schema(output=True),
    "Colors": obj(
        {
            "brand": {"type": "string", "pattern": "^#[0-9a-f]{6}$"},
            "on_brand": {"type": "string", "pattern": "^#[0-9a-f]{6}$"},
        }
    ),
    "Site": obj(
        {
            "name": _STR,
            "logo_url": {**_NSTR, "description": "https only."},
            "support_email": _NSTR,
            "stylesheet": {
                "type": "string",
                "description": "Our CSS file with the brand colours as CSS variables.",
            },
            "colors": obj(
                {"light": ref("Colors"), "dark": ref("Colors")},
            ),
        }
    ),
    "PortalSession": obj(
        {
            "object": {"const": "portal_session"},
            "id": {"type": "string", "description": "The portal session (ps_…)."},
            "customer": {"type": "string", "description": "Billfold customer id (cu_…)."},
            "expires_at": oa.TIME,
            "locale": {
                "type": "string",
                "description": "The language of every display string (BCP 47).",
            },
            "return_url": _NSTR,
            "authentication": {
                "enum": ["cookie", "frame", "link"],
                "description": "How this request was authenticated.",
            },
            "csrf_token": {
                **_NSTR,
                "description": "With cookie authentication: send it as X-CSRF-Token on "
                "every state-changing request. null otherwise (not needed).",
            },
            "sections": ref("Sections"),
            "actions": {
                "type": "array",
                "items": {
                    "enum": [
                        "subscription.cancel",
                        "subscription.resume",
                        "payment_method.update",
                        "payment_method.set_default",
                        "payment_method.remove",
                        "profile.edit",
                    ]
                },
                "description": "What this session may do (its section enabled and the "
                "permission given).",
            },
            "site": ref("Site"),
        }
    ),
    "Tier": obj(
        {
            "up_to": {"type": ["integer", "null"], "description": "null: and above."},
            "unit_amount_decimal": _DECIMAL,
            "flat_amount_decimal": _DECIMAL,
        }
    ),
    "SubscriptionItem": obj(
        {
            "product": _NSTR,
            "price_model": {"enum": ["flat", "per_unit", "graduated", "volume", "metered"]},
            "unit_amount": {
                "type": ["integer", "null"],
                "description": "Smallest currency unit; null when tiered or fractional.",
            },
            "unit_amount_decimal": _DECIMAL,
            "currency": _NSTR,
            "quantity": {"type": "integer"},
            "interval": {"enum": ["day", "week", "month", "year", None]},
            "interval_count": {"type": "integer"},
            "tiers": {"type": "array", "items": ref("Tier")},
        }
    ),
    "Charge": obj({"at": oa.TIME, "amount": _MINOR, "currency": _CURRENCY}),
    "Subscription": obj(
        {
            "id": {"type": "string", "description": "Stripe's id (sub_…)."},
            "object": {"const": "subscription"},
            "status": {
                "type": "string",
                "description": "Stripe's status: active, trialing, past_due, unpaid, paused, "
                "incomplete, incomplete_expired, canceled.",
            },
            "currency": _NSTR,
            "cancel_at_period_end": {"type": "boolean"},
            "ends_at": {**_NTIME, "description": "When a live plan set to cancel ends."},
            "canceled_at": _NTIME,
            "ended_at": _NTIME,
            "trial_end": _NTIME,
            "current_period_start": _NTIME,
            "current_period_end": _NTIME,
            "next_charge": {
                **nullable(ref("Charge")),
                "description": "The next charge of a plan that renews; null when it ends.",
            },
            "items": {"type": "array", "items": ref("SubscriptionItem")},
            "display": obj(
                {
                    "status": _BADGE,
                    "lines": {
                        "type": "array",
                        "items": obj(
                            {
                                "product": _STR,
                                "price": _STR,
                                "tiers": {"type": "array", "items": _TIER_ROW},
                            }
                        ),
                    },
                    "period": _NSTR,
                    "next_charge": _NSTR,
                    "ends": _NSTR,
                }
            ),
        }
    ),
    "SubscriptionList": _list("Subscription"),
    "Invoice": obj(
        {
            "id": {"type": "string", "description": "Stripe's id (in_…)."},
            "object": {"const": "invoice"},
            "number": _NSTR,
            "status": {
                "enum": ["paid", "open", "overdue", "void"],
                "description": "What the customer is told; overdue: open past its due date.",
            },
            "stripe_status": _NSTR,
            "days_overdue": {"type": ["integer", "null"], "minimum": 1},
            "created": _NTIME,
            "due_date": _NTIME,
            "total": {**_MINOR, "type": ["integer", "null"]},
            "amount_remaining": {**_MINOR, "type": ["integer", "null"]},
            "currency": _NSTR,
            "hosted_invoice_url": {**_NSTR, "description": "Stripe's page (https only)."},
            "invoice_pdf": {**_NSTR, "description": "Stripe's PDF (https only)."},
            "display": obj(
                {"number": _STR, "issued": _STR, "due": _STR, "amount": _STR, "status": _BADGE}
            ),
        }
    ),
    "InvoiceList": _list(
        "Invoice",
        {
            "page": {"type": "integer", "minimum": 1},
            "pages": {"type": "integer", "minimum": 1},
            "per_page": {"type": "integer", "minimum": 1, "maximum": 100},
            "total_count": {"type": "integer", "minimum": 0},
        },
    ),
    "PaymentMethod": obj(
        {
            "id": {"type": "string", "description": "Stripe's id (pm_…)."},
            "object": {"const": "payment_method"},
            "type": {"type": "string", "description": "card, sepa_debit, …"},
            "is_default": {"type": "boolean"},
            "card": nullable(
                obj(
                    {
                        "brand": _NSTR,
                        "last4": _NSTR,
                        "exp_month": {"type": ["integer", "null"]},
                        "exp_year": {"type": ["integer", "null"]},
                    }
                )
            ),
            "display": obj({"label": _STR, "expires": _NSTR}),
        }
    ),
    "PaymentMethodList": _list("PaymentMethod"),
    "Usage": obj(
        {
            "object": {"const": "usage"},
            "meter": _NSTR,
            "value": {**_DECIMAL, "type": "string", "description": "A decimal number as text."},
            "period_start": oa.TIME,
            "period_end": oa.TIME,
            "daily": {
                "type": "array",
                "description": "Usage per UTC day of the period so far, oldest first.",
                "items": obj(
                    {
                        "day": {"type": "string", "format": "date"},
                        "value": {
                            **_DECIMAL,
                            "type": "string",
                            "description": "A decimal number as text.",
                        },
                    }
                ),
            },
            "display": obj({"meter": _STR, "value": _STR, "period": _STR}),
        }
    ),
    "UsageList": _list("Usage"),
    "Address": obj(
        {k: _NSTR for k in ("line1", "line2", "city", "postal_code", "state", "country")}
    ),
    "Profile": obj(
        {
            "object": {"const": "profile"},
            "name": _NSTR,
            "email": _NSTR,
            "phone": _NSTR,
            "address": nullable(ref("Address")),
            "tax_ids": {"type": "array", "items": obj({"type": _STR, "value": _STR})},
            "display": obj(
                {
                    "address": {"type": "array", "items": _STR},
                    "tax_ids": {"type": "array", "items": obj({"type": _STR, "value": _STR})},
                }
            ),
        }
    ),
    # The write operations' bodies.
    "CancellationReason": {
        **{k: v for k, v in _CANCELLATION_REASON.items() if k != "title"},
        "description": "Why the customer cancels (Stripe's cancellation_details).",
    },
    "SubscriptionUpdateRequest": obj(
        {
            "cancel_at_period_end": {"type": "boolean"},
            "cancellation_reason": {
                **ref("CancellationReason"),
                "description": "Only with cancel_at_period_end: true.",
            },
        },
        required=["cancel_at_period_end"],
    ),
    "SetupSession": obj(
        {
            "url": {
                "type": "string",
                "format": "uri",
                "description": "Stripe's hosted page collecting the card; open it top level "
                "(it refuses to be framed).",
            }
        }
    ),
}

_AUTH_ERRORS = {
    "401": {
        **oa.error(
            "No credential, or a refused one: unknown or signed out (session_invalid), "
            "expired (session_expired), revoked (session_revoked), a single-use link's token "
            "as Bearer (link_single_use)."
        ),
        "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
    },
}
_503 = {
    "503": {
        **oa.error(
            "The mirror or the database cannot be read now (mirror_unavailable, service_busy)."
        ),
        "headers": oa.RETRY_AFTER,
    }
}


def _responses(ok: Schema, extra: dict[str, Schema] | None = None) -> dict[str, Schema]:
    return dict(
        sorted({**oa.HTTP_ERRORS, **_AUTH_ERRORS, **_503, "200": ok, **(extra or {})}.items())
    )


_HIDDEN = {"404": oa.error("This session hides the section, or no route (route_not_found).")}


def _section(operation_id: str, summary: str, schema: str, **extra: Any) -> Schema:
    return {
        "get": {
            "operationId": operation_id,
            "summary": summary,
            **extra,
            "responses": _responses(oa.json_response("OK.", schema), _HIDDEN),
        }
    }


_WRITE_ERRORS = {
    "402": oa.error("Stripe refused (card_error; Stripe's code, e.g. card_declined)."),
    "403": oa.error(
        "Not allowed in this session (action_not_allowed), or a cookie-authenticated "
        "request without same-origin and X-CSRF-Token (csrf_invalid)."
    ),
    "404": oa.error(
        "This session hides the section (route_not_found), or no such object of this "
        "customer's (resource_missing)."
    ),
    "415": oa.error("A body that is not application/json (unsupported_media_type)."),
    "503": {
        **oa.error(
            "billing-sync did not answer within the deadline, or the mirror cannot be read "
            "(unavailable, mirror_unavailable, service_busy): nothing or maybe something "
            "changed; read again, then retry."
        ),
        "headers": oa.RETRY_AFTER,
    },
}

# Optional: a retry with the same key (and the same request) makes one call (``call_ids``).
_IDEMPOTENCY_KEY: Schema = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "Optional. A retry with the same key and the same request makes one "
    "change; the key is scoped to this session. Malformed: 400 parameter_invalid.",
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9_\\-:.]{8,200}$"},
}

WRITE_PATHS: dict[str, Schema] = {
    f"{PREFIX}/subscriptions/{{id}}": {
        "patch": {
            "operationId": "updateSubscription",
            "summary": "Cancel at period end (with an optional reason), or undo it.",
            "parameters": [
                {"name": "id", "in": "path", "required": True, "schema": _STR},
                _IDEMPOTENCY_KEY,
            ],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": ref("SubscriptionUpdateRequest")}},
            },
            "responses": _responses(
                oa.json_response(
                    "The subscription as it is now (as GET /subscriptions lists it).",
                    "Subscription",
                ),
                _WRITE_ERRORS,
            ),
        }
    },
    f"{PREFIX}/payment-methods/setup-session": {
        "post": {
            "operationId": "createSetupSession",
            "summary": "A Stripe-hosted page to add a card, which becomes the default. It "
            "returns to the portal; with a multi-use link's token (Bearer), to the "
            "session's return_url when it has one, else to a portal page that needs no "
            "session ('you can close this tab').",
            "parameters": [_IDEMPOTENCY_KEY],
            "requestBody": {
                "required": False,
                "content": {"application/json": {"schema": obj({})}},
            },
            "responses": _responses(
                oa.json_response("Open url top level.", "SetupSession"), _WRITE_ERRORS
            ),
        }
    },
}


_DESCRIPTION = """\
For tenants who draw their own portal UI: the customer's portal sections as JSON, with
the same rules as the portal's pages (a section the session hides answers 404, like an
unknown URL). Amounts are in the currency's smallest unit with the currency; times are
ISO 8601 UTC; each object's `display` holds the strings our own pages show, in the
session's language.

Credentials (one per request):
- the portal's session cookie, set when a link was opened at top level; a
  state-changing request it authenticates must come from the portal's origin and carry
  `X-CSRF-Token` (`csrf_token` of `GET /api/portal/v1/session`);
- inside a frame, the framed session's token in the path: the second server,
  `/e/{token}/api/portal/v1/...`;
- `Authorization: Bearer bfl_...`: the token of a MULTI-USE link (session created with
  `single_use: false`), checked on every request; revoking the session or its expiry
  refuses the next request. A single-use link's token is refused (401 link_single_use).

Writes: `PATCH /api/portal/v1/subscriptions/{id}` (cancel at period end, or undo it)
and `POST /api/portal/v1/payment-methods/setup-session` (Stripe's hosted card page),
through the same action layer as the portal's own buttons: the same permissions (a
disallowed action is 403), an audit record for each, and billing-sync's answer within
the deadline (503 `unavailable` when it does not come: read again, then retry). Bodies
are read strictly: a key given twice, an unknown field or a wrong type is a 400 naming
the parameter.

Cross-origin: a Bearer request from one of the site's allowed origins (its framing
origins) may read the response (CORS); cookies are never accepted cross-origin.

Errors are `{"error": {"type", "code", "message", "param"}}`, as on the session API.
"""


def document() -> Schema:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Billfold portal API",
            "version": "1.0.0",
            "description": _DESCRIPTION,
        },
        "servers": [
            {"url": "/", "description": "Top level: cookie or Bearer."},
            {
                "url": "/e/{token}",
                "description": "Inside a frame: the framed browser session's token.",
                "variables": {"token": {"default": "bfs_", "description": "bfs_…"}},
            },
        ],
        "security": [{"sessionCookie": []}, {"linkToken": []}],
        "paths": {
            f"{PREFIX}/session": {
                "get": {
                    "operationId": "getPortalSession",
                    "summary": "What this session allows: sections, actions, branding, "
                    "language, return URL, and the CSRF token for cookie clients.",
                    "responses": _responses(oa.json_response("OK.", "PortalSession")),
                }
            },
            f"{PREFIX}/subscriptions": _section(
                "listSubscriptions",
                "The Plan section: the customer's subscriptions, live ones first (at most 50).",
                "SubscriptionList",
            ),
            f"{PREFIX}/invoices": _section(
                "listInvoices",
                "The Invoices section: newest first, by page (drafts are not listed).",
                "InvoiceList",
                parameters=[
                    {
                        "name": "page",
                        "in": "query",
                        "schema": {
                            "type": "integer",
                            "minimum": 1,
                            "maximum": 999999,
                            "default": 1,
                        },
                        "description": "Past the last page: an empty page.",
                    },
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 12},
                    },
                ],
            ),
            f"{PREFIX}/payment-methods": _section(
                "listPaymentMethods",
                "The Payment methods section: the default first (at most 50).",
                "PaymentMethodList",
            ),
            f"{PREFIX}/usage": _section(
                "listUsage", "The Usage section: metered usage this period, per meter.", "UsageList"
            ),
            f"{PREFIX}/profile": {
                "get": {
                    "operationId": "getProfile",
                    "summary": "The Profile section: the customer's billing details.",
                    "responses": _responses(
                        oa.json_response("OK.", "Profile"),
                        {
                            "404": oa.error(
                                "This session hides the section (route_not_found), or the "
                                "customer's profile is not available (resource_missing)."
                            )
                        },
                    ),
                }
            },
            **WRITE_PATHS,
            f"{PREFIX}/openapi.json": {
                **{
                    k: {**v, "servers": [{"url": "/"}]}
                    for k, v in oa.public_get(
                        "getPortalApiDocument", "This document.", oa.DOCUMENT_RESPONSE
                    ).items()
                }
            },
        },
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "sessionCookie": {
                    "type": "apiKey",
                    "in": "cookie",
                    "name": "__Host-bf_session",
                    "description": "Set by the portal when a link is opened at top level "
                    "(bf_session on a plain-http localhost portal).",
                },
                "linkToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A multi-use link's token (bfl_…).",
                },
            },
        },
    }


handler = oa.serve(document)
