"""Sending through SMTP (aiosmtplib), and telling transient failures from permanent ones.

``BILLFOLD_SMTP_URL``: ``smtp://host:port`` (plain; STARTTLS when
``BILLFOLD_SMTP_STARTTLS`` is true) or ``smtps://user:pass@host:465`` (implicit TLS).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from email.message import EmailMessage
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


async def send(config: SmtpConfig, message: EmailMessage) -> None:
    """Hand ``message`` to the SMTP server; raise ``DeliveryFailed`` if it did not accept it."""
    try:
        await aiosmtplib.send(
            message,
            hostname=config.host,
            port=config.port,
            use_tls=config.use_tls,
            start_tls=config.start_tls,
            username=config.username,
            password=config.password,
            timeout=config.timeout,
        )
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
        raise classify(exc) from exc
