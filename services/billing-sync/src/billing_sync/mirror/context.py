"""What a refresh needs: the transaction's connection, the site's account and client."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import stripe

from billfold import outbox
from billfold.events import Event
from billing_sync import accounts
from billing_sync.accounts import SiteAccount
from billing_sync.dbtypes import Conn

SCHEMA = "mirror"


@dataclass
class SyncContext:
    conn: Conn
    account: SiteAccount
    client: stripe.StripeClient
    #: events enqueued by this context (for logs and tests)
    emitted: list[str] = field(default_factory=list)
    #: The sites sharing this Stripe account, if the caller knows them already (the
    #: worker reads them once per dispatch round, not once per customer group).
    shared_sites: list[tuple[str, bool]] | None = field(default=None, repr=False)

    async def sites(self) -> list[tuple[str, bool]]:
        """The sites sharing this Stripe account (site id, is default), read once per
        context: a refresh asks several times, and each ask is a round trip."""
        if self.shared_sites is None:
            self.shared_sites = await accounts.sites_of(self.conn, self.account.account_ref)
        return self.shared_sites

    async def emit(self, event: Event, ordering_key: str) -> None:
        """Enqueue a change event in the caller's transaction (billing-sync's outbox)."""
        await outbox.enqueue(self.conn, SCHEMA, event, ordering_key=ordering_key)
        self.emitted.append(event.type)


def ts(value: int | None) -> datetime | None:
    """A Stripe unix timestamp as an aware datetime."""
    return None if value is None else datetime.fromtimestamp(value, UTC)


def ref_id(value: Any) -> str | None:
    """An ``ExpandableField``'s id, whether Stripe sent the id or the expanded object."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    # An expanded object: a StripeObject, or plain JSON (a raw_request answer).
    ident = value.get("id") if isinstance(value, dict) else getattr(value, "id", None)
    return ident if isinstance(ident, str) else None


def plain(value: Any) -> Any:
    """A StripeObject (or list of them) as plain JSON-able data, for jsonb columns."""
    if value is None:
        return None
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, stripe.StripeObject):
        return value.to_dict(recursive=True, for_json=True)
    return value


def is_missing(exc: stripe.StripeError) -> bool:
    """Stripe says the object does not exist (deleted, or never in this account)."""
    return isinstance(exc, stripe.InvalidRequestError) and exc.code == "resource_missing"
