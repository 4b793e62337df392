"""Input models of the portal session endpoints and the JSON they return.

Inputs forbid unknown fields, so a typo (``sections[billing]``) is a 400 naming the
parameter instead of a silently ignored setting.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from billfold.sections import SECTION_DEFAULTS as SECTION_DEFAULTS  # re-exported
from billfold.sections import with_site_defaults
from session_api import urls
from session_api.forms import Bool, Int
from session_api.ids import iso

TTL_MIN = 60
TTL_MAX = 7 * 24 * 3600
DEFAULT_TTL = 3600

_LOCALE = re.compile(r"^(auto|[a-zA-Z]{2,3}(-[a-zA-Z0-9]{2,8})*)$")


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SubscriptionsSection(_Input):
    enabled: Bool | None = None
    allow_cancel: Bool | None = None


class InvoicesSection(_Input):
    enabled: Bool | None = None


class PaymentMethodsSection(_Input):
    enabled: Bool | None = None
    allow_update: Bool | None = None


class UsageSection(_Input):
    enabled: Bool | None = None


class ProfileSection(_Input):
    enabled: Bool | None = None
    allow_edit: Bool | None = None


class SectionsInput(_Input):
    subscriptions: SubscriptionsSection | None = None
    invoices: InvoicesSection | None = None
    payment_methods: PaymentMethodsSection | None = None
    usage: UsageSection | None = None
    profile: ProfileSection | None = None


class PaymentMethodUpdateFlow(_Input):
    type: Literal["payment_method_update"]


class SubscriptionCancelFlow(_Input):
    type: Literal["subscription_cancel"]
    subscription: Annotated[str, Field(pattern=r"^sub_[A-Za-z0-9_]{1,250}$")]


Flow = Annotated[PaymentMethodUpdateFlow | SubscriptionCancelFlow, Field(discriminator="type")]


class CreatePortalSession(_Input):
    customer: Annotated[str, Field(min_length=1, max_length=255)] | None = None
    customer_external_id: Annotated[str, Field(min_length=1, max_length=255)] | None = None
    return_url: Annotated[str, Field(max_length=2048)] | None = None
    ttl_seconds: Annotated[Int, Field(ge=TTL_MIN, le=TTL_MAX)] | None = None
    single_use: Bool = True
    sections: SectionsInput | None = None
    flow: Flow | None = None
    locale: Annotated[str, Field(max_length=35)] | None = None
    send_email: Bool = False

    @field_validator("return_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        return urls.check_http_url(value)  # InvalidURL is a ValueError: a 400

    @field_validator("locale")
    @classmethod
    def _locale(cls, value: str | None) -> str | None:
        if value is not None and not _LOCALE.fullmatch(value):
            raise ValueError("must be a language tag such as en or fr-CA, or auto")
        return value


class ListPortalSessions(_Input):
    customer: Annotated[str, Field(min_length=1, max_length=255)] | None = None
    include_expired: Bool = False
    limit: Annotated[Int, Field(ge=1, le=100)] = 10
    starting_after: Annotated[str, Field(min_length=1, max_length=255)] | None = None


def resolve_sections(
    site_defaults: dict[str, Any], requested: SectionsInput | None
) -> dict[str, dict[str, bool]]:
    """All-on defaults, then the site's defaults, then the request: a full settings map."""
    sections = with_site_defaults(site_defaults)
    if requested is not None:
        for name, section in requested:
            if section is None:
                continue
            for flag, value in section:
                if value is not None:
                    sections[name][flag] = value
    return sections


def status(
    *,
    now: datetime,
    expires_at: datetime,
    single_use: bool,
    used_at: datetime | None,
    revoked_at: datetime | None,
) -> str:
    if revoked_at is not None:
        return "revoked"
    if used_at is not None and single_use:
        return "used"
    if expires_at <= now:
        return "expired"
    return "active"


def session_json(row: Any, now: datetime) -> dict[str, Any]:
    """The public shape of a portal session (never the token: see ``created_json``)."""
    return {
        "id": row["id"],
        "object": "portal_session",
        "customer": row["customer_id"],
        "status": status(
            now=now,
            expires_at=row["expires_at"],
            single_use=row["single_use"],
            used_at=row["used_at"],
            revoked_at=row["revoked_at"],
        ),
        "single_use": row["single_use"],
        "sections": row["sections"],
        "flow": row["flow"],
        "return_url": row["return_url"],
        "locale": row["locale"],
        "send_email": row["send_email"],
        "expires_at": iso(row["expires_at"]),
        "created_at": iso(row["created_at"]),
        "used_at": iso(row["used_at"]),
        "used_ip": row["used_ip"],
        "used_user_agent": row["used_user_agent"],
        "revoked_at": iso(row["revoked_at"]),
    }
