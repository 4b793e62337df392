"""Rendering emails: Jinja2 templates (autoescaped HTML, plain text) translated with
gettext catalogs (``locales/<lang>/LC_MESSAGES/messages.po``, read by Babel), dates
formatted by Babel in the recipient's locale."""

from __future__ import annotations

import gettext
from dataclasses import dataclass
from datetime import UTC, datetime
from email.charset import QP, Charset
from email.header import Header
from email.message import Message
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import format_datetime, formataddr
from functools import lru_cache
from pathlib import Path
from typing import Any

from babel import Locale, UnknownLocaleError
from babel.dates import format_datetime as babel_datetime
from babel.messages.pofile import read_po
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from notifier.directory import Site

PACKAGE = Path(__file__).resolve().parents[1]
TEMPLATES = PACKAGE / "templates"
LOCALES = PACKAGE / "locales"
LANGUAGES = ("en", "de")  # en is the source language: its catalog is the msgids
DEFAULT_COLOR = "#2f6feb"
# Quoted-printable bodies: 7-bit safe for any server, and readable in a raw .eml.
_UTF8_QP = Charset("utf-8")
_UTF8_QP.body_encoding = QP


class _Catalog(gettext.NullTranslations):
    def __init__(self, messages: dict[str, str]) -> None:
        super().__init__()
        self._messages = messages

    def gettext(self, message: str) -> str:
        return self._messages.get(message) or message

    def ngettext(self, msgid1: str, msgid2: str, n: int) -> str:
        return self.gettext(msgid1 if n == 1 else msgid2)


@lru_cache(maxsize=len(LANGUAGES))
def catalog(lang: str) -> gettext.NullTranslations:
    path = LOCALES / lang / "LC_MESSAGES" / "messages.po"
    if not path.exists():
        return gettext.NullTranslations()
    with path.open("rb") as fh:
        catalog = read_po(fh, locale=lang)
    messages = {str(m.id): str(m.string) for m in catalog if m.id and isinstance(m.string, str)}
    return _Catalog(messages)


@lru_cache(maxsize=len(LANGUAGES))
def environment(lang: str) -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False),
        undefined=StrictUndefined,
        extensions=["jinja2.ext.i18n"],
        keep_trailing_newline=True,
    )
    env.install_gettext_translations(catalog(lang), newstyle=True)  # type: ignore[attr-defined]
    return env


def language(*candidates: str | None) -> tuple[str, Locale]:
    """The first candidate locale we have templates for (``de-AT`` -> de), and the Babel
    locale to format dates with (the candidate itself, so de_AT keeps its own formats)."""
    for candidate in candidates:
        if not candidate:
            continue
        try:
            locale = Locale.parse(candidate.replace("-", "_"))
        except (UnknownLocaleError, ValueError):
            continue
        if locale.language in LANGUAGES:
            return locale.language, locale
    return "en", Locale.parse("en")


@dataclass(frozen=True, slots=True)
class Rendered:
    subject: str
    text: str
    html: str


def render(kind: str, lang: str, locale: Locale, site: Site, **context: Any) -> Rendered:
    """Render email ``kind`` (``portal_link`` or ``login_code``) for ``site``."""
    env = environment(lang)
    expires_at: datetime = context.pop("expires_at")
    values = {
        "site": site,
        "lang": lang,
        "color": site.primary_color or DEFAULT_COLOR,
        "expiry": babel_datetime(expires_at, format="long", tzinfo=UTC, locale=locale),
        **context,
    }
    subject_ids = {
        "portal_link": "Manage your billing with %(site)s",
        "login_code": "Your sign-in code for %(site)s",
    }
    subject = catalog(lang).gettext(subject_ids[kind]) % {"site": site.name}
    values["subject"] = subject
    return Rendered(
        subject=subject,
        text=env.get_template(f"{kind}.txt").render(values),
        html=env.get_template(f"{kind}.html").render(values),
    )


def message(
    rendered: Rendered,
    *,
    site: Site,
    default_from: str,
    to: str,
    message_id: str,
    now: datetime | None = None,
) -> Message:
    """The MIME message: plain text and HTML alternatives, from the site's sender.

    Built with the ``email.mime`` classes (compat32 policy): the ``EmailMessage`` API
    re-parses every header it is given and was most of the notifier's CPU per email
    (docs/PERFORMANCE.md); the bytes on the wire are standard MIME either way.
    """
    msg = MIMEMultipart("alternative")
    name = site.from_name or site.name
    msg["From"] = formataddr((name, site.from_address or default_from), charset="utf-8")
    msg["To"] = to
    msg["Subject"] = Header(rendered.subject, "utf-8").encode()
    msg["Date"] = format_datetime(now or datetime.now(UTC))
    # Stable per delivery: if a crash makes us send twice, mail clients see one message.
    msg["Message-ID"] = message_id
    msg["Auto-Submitted"] = "auto-generated"
    if site.support_email:
        msg["Reply-To"] = site.support_email
    msg.attach(MIMEText(rendered.text, "plain", _UTF8_QP))  # type: ignore[arg-type]
    msg.attach(MIMEText(rendered.html, "html", _UTF8_QP))  # type: ignore[arg-type]
    return msg
