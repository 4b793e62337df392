"""Turning an email delivery into a sent message: open the sealed secret, find the
recipient and the site, render, send."""

from __future__ import annotations

import asyncpg

from billfold.events import LoginCodeRequested, PortalSessionCreated, parse_event
from billfold.sealing import SealingError, open_sealed
from notifier import directory
from notifier.deliveries import Delivery
from notifier.email import render, smtp
from notifier.failures import permanent, transient
from notifier.settings import NotifierSettings


class EmailSender:
    def __init__(self, pool: asyncpg.Pool, settings: NotifierSettings) -> None:
        if settings.notifier_private_key is None:
            raise ValueError("BILLFOLD_NOTIFIER_PRIVATE_KEY is required to send emails")
        self.pool = pool
        self.settings = settings
        self.private_key = settings.notifier_private_key
        self.smtp = smtp.SmtpPool(smtp.SmtpConfig.from_settings(settings), settings.smtp_pool_size)
        self.domain = settings.mail_from.rpartition("@")[2] or "billfold.localhost"

    def _open(self, sealed: str | None, what: str) -> str:
        if not sealed:
            raise permanent(f"event carries no sealed {what}")
        try:
            return open_sealed(self.private_key, sealed)
        except SealingError as exc:
            raise permanent(f"sealed {what} cannot be opened: {exc}") from None

    async def _site(self, site_id: str) -> directory.Site:
        site = await directory.site(self.pool, site_id)
        if site is None:
            raise permanent(f"no such site: {site_id}")
        return site

    async def __call__(self, delivery: Delivery) -> None:
        event = parse_event(delivery.payload)
        message_id = f"<{delivery.id}@{self.domain}>"
        if isinstance(event, PortalSessionCreated):
            data = event.data
            site = await self._site(event.site_id)
            customer = await directory.customer(self.pool, event.site_id, data.customer_id)
            if customer is None:
                # billing-sync may not have mirrored it yet: worth retrying for a while.
                raise transient(f"customer {data.customer_id} is not mirrored")
            if not customer.email:
                raise permanent(f"customer {data.customer_id} has no email address")
            link = self._open(data.sealed_link, "link")
            lang, locale = render.language(data.locale, site.default_locale)
            rendered = render.render(
                "portal_link",
                lang,
                locale,
                site,
                name=customer.name,
                link=link,
                single_use=data.single_use,
                expires_at=data.expires_at,
            )
            to = customer.email
        elif isinstance(event, LoginCodeRequested):
            data_code = event.data
            site = await self._site(event.site_id)
            code = self._open(data_code.sealed_code, "code")
            lang, locale = render.language(data_code.locale, site.default_locale)
            rendered = render.render(
                "login_code", lang, locale, site, code=code, expires_at=data_code.expires_at
            )
            to = data_code.email
        else:
            raise permanent(f"no email for {event.type}")
        msg = render.message(
            rendered,
            site=site,
            default_from=self.settings.mail_from,
            to=to,
            message_id=message_id,
        )
        await self.smtp.send(msg)

    async def close(self) -> None:
        await self.smtp.close()
