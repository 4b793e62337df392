"""billing-sync's settings: the shared ones plus what only this service may hold.

The Stripe secret key and the key that encrypts per-site Stripe secrets live here and
nowhere else (DESIGN, Principle 2): other services load ``billfold.settings.Settings``,
which has no field for them, so even with ``BILLFOLD_STRIPE_API_KEY`` in their
environment they never read it into memory.
"""

from __future__ import annotations

import base64
import binascii

from pydantic import Field, SecretStr, field_validator

from billfold.settings import Settings

STRIPE_API_BASE = "https://api.stripe.com"


class BillingSyncSettings(Settings):
    # The deployment's Stripe key, used by every site that has no key of its own.
    # Optional: a deployment whose sites all bring their own key needs none.
    stripe_api_key: SecretStr | None = None
    # Stripe's API by default; the fake Stripe's URL in development and tests.
    stripe_api_base: str = STRIPE_API_BASE
    # AES-256 key (base64 of 32 bytes) that encrypts each site's webhook signing secret
    # and API key at rest. Required, with no default: a default key would be a key
    # everybody knows. `make run` and the tests generate one.
    billing_secrets_key: SecretStr
    # How often the reconciliation pass compares the mirror with Stripe (seconds).
    reconcile_interval: float = Field(default=3600.0, ge=1.0, le=7 * 86400.0)
    # Retries of a failed Stripe call inside the library (network errors, 409, 5xx).
    stripe_max_network_retries: int = Field(default=2, ge=0, le=10)
    # A webhook's Stripe-Signature timestamp may be this old (seconds), as Stripe's default.
    webhook_tolerance: int = Field(default=300, ge=1, le=3600)
    # Seconds a site's signing secret is kept in memory by the webhook endpoint (0: read
    # per delivery). A replaced or removed secret is accepted at most this long; a new one
    # applies at once (billing_sync.webhook_accounts).
    webhook_account_ttl: float = Field(default=5.0, ge=0.0, le=300.0)
    # Processing: due events are read in batches of up to worker_batch_size and grouped
    # by Stripe customer; up to worker_concurrency groups are processed at once, each in
    # its own transaction on the worker's own pool (worker_concurrency + 1 connections).
    # A failed one is retried with backoff up to worker_max_attempts, then left for
    # reconciliation (and an error log line).
    worker_batch_size: int = Field(default=50, ge=1, le=500)
    worker_concurrency: int = Field(default=8, ge=1, le=64)
    # Webhook acceptance first: the worker starts no customer group while more than this
    # many webhook deliveries are being answered by this process (billing_sync.priority).
    # 16: a steady 200/s keeps ~5 in flight (answers take ~25 ms), which must not hold
    # processing back; a saturating burst keeps every connection busy (32 in the bench).
    worker_yield_above: int = Field(default=16, ge=0, le=1000)
    # ... and for this long after the last time it was over (seconds): a burst's waves dip
    # below the limit between them, and groups started in a dip slow the next wave.
    worker_yield_hold: float = Field(default=0.2, ge=0.0, le=5.0)
    # ... except for this many groups, which go on meanwhile. 0 by default: measured, one
    # group running through a saturating burst cut acceptance to 0.25-0.33 of the bare
    # handler's rate (goal >= 0.5). Above 0, processing never stops altogether when the
    # CPU is so short that acceptance is always busy (docs/PERFORMANCE.md).
    worker_min_concurrency: int = Field(default=0, ge=0, le=64)
    worker_max_attempts: int = Field(default=12, ge=1, le=100)
    # Processed Stripe events are kept this long, then swept. Stripe retries a delivery
    # for up to 3 days, so the dedupe by event id outlives any redelivery (and one that
    # came later still would only refresh the object again).
    stripe_events_retention_days: int = Field(default=30, ge=4, le=3650)
    # Events for one object arriving within this window share one fetch from Stripe.
    coalesce_window: float = Field(default=0.05, ge=0.0, le=5.0)

    @field_validator("stripe_api_base")
    @classmethod
    def _api_base(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("billing_secrets_key")
    @classmethod
    def _aes_key(cls, value: SecretStr) -> SecretStr:
        try:
            raw = base64.b64decode(value.get_secret_value(), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("must be base64 of 32 random bytes") from None
        if len(raw) != 32:
            raise ValueError("must be base64 of 32 random bytes (AES-256)")
        return value

    def secrets_key_bytes(self) -> bytes:
        return base64.b64decode(self.billing_secrets_key.get_secret_value())


def new_secrets_key() -> str:
    """A fresh value for ``BILLFOLD_BILLING_SECRETS_KEY``."""
    import os

    return base64.b64encode(os.urandom(32)).decode("ascii")
