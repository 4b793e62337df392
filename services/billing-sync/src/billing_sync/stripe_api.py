"""The one way billing-sync talks to Stripe: the official ``stripe`` library, configured once.

* The API version is pinned here, in :data:`API_VERSION`, and nowhere else (a test keeps
  it equal to the version the installed library's typed classes describe, so a library
  upgrade is a conscious change of both).
* Every client retries network errors, 409s and 5xx (``max_network_retries``) and shares
  one aiohttp connection pool; calls are the library's ``*_async`` methods.
* A site uses its own API key if it has one, else the deployment's; with a Connect
  account id every call carries ``Stripe-Account``.
* Every write carries an idempotency key derived from what the write means
  (:func:`idempotency_key`), so a retried operation is the same operation at Stripe.
"""

from __future__ import annotations

import hashlib

import stripe

from billing_sync.accounts import SiteAccount
from billing_sync.settings import BillingSyncSettings

#: The Stripe API version every request asks for (and the fake Stripe serves).
API_VERSION = "2026-10-28.endive"


class NoStripeKey(Exception):
    """The site has no API key of its own and the deployment has none either."""


def idempotency_key(operation: str, *parts: str) -> str:
    """A stable key for one logical write: the same operation on the same inputs gives the
    same key, so a retry after a lost response cannot apply twice."""
    digest = hashlib.sha256("\x00".join((operation, *parts)).encode()).hexdigest()[:32]
    return f"billfold-{operation}-{digest}"


def write_options(key: str) -> stripe.RequestOptions:
    """Request options for a write; an idempotency key is not optional."""
    if not key:
        raise ValueError("every write to Stripe needs an idempotency key")
    return {"idempotency_key": key}


class StripeGateway:
    """Stripe clients per (API key, Connect account), over one shared HTTP client."""

    def __init__(self, settings: BillingSyncSettings) -> None:
        self._settings = settings
        self._http = stripe.AIOHTTPClient(timeout=30)
        self._clients: dict[tuple[str, str | None], stripe.StripeClient] = {}

    def _key(self, account: SiteAccount) -> str:
        key = account.api_key
        if key is None and self._settings.stripe_api_key is not None:
            key = self._settings.stripe_api_key.get_secret_value()
        if not key:
            raise NoStripeKey(
                f"site {account.site_id} has no Stripe API key and BILLFOLD_STRIPE_API_KEY "
                "is not set"
            )
        return key

    def is_live(self, account: SiteAccount) -> bool:
        """The site's key is a live-mode key (real money)."""
        return self._key(account).startswith(("sk_live_", "rk_live_"))

    def client(self, account: SiteAccount) -> stripe.StripeClient:
        key = self._key(account)
        cache_key = (key, account.connect_account_id)
        client = self._clients.get(cache_key)
        if client is None:
            client = self._clients[cache_key] = stripe.StripeClient(
                key,
                stripe_account=account.connect_account_id,
                stripe_version=API_VERSION,
                base_addresses={"api": self._settings.stripe_api_base},
                max_network_retries=self._settings.stripe_max_network_retries,
                http_client=self._http,
            )
        return client

    async def close(self) -> None:
        self._clients.clear()
        await self._http.close_async()  # type: ignore[no-untyped-call]
