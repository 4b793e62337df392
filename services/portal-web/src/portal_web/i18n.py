"""Messages (gettext catalogues) and the locale of a request.

The catalogues are ``locales/<lang>/LC_MESSAGES/messages.po``, English being the source
language. They are compiled in memory at import (babel's ``read_po``/``write_mo``), so a
fresh clone needs no build step and no ``.mo`` file is ever out of step with its ``.po``.

A page's locale: the portal session's ``locale`` (unless absent or ``auto``), else the
browser's ``Accept-Language``, else the site's default, else English. Messages use the
language if we have it; numbers and dates use the full tag when Babel knows it (so
``en-GB`` gets English words and British dates).
"""

from __future__ import annotations

import contextvars
import gettext as _gettext
import io
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from babel import Locale, UnknownLocaleError
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import Translations
from markupsafe import Markup

LOCALES_DIR = Path(__file__).parent / "locales"
SOURCE_LANGUAGE = "en"
LANGUAGES = ("en", "de")


@cache
def translations(language: str) -> _gettext.NullTranslations:
    if language == SOURCE_LANGUAGE:
        return _gettext.NullTranslations()
    po = LOCALES_DIR / language / "LC_MESSAGES" / "messages.po"
    with po.open("rb") as f:
        catalog = read_po(f, locale=language)
    buf = io.BytesIO()
    write_mo(buf, catalog)
    buf.seek(0)
    return Translations(fp=buf)


@dataclass(frozen=True, slots=True)
class PageLocale:
    language: str  # one of LANGUAGES: the messages
    locale: Locale  # numbers, currencies, dates

    @property
    def tag(self) -> str:
        return self.language


_CURRENT: contextvars.ContextVar[PageLocale | None] = contextvars.ContextVar(
    "portal_locale", default=None
)


def activate(page_locale: PageLocale) -> None:
    _CURRENT.set(page_locale)


def current() -> PageLocale:
    return _CURRENT.get() or default()


@cache
def default() -> PageLocale:
    return PageLocale(SOURCE_LANGUAGE, Locale.parse(SOURCE_LANGUAGE))


def gettext(message: str) -> str:
    return translations(current().language).gettext(message)


def template_gettext(message: str, **variables: object) -> Markup:
    """``_()`` in templates: what Jinja's newstyle gettext does (the translation is
    trusted markup, the variables are escaped into it by ``%``), as ONE plain call:
    Jinja's own goes through three context-passing wrappers, and a page makes some twenty
    such calls, which cost more than the rest of its rendering (docs/PERFORMANCE.md)."""
    return Markup(gettext(message)) % variables  # noqa: S704 - our own catalogue, trusted


def ngettext(singular: str, plural: str, n: int) -> str:
    return translations(current().language).ngettext(singular, plural, n)


def _parse(tag: str) -> Locale | None:
    try:
        return Locale.parse(tag.strip().replace("_", "-"), sep="-")
    except (ValueError, UnknownLocaleError):
        return None


def _accept_language(header: str | None) -> list[str]:
    """The tags of an ``Accept-Language`` header, best first (q=0 dropped)."""
    if not header:
        return []
    weighted: list[tuple[float, int, str]] = []
    for index, part in enumerate(header.split(",")[:20]):
        tag, _, params = part.strip().partition(";")
        q = 1.0
        if params.strip().startswith("q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                q = 0.0
        if tag and tag != "*" and q > 0:
            weighted.append((-q, index, tag))
    return [tag for _, _, tag in sorted(weighted)]


@cache
def _resolve(tag: str) -> PageLocale | None:
    parsed = _parse(tag)
    if parsed is None or parsed.language not in LANGUAGES:
        return None
    return PageLocale(parsed.language, parsed)


def negotiate(
    session_locale: str | None, accept_language: str | None, site_default: str | None
) -> PageLocale:
    candidates: Iterable[str] = [
        *([session_locale] if session_locale and session_locale != "auto" else []),
        *_accept_language(accept_language),
        *([site_default] if site_default else []),
    ]
    for tag in candidates:
        resolved = _resolve(tag[:35])
        if resolved is not None:
            return resolved
    return default()


def reset() -> None:
    """A new request: no language chosen yet."""
    _CURRENT.set(None)


def is_active() -> bool:
    return _CURRENT.get() is not None
