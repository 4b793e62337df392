"""Errors in Stripe's wire shape: ``{"error": {"type", "code", "message", "param", ...}}``.

Handlers raise :class:`StripeError`; the app's middleware turns it into the JSON body and
HTTP status Stripe uses, so the official library raises the matching exception class.
"""

from __future__ import annotations

from typing import Any

Json = dict[str, Any]


class StripeError(Exception):
    """An error the fake returns exactly as Stripe would."""

    def __init__(
        self,
        status: int,
        type_: str,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        decline_code: str | None = None,
        extra: Json | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.type = type_
        self.message = message
        self.code = code
        self.param = param
        self.decline_code = decline_code
        self.extra = extra or {}

    def body(self, request_id: str | None = None) -> Json:
        # Stripe omits ``code``/``param``/``decline_code`` when they do not apply.
        err: Json = {"type": self.type, "message": self.message}
        if self.code is not None:
            err["code"] = self.code
            err["doc_url"] = f"https://stripe.com/docs/error-codes/{self.code.replace('_', '-')}"
        if self.param is not None:
            err["param"] = self.param
        if self.decline_code is not None:
            err["decline_code"] = self.decline_code
        if request_id is not None:
            err["request_log_url"] = f"https://dashboard.stripe.com/test/logs/{request_id}?t=0"
        err.update(self.extra)
        return {"error": err}


def error_object(error: StripeError, payment_method: Json | None) -> Json:
    """The error as Stripe stores it on an object (``last_setup_error``,
    ``last_payment_error``): the wire fields plus the payment method that failed."""
    out: Json = {
        "type": error.type,
        "code": error.code,
        "decline_code": error.decline_code,
        "message": error.message,
        "payment_method": payment_method,
        "payment_method_type": payment_method["type"] if payment_method else None,
    }
    if error.code is not None:
        out["doc_url"] = f"https://stripe.com/docs/error-codes/{error.code.replace('_', '-')}"
    if error.param is not None:
        out["param"] = error.param
    return out


def invalid(message: str, *, param: str | None = None, code: str | None = None) -> StripeError:
    """400 ``invalid_request_error`` (bad or missing parameters, wrong state)."""
    return StripeError(400, "invalid_request_error", message, code=code, param=param)


def missing_param(param: str) -> StripeError:
    return invalid(f"Missing required param: {param}.", param=param, code="parameter_missing")


def not_found(resource: str, object_id: str, param: str = "id") -> StripeError:
    """404 ``resource_missing`` with Stripe's wording: ``No such customer: 'cus_x'``."""
    return StripeError(
        404,
        "invalid_request_error",
        f"No such {resource}: '{object_id}'",
        code="resource_missing",
        param=param,
    )


def unknown_route(method: str, path: str) -> StripeError:
    return StripeError(
        404,
        "invalid_request_error",
        f"Unrecognized request URL ({method}: {path}). Please see https://stripe.com/docs or "
        "we can help at https://support.stripe.com/.",
    )


def card_declined(
    decline_code: str = "generic_decline",
    message: str = "Your card was declined.",
    *,
    code: str = "card_declined",
    param: str | None = None,
    extra: Json | None = None,
) -> StripeError:
    """402 ``card_error``, as for ``pm_card_chargeDeclined``."""
    return StripeError(
        402,
        "card_error",
        message,
        code=code,
        param=param,
        decline_code=decline_code if code == "card_declined" else None,
        extra=extra,
    )


def redact_key(key: str) -> str:
    """Redact an API key the way Stripe's 401 message does: keep prefix and last four."""
    if len(key) <= 12:
        return "*" * len(key)
    prefix, sep, _rest = key.rpartition("_")
    head = prefix + sep if sep and len(prefix) < 12 else key[:3]
    return head + "*" * max(len(key) - len(head) - 4, 4) + key[-4:]


def authentication(message: str) -> StripeError:
    return StripeError(401, "invalid_request_error", message)
