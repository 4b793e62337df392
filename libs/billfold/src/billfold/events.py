"""The events on ``billfold.events``: one envelope, one discriminated union.

Producers build a typed event and write it to their outbox; consumers read bytes back
through the one ``TypeAdapter`` (``parse_event``), so producer and consumer can never
disagree on a shape. The routing key is the event ``type``.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter


def new_event_id() -> str:
    return f"evt_{uuid.uuid4().hex}"


def utcnow() -> datetime:
    return datetime.now(UTC)


class _Data(BaseModel):
    # Consumers of an older version must still read a newer producer's payload.
    model_config = ConfigDict(extra="allow", frozen=True)


class PortalSessionData(_Data):
    session_id: str
    customer_id: str
    expires_at: datetime
    single_use: bool = True
    send_email: bool = False
    locale: str | None = None
    return_url: str | None = None
    # Used/revoked/expired carry when it happened; created carries nothing extra.
    at: datetime | None = None
    ip: str | None = None
    user_agent: str | None = None
    # created with send_email: the link URL sealed to the notifier (billfold.sealing);
    # never the readable link.
    sealed_link: str | None = None


class LoginCodeRequestedData(_Data):
    attempt_id: str
    email: str
    locale: str | None = None
    expires_at: datetime
    # The 6-digit code sealed to the notifier (billfold.sealing); never the code itself.
    sealed_code: str | None = None


# The mirror's change events (billing-sync): ids are Billfold's customer id (cu_…) and
# Stripe's object ids; consumers re-read the mirror for details. ``deleted`` says the
# object is gone (customer deleted, subscription ended, draft invoice deleted, payment
# method detached), so a consumer can drop what it cached.


class CustomerData(_Data):
    customer_id: str
    stripe_id: str | None = None
    external_id: str | None = None
    deleted: bool = False


class SubscriptionData(_Data):
    subscription_id: str
    customer_id: str
    status: str | None = None
    deleted: bool = False


class InvoiceData(_Data):
    invoice_id: str
    customer_id: str
    status: str | None = None
    deleted: bool = False


class PaymentMethodData(_Data):
    payment_method_id: str
    customer_id: str
    is_default: bool = False
    deleted: bool = False


class PortalActionData(_Data):
    """What a customer did in the portal (portal-web's audit record, as an event).

    ``action`` names it (``subscription.cancel``, ``payment_method.set_default``, …),
    ``target`` the object (``sub_…``, ``pm_…``, ``in_…``; None for the profile),
    ``session_id`` the portal session (``ps_…``) and ``browser_session_id`` the browser
    session (``bs_…``) it was done in; a customer who signed in by email code has no
    portal session but a ``sign_in_id`` (``si_…``). ``outcome`` is ``ok`` or the failure's kind
    (``stripe_error``, ``invalid_request``, ``not_found``, ``unavailable``) with its
    ``error_code``: an attempt that failed is still something the customer did.
    """

    customer_id: str
    action: str
    target: str | None = None
    session_id: str | None = None
    sign_in_id: str | None = None
    browser_session_id: str | None = None
    audit_id: str | None = None
    outcome: str = "ok"
    error_code: str | None = None
    at: datetime | None = None


class _Envelope(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str = Field(default_factory=new_event_id)
    version: int = 1
    occurred_at: datetime = Field(default_factory=utcnow)
    site_id: str
    request_id: str | None = None

    @property
    def routing_key(self) -> str:
        return str(getattr(self, "type"))  # noqa: B009 - every subclass defines `type`


class PortalSessionCreated(_Envelope):
    type: Literal["portal_session.created"] = "portal_session.created"
    data: PortalSessionData


class PortalSessionUsed(_Envelope):
    type: Literal["portal_session.used"] = "portal_session.used"
    data: PortalSessionData


class PortalSessionRevoked(_Envelope):
    type: Literal["portal_session.revoked"] = "portal_session.revoked"
    data: PortalSessionData


class PortalSessionExpired(_Envelope):
    type: Literal["portal_session.expired"] = "portal_session.expired"
    data: PortalSessionData


class LoginCodeRequested(_Envelope):
    type: Literal["login.code_requested"] = "login.code_requested"
    data: LoginCodeRequestedData


class CustomerUpdated(_Envelope):
    type: Literal["customer.updated"] = "customer.updated"
    data: CustomerData


class SubscriptionUpdated(_Envelope):
    type: Literal["subscription.updated"] = "subscription.updated"
    data: SubscriptionData


class InvoiceUpdated(_Envelope):
    type: Literal["invoice.updated"] = "invoice.updated"
    data: InvoiceData


class PaymentMethodUpdated(_Envelope):
    type: Literal["payment_method.updated"] = "payment_method.updated"
    data: PaymentMethodData


class PortalAction(_Envelope):
    type: Literal["portal.action"] = "portal.action"
    data: PortalActionData


Event = Annotated[
    PortalSessionCreated
    | PortalSessionUsed
    | PortalSessionRevoked
    | PortalSessionExpired
    | LoginCodeRequested
    | CustomerUpdated
    | SubscriptionUpdated
    | InvoiceUpdated
    | PaymentMethodUpdated
    | PortalAction,
    Field(discriminator="type"),
]

EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)

EVENT_TYPES: tuple[str, ...] = (
    "portal_session.created",
    "portal_session.used",
    "portal_session.revoked",
    "portal_session.expired",
    "login.code_requested",
    "customer.updated",
    "subscription.updated",
    "invoice.updated",
    "payment_method.updated",
    "portal.action",
)


def parse_event(raw: bytes | str | dict[str, Any]) -> Event:
    """Read an event from the wire or an outbox row; raises pydantic.ValidationError."""
    if isinstance(raw, dict):
        return EVENT_ADAPTER.validate_python(raw)
    return EVENT_ADAPTER.validate_json(raw)


def dump_event(event: Event) -> bytes:
    return event.model_dump_json().encode("utf-8")
