"""Sending through SMTP (aiosmtplib), and telling transient failures from permanent ones.

``BILLFOLD_SMTP_URL``: ``smtp://host:port`` (plain; STARTTLS when
``BILLFOLD_SMTP_STARTTLS`` is true) or ``smtps://user:pass@host:465`` (implicit TLS).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from email.message import Message
from urllib.parse import unquote, urlsplit

import aiosmtplib

from notifier.failures import DeliveryFailed, permanent, transient
from notifier.settings import NotifierSettings


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int
    use_tls: bool
    start_tls: bool
    timeout: float
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @classmethod
    def from_settings(cls, settings: NotifierSettings) -> SmtpConfig:
        parts = urlsplit(settings.smtp_url)
        implicit = parts.scheme == "smtps"
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or (465 if implicit else 25),
            use_tls=implicit,
            start_tls=settings.smtp_starttls and not implicit,
            timeout=settings.smtp_timeout,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
        )


def classify(exc: BaseException) -> DeliveryFailed:
    """A 5xx answer is permanent (the server will say the same again); 4xx answers,
    refused connections, disconnects and timeouts are transient."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        codes = [err.code for err in exc.recipients]
        reason = "; ".join(f"{err.code} {err.message}" for err in exc.recipients)
        if codes and all(code >= 500 for code in codes):
            return permanent(f"smtp recipient refused: {reason}")
        return transient(f"smtp recipient refused: {reason}")
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        text = f"smtp {exc.code} {exc.message}"
        return permanent(text) if exc.code >= 500 else transient(text)
    return transient(f"smtp unavailable: {type(exc).__name__}")


_SMTP_ERRORS = (aiosmtplib.SMTPException, OSError, TimeoutError)


class SmtpPool:
    """Up to ``size`` SMTP connections kept open between messages.

    A connection per message costs a TCP (and TLS) handshake, EHLO, AUTH and QUIT each
    time; reusing them is what lets one replica keep up with bursts. A connection that
    failed in any way is closed, never reused; one idle longer than ``max_idle`` (servers
    drop idle clients) is closed instead of being tried.
    """

    def __init__(self, config: SmtpConfig, size: int, max_idle: float = 10.0) -> None:
        self.config = config
        self.max_idle = max_idle
        self._slots = asyncio.Semaphore(size)
        self._idle: list[tuple[aiosmtplib.SMTP, float]] = []

    def _client(self) -> aiosmtplib.SMTP:
        c = self.config
        return aiosmtplib.SMTP(
            hostname=c.host,
            port=c.port,
            use_tls=c.use_tls,
            start_tls=c.start_tls,
            username=c.username,
            password=c.password,
            timeout=c.timeout,
        )

    def _take(self) -> aiosmtplib.SMTP | None:
        now = time.monotonic()
        while self._idle:
            client, since = self._idle.pop()
            if client.is_connected and now - since < self.max_idle:
                return client
            _discard(client)
        return None

    async def send(self, message: Message) -> None:
        """Hand ``message`` to the SMTP server; raise ``DeliveryFailed`` if it did not
        accept it."""
        async with self._slots:
            client = self._take()
            if client is not None:
                try:
                    await client.send_message(message)
                except aiosmtplib.SMTPServerDisconnected:
                    # The server closed the idle connection before our command: nothing
                    # was sent, so a fresh connection may try.
                    _discard(client)
                except _SMTP_ERRORS as exc:
                    _discard(client)
                    raise classify(exc) from exc
                else:
                    self._idle.append((client, time.monotonic()))
                    return
            client = self._client()
            try:
                await client.connect()
                await client.send_message(message)
            except _SMTP_ERRORS as exc:
                _discard(client)
                raise classify(exc) from exc
            self._idle.append((client, time.monotonic()))

    async def close(self) -> None:
        idle, self._idle = self._idle, []

        async def quit(client: aiosmtplib.SMTP) -> None:
            with contextlib.suppress(*_SMTP_ERRORS):
                await client.quit(timeout=2)
            _discard(client)

        await asyncio.gather(*(quit(client) for client, _ in idle))


def _discard(client: aiosmtplib.SMTP) -> None:
    with contextlib.suppress(Exception):
        client.close()
