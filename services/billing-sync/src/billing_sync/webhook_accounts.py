"""The sites' accounts as the webhook endpoint needs them, kept a few seconds in memory.

Every delivery needs its site's signing secret. Read and decrypted per delivery, that
was the largest single cost of accepting one (a query plus two AES-GCM openings: ~13 % of
billing-sync's CPU per delivery in a saturating burst, docs/PERFORMANCE.md). Kept for
``ttl`` seconds instead, with one rule that keeps a changed secret from being refused:
a signature that does not verify with a kept secret is checked again against a fresh
read (``refresh``), so ``billfold site update S --stripe-webhook-secret …`` applies to
the very next delivery. The cost of keeping: a secret that was replaced or removed is
still accepted for at most ``ttl`` seconds (Stripe itself signs with the old secret for
as long as a roll's overlap lasts, up to a day). Unknown sites are never kept, so a
stream of made-up sites costs what it did (one query each) and fills nothing.
"""

from __future__ import annotations

import time

import asyncpg

from billing_sync import accounts
from billing_sync.secrets import SecretBox

SIZE = 1024  # sites; beyond it the oldest entry makes room


class WebhookAccounts:
    def __init__(self, box: SecretBox, ttl: float) -> None:
        self.box = box
        self.ttl = ttl
        self._kept: dict[str, tuple[float, accounts.SiteAccount]] = {}

    def kept(self, site: str) -> accounts.SiteAccount | None:
        """The site's account if one was read less than ``ttl`` seconds ago."""
        entry = self._kept.get(site)
        if entry is None:
            return None
        if time.monotonic() - entry[0] >= self.ttl:
            del self._kept[site]
            return None
        return entry[1]

    async def refresh(self, pool: asyncpg.Pool, site: str) -> accounts.SiteAccount | None:
        """Read (and keep) the site's account; ``None`` for an unknown site (not kept)."""
        async with pool.acquire() as conn:
            account = await accounts.get(conn, self.box, site)
        if account is None or self.ttl <= 0:
            self._kept.pop(site, None)
            return account
        if site not in self._kept and len(self._kept) >= SIZE:
            del self._kept[next(iter(self._kept))]
        self._kept[site] = (time.monotonic(), account)
        return account
