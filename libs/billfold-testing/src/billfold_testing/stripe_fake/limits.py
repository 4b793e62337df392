"""Stripe's 429s, on demand: the next N API requests are refused as Stripe refuses them.

Two kinds, as Stripe sends them:

* ``rate_limit`` — the account's request rate (or concurrency) limiter. The body is an
  ``invalid_request_error`` with code ``rate_limit``; Stripe does not advise a retry
  (no ``Stripe-Should-Retry: true``), so the official libraries do not retry it: the
  caller must back off itself.
* ``lock_timeout`` — another request holds the object. Stripe answers 429 with code
  ``lock_timeout`` and ``Stripe-Should-Retry: true``, so the libraries retry it
  (``max_network_retries``).

A limited request is refused before it runs: nothing changes, and nothing is stored under
its idempotency key (the retry with the same key runs the write once). Limits may apply
to one API key only (each test site has its own key, i.e. its own Stripe account).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .errors import StripeError

Kind = Literal["rate_limit", "lock_timeout"]
KINDS: tuple[Kind, ...] = ("rate_limit", "lock_timeout")

_MESSAGES: dict[Kind, str] = {
    "rate_limit": (
        "Request rate limit exceeded. Learn more about rate limits here "
        "https://stripe.com/docs/rate-limits."
    ),
    "lock_timeout": (
        "This object cannot be accessed right now because another API request or Stripe "
        "process is currently accessing it. If you see this error intermittently, retry "
        "the request. If you see this error frequently and are making multiple concurrent "
        "requests to a single object, make your requests serially or at a lower rate."
    ),
}


@dataclass
class RateLimiter:
    """How many of the next API requests get a 429, and how many already did."""

    remaining: int = 0
    kind: Kind = "rate_limit"
    api_key: str | None = None  # None: every key
    limited: int = 0  # 429s answered so far (kept across arm() calls; reset() clears)

    def arm(self, requests: int, kind: Kind = "rate_limit", api_key: str | None = None) -> None:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}")
        self.remaining = max(0, requests)
        self.kind = kind
        self.api_key = api_key or None

    def take(self, api_key: str) -> tuple[StripeError, dict[str, str]] | None:
        """The error and extra headers for this request, if it is limited."""
        if self.remaining <= 0 or (self.api_key is not None and api_key != self.api_key):
            return None
        self.remaining -= 1
        self.limited += 1
        error = StripeError(429, "invalid_request_error", _MESSAGES[self.kind], code=self.kind)
        headers = {"Stripe-Should-Retry": "true"} if self.kind == "lock_timeout" else {}
        return error, headers

    def describe(self) -> dict[str, object]:
        return {
            "remaining": self.remaining,
            "kind": self.kind,
            "one_key": self.api_key is not None,  # never echo a key back
            "limited": self.limited,
        }
