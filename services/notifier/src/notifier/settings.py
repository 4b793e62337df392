"""The notifier's own settings: the shared ``Settings`` plus what only the notifier reads.

Every field is still a ``BILLFOLD_*`` variable; names and defaults of what all services
share stay in ``billfold.settings``.
"""

from __future__ import annotations

import base64
import binascii
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from billfold.sealing import check_private_key
from billfold.settings import Settings, SettingsError, load_settings

# SMTP retries: transient failures (connection refused, 4xx) back off over ~30 minutes.
DEFAULT_EMAIL_RETRY_DELAYS = (1.0, 2.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0)
# Webhooks: a tenant endpoint may be down for a while; retries span about 3 days.
DEFAULT_WEBHOOK_RETRY_DELAYS = (
    10.0,
    60.0,
    300.0,
    1800.0,
    3600.0,
    3 * 3600.0,
    6 * 3600.0,
    12 * 3600.0,
    24 * 3600.0,
    24 * 3600.0,
)


class NotifierSettings(Settings):
    # SMTP: smtp://host:port (plain, or STARTTLS with smtp_starttls), smtps://user:pass@host:465.
    smtp_url: str = "smtp://127.0.0.1:1025"
    smtp_starttls: bool = False
    smtp_timeout: float = Field(default=10.0, gt=0, le=120)
    # SMTP connections one replica keeps open and sends over in parallel.
    smtp_pool_size: int = Field(default=8, ge=1, le=100)
    # Sender when the site has none of its own (notify.senders); the display name is
    # the site's name.
    mail_from: str = "billing@billfold.localhost"
    # The private half of the key producers seal links and codes to (billfold.sealing).
    notifier_private_key: str | None = None
    # AES-256-GCM key (32 bytes, URL-safe base64) under which tenant webhook signing
    # secrets are stored: the notifier must sign with them, so they cannot be hashes.
    notifier_data_key: str | None = None
    # Retry schedules (seconds between attempts; the attempt after the last is the end).
    email_retry_delays: tuple[float, ...] = DEFAULT_EMAIL_RETRY_DELAYS
    webhook_retry_delays: tuple[float, ...] = DEFAULT_WEBHOOK_RETRY_DELAYS
    webhook_timeout: float = Field(default=10.0, gt=0, le=60)
    # Development and tests only: allow webhook URLs on loopback/private addresses.
    webhook_allow_private: bool = False
    # How many deliveries one replica sends at once, and how long a claimed delivery
    # stays reserved for the replica that claimed it (then another may retry it).
    dispatch_concurrency: int = Field(default=32, ge=1, le=500)
    dispatch_lease: float = Field(default=60.0, gt=0, le=3600)
    dispatch_poll: float = Field(default=5.0, gt=0, le=60)
    # Sent deliveries (and the webhook delivery log) are kept this long.
    delivery_retention_days: float = Field(default=30.0, gt=0, le=3650)

    @field_validator("smtp_url")
    @classmethod
    def _smtp_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ValueError("must look like smtp://host:port or smtps://user:pass@host:465")
        return value

    @field_validator("notifier_private_key")
    @classmethod
    def _private_key(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        return check_private_key(value)

    @field_validator("notifier_data_key")
    @classmethod
    def _data_key(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        try:
            raw = base64.urlsafe_b64decode(value.strip().encode("ascii"))
        except (binascii.Error, ValueError):
            raise ValueError("must be URL-safe base64") from None
        if len(raw) != 32:
            raise ValueError("must be 32 bytes (URL-safe base64)")
        return value.strip()

    @field_validator("email_retry_delays", "webhook_retry_delays")
    @classmethod
    def _delays(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if any(d < 0 for d in value):
            raise ValueError("delays must not be negative")
        return value

    def data_key_bytes(self) -> bytes:
        if self.notifier_data_key is None:
            raise SettingsError("billfold: BILLFOLD_NOTIFIER_DATA_KEY is not set")
        return base64.urlsafe_b64decode(self.notifier_data_key.encode("ascii"))


def load_notifier_settings() -> NotifierSettings:
    """The notifier's settings, or one readable line and exit 2 (the shared loader)."""
    return load_settings(NotifierSettings)
