"""The RPC calls portal-web makes to billing-sync: one model per call, one union.

Like the events (``billfold.events``), each call is defined once, here, and both sides
read it through the one ``TypeAdapter`` (``parse_call``), so caller and server can never
disagree on a shape. The ``type`` field discriminates.

Every call is scoped to ``(site_id, customer_id)``: the server must refuse (as
``not_found``, never revealing that the object exists) any object that customer does not
own. ``call_id`` is the idempotency key: a retry of the same call object carries the
same id, the server's ``rpc_calls`` table answers it with the stored reply, and the
handler passes ``ctx.idempotency_key()`` (the ``call_id``, with a suffix per step for a
handler that writes more than once) to Stripe as its ``Idempotency-Key``, so even a
server that crashed between its Stripe write and its commit makes one Stripe write.

Calls refuse unknown fields (``extra="forbid"``), unlike events: a command must not be
half-understood by an older server, it is refused as ``invalid_request`` instead.
"""

from __future__ import annotations

import os
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    model_validator,
)


def new_call_id() -> str:
    # 128 random bits as 32 hex digits (the shape uuid4().hex had): every portal page
    # makes one per action form, and building a UUID object cost 4x as much.
    return f"call_{os.urandom(16).hex()}"


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("https", "http") or not parts.netloc:
        raise ValueError("must be an absolute http(s) URL")
    return value


# Billfold and Stripe ids: letters, digits, underscores (cu_…, site_…, sub_…, pm_…, in_…).
ObjectId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_\-]{1,255}$")]
# Stripe limits idempotency keys to 255 characters; room is left for a step suffix
# (``RpcContext.idempotency_key``).
CallId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_\-:.]{8,200}$")]
# Kept as text, not pydantic's URL type, which would re-encode Stripe's
# ``{CHECKOUT_SESSION_ID}`` placeholder in a success URL.
HttpUrlText = Annotated[str, StringConstraints(max_length=2048), AfterValidator(_http_url)]
# "" clears a profile field (as in Stripe's API); None leaves it unchanged.
ProfileText = Annotated[str, StringConstraints(max_length=256, strip_whitespace=True)]


class CallBase(BaseModel):
    """What every call carries; each call adds its ``type`` and object ids."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    call_id: CallId = Field(default_factory=new_call_id)
    site_id: ObjectId
    customer_id: ObjectId


# --- subscriptions -----------------------------------------------------------------------

CancellationFeedback = Literal[
    "customer_service",
    "low_quality",
    "missing_features",
    "other",
    "switched_service",
    "too_complex",
    "too_expensive",
    "unused",
]


class CancellationReason(BaseModel):
    """Why the customer cancels (Stripe's ``cancellation_details``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    feedback: CancellationFeedback | None = None
    comment: Annotated[str, StringConstraints(max_length=500, strip_whitespace=True)] | None = None


class SetCancelAtPeriodEnd(CallBase):
    """Set (``cancel_at_period_end=True``, optionally with a reason) or unset it."""

    type: Literal["subscription.set_cancel_at_period_end"] = "subscription.set_cancel_at_period_end"
    subscription_id: ObjectId
    cancel_at_period_end: bool
    reason: CancellationReason | None = None

    @model_validator(mode="after")
    def _reason_only_when_cancelling(self) -> SetCancelAtPeriodEnd:
        if self.reason is not None and not self.cancel_at_period_end:
            raise ValueError("a reason is given only when cancelling")
        return self


class ResumeSubscription(CallBase):
    """Resume a paused subscription: its paused payment collection (`pause_collection`),
    or its `paused` status (a trial that ended without a payment method)."""

    type: Literal["subscription.resume"] = "subscription.resume"
    subscription_id: ObjectId


class SetAutoPay(CallBase):
    """Auto-pay on (``charge_automatically``) or off (``send_invoice``): the
    subscription's collection method."""

    type: Literal["subscription.set_auto_pay"] = "subscription.set_auto_pay"
    subscription_id: ObjectId
    auto_pay: bool


# --- payment methods ---------------------------------------------------------------------


class CreateSetupSession(CallBase):
    """A Stripe Checkout session in ``setup`` mode; the card it collects becomes the
    customer's default when it completes. The result carries the session's ``url``."""

    type: Literal["payment_method.create_setup_session"] = "payment_method.create_setup_session"
    success_url: HttpUrlText
    cancel_url: HttpUrlText
    locale: Annotated[str, StringConstraints(pattern=r"^[a-z]{2}(-[A-Z]{2})?$")] | None = None


class SetDefaultPaymentMethod(CallBase):
    type: Literal["payment_method.set_default"] = "payment_method.set_default"
    payment_method_id: ObjectId


class DetachPaymentMethod(CallBase):
    """Remove a payment method; the default one is refused (``invalid_request``)."""

    type: Literal["payment_method.detach"] = "payment_method.detach"
    payment_method_id: ObjectId


# --- billing profile ---------------------------------------------------------------------


class Address(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    line1: ProfileText | None = None
    line2: ProfileText | None = None
    city: ProfileText | None = None
    state: ProfileText | None = None
    postal_code: Annotated[str, StringConstraints(max_length=32, strip_whitespace=True)] | None = (
        None
    )
    country: Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$")] | None = None


class TaxIdInput(BaseModel):
    """A tax id to add: Stripe's type (``eu_vat``, ``gb_vat``, ``us_ein``, …) and value."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Annotated[str, StringConstraints(pattern=r"^[a-z]{2,3}(_[a-z]+)+$", max_length=32)]
    value: Annotated[str, StringConstraints(min_length=1, max_length=64, strip_whitespace=True)]


class UpdateBillingProfile(CallBase):
    """Change the customer's billing details. ``None`` leaves a field unchanged, ``""``
    clears it; ``address`` replaces the whole address. Tax ids are added and removed
    (by id) in the same call."""

    type: Literal["customer.update_profile"] = "customer.update_profile"
    name: ProfileText | None = None
    email: (
        Annotated[
            str,
            StringConstraints(
                max_length=254, strip_whitespace=True, pattern=r"^(|[^@\s]+@[^@\s]+\.[^@\s]+)$"
            ),
        ]
        | None
    ) = None
    phone: (
        Annotated[
            str, StringConstraints(max_length=32, strip_whitespace=True, pattern=r"^[0-9+()\-. ]*$")
        ]
        | None
    ) = None
    address: Address | None = None
    tax_ids_add: Annotated[list[TaxIdInput], Field(max_length=10)] = []
    tax_ids_remove: Annotated[list[ObjectId], Field(max_length=10)] = []

    @model_validator(mode="after")
    def _changes_something(self) -> UpdateBillingProfile:
        fields = (self.name, self.email, self.phone, self.address)
        if all(f is None for f in fields) and not self.tax_ids_add and not self.tax_ids_remove:
            raise ValueError("nothing to change")
        return self


# --- invoices ----------------------------------------------------------------------------


class PayInvoice(CallBase):
    """Pay an open invoice with the default payment method. When the customer must act
    (3-D Secure, a decline) the error carries Stripe's ``hosted_invoice_url``."""

    type: Literal["invoice.pay"] = "invoice.pay"
    invoice_id: ObjectId


Call = Annotated[
    SetCancelAtPeriodEnd
    | ResumeSubscription
    | SetAutoPay
    | CreateSetupSession
    | SetDefaultPaymentMethod
    | DetachPaymentMethod
    | UpdateBillingProfile
    | PayInvoice,
    Field(discriminator="type"),
]

CALL_ADAPTER: TypeAdapter[Call] = TypeAdapter(Call)

CALL_TYPES: tuple[str, ...] = (
    "subscription.set_cancel_at_period_end",
    "subscription.resume",
    "subscription.set_auto_pay",
    "payment_method.create_setup_session",
    "payment_method.set_default",
    "payment_method.detach",
    "customer.update_profile",
    "invoice.pay",
)


def parse_call(raw: bytes | str | dict[str, Any]) -> Call:
    """Read a call from the wire; raises pydantic.ValidationError (never unpickles)."""
    if isinstance(raw, dict):
        return CALL_ADAPTER.validate_python(raw)
    return CALL_ADAPTER.validate_json(raw)


def dump_call(call: Call) -> bytes:
    return call.model_dump_json().encode("utf-8")
