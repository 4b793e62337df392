"""Money and dates for a page's locale, through Babel.

Stripe amounts are integers in the currency's smallest unit; Stripe's own list says
which currencies have none (``¥1,200`` is 1200, not 12.00) and which have three.
"""

from __future__ import annotations

from datetime import date as _date_type
from datetime import datetime
from decimal import Decimal
from functools import lru_cache

from babel import Locale
from babel.dates import format_date, format_skeleton
from babel.numbers import format_currency

from portal_web.i18n import current

# https://docs.stripe.com/currencies#zero-decimal and #three-decimal
ZERO_DECIMAL = frozenset(
    (
        "bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga",
        "pyg", "rwf", "ugx", "vnd", "vuv", "xaf", "xof", "xpf",
    )
)  # fmt: skip
THREE_DECIMAL = frozenset(["bhd", "jod", "kwd", "omr", "tnd"])


def exponent(currency: str) -> int:
    c = currency.lower()
    if c in ZERO_DECIMAL:
        return 0
    if c in THREE_DECIMAL:
        return 3
    return 2


def to_decimal(amount: int | Decimal, currency: str) -> Decimal:
    return Decimal(amount).scaleb(-exponent(currency))


# Babel takes 20-60 µs per call, several times per row; the same amounts and dates recur
# on every page of a customer (and across customers: prices are shared), so each string
# is made once per locale. Bounded, so a stream of distinct values cannot grow memory.
CACHE_SIZE = 8192


def money(amount: int | Decimal | None, currency: str | None) -> str:
    """``€1.234,00`` in German, ``¥1,200`` for JPY in English."""
    if amount is None or not currency:
        return ""
    return _money(Decimal(amount), currency.lower(), current().locale)


@lru_cache(maxsize=CACHE_SIZE)
def _money(amount: Decimal, currency: str, locale: Locale) -> str:
    return format_currency(
        to_decimal(amount, currency),
        currency.upper(),
        locale=locale,
        # Keep sub-unit precision of per-unit prices (``$0.005``); pad to the currency's
        # digits as usual otherwise.
        decimal_quantization=False,
    )


def date(value: datetime | None, *, style: str = "long") -> str:
    """``March 1, 2027`` / ``1. März 2027`` (dates are shown in UTC, as Stripe's)."""
    if value is None:
        return ""
    return _date(value.date(), style, current().locale)


@lru_cache(maxsize=CACHE_SIZE)
def _date(day: _date_type, style: str, locale: Locale) -> str:
    return format_date(day, format=style, locale=locale)


def day(value: _date_type) -> str:
    """``Nov 18`` / ``18. Nov.``: a day of the current period, month and day only."""
    return _day(value, current().locale)


@lru_cache(maxsize=CACHE_SIZE)
def _day(value: _date_type, locale: Locale) -> str:
    return format_skeleton("MMMd", value, locale=locale)
