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

import asyncpg

from billfold.ttl_cache import MISS, TtlCache
from billing_sync import accounts
from billing_sync.secrets import SecretBox

SIZE = 1024  # sites


class WebhookAccounts:
    def __init__(self, box: SecretBox, ttl: float) -> None:
        self.box = box
        self._kept: TtlCache[str, accounts.SiteAccount] = TtlCache(ttl, max_size=SIZE)

    def kept(self, site: str) -> accounts.SiteAccount | None:
        """The site's account if one was read less than ``ttl`` seconds ago."""
        account = self._kept.get(site)
        return None if account is MISS else account

    async def refresh(self, pool: asyncpg.Pool, site: str) -> accounts.SiteAccount | None:
        """Read (and keep) the site's account; ``None`` for an unknown site (not kept)."""
        async with pool.acquire() as conn:
            account = await accounts.get(conn, self.box, site)
        if account is None:
            self._kept.drop(site)
        else:
            self._kept.put(site, account)
        return account
