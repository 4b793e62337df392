"""Catalogues complete, locale negotiation, Babel money and dates."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

from portal_web import formatting, i18n

PACKAGE = Path(i18n.__file__).parent


def _extracted() -> set[str]:
    """Every message the code and templates use, as babel extracts them."""
    found = set()
    for _, _, message, _, _ in extract_from_dir(
        str(PACKAGE),
        [("**.py", "python"), ("templates/**.html", "jinja2")],
        options_map={"templates/**.html": {"extensions": "jinja2.ext.i18n"}},
        keywords={"_": None, "gettext": None, "ngettext": (1, 2)},
    ):
        found.add(message if isinstance(message, str) else message[0])
    return found


@pytest.mark.parametrize("language", [lang for lang in i18n.LANGUAGES if lang != "en"])
def test_catalogue_translates_every_message(language: str) -> None:
    used = _extracted()
    assert len(used) > 50
    with (PACKAGE / "locales" / language / "LC_MESSAGES" / "messages.po").open("rb") as f:
        catalog = read_po(f)
    translated = {
        (m.id if isinstance(m.id, str) else m.id[0])
        for m in catalog
        if m.id and (m.string if isinstance(m.string, str) else all(m.string)) and not m.fuzzy
    }
    assert used - translated == set()


@pytest.fixture(autouse=True)
def _no_language_left_behind() -> Iterator[None]:
    """These tests set the language in the test runner's own context; later tests (sync
    ones, and tasks created after) would inherit it (a German badge in another package's
    test, seen in random order)."""
    yield
    i18n.reset()


def _with(tag: str) -> None:
    i18n.activate(i18n.negotiate(tag, None, None))


def test_money_zero_and_three_decimal_currencies() -> None:
    _with("en")
    assert formatting.money(1200, "jpy") == "¥1,200"
    assert formatting.money(4900, "usd") == "$49.00"
    assert formatting.money(1500, "kwd") == "KWD1.500"
    _with("de")
    assert formatting.money(123400, "eur") == "1.234,00\xa0€"
    assert formatting.money(1200, "jpy") == "1.200\xa0¥"


def test_dates_per_locale() -> None:
    day = datetime(2027, 3, 1, 12, tzinfo=UTC)
    _with("de")
    assert formatting.date(day) == "1. März 2027"
    _with("en-GB")
    assert formatting.date(day) == "1 March 2027"
    _with("en")
    assert formatting.date(day) == "March 1, 2027"


def test_negotiation_order() -> None:
    # The session's locale first, then the browser's, then the site's default.
    assert i18n.negotiate("de", "en-US,en", "en").language == "de"
    assert i18n.negotiate("auto", "fr-FR, de;q=0.5", "en").language == "de"
    assert i18n.negotiate(None, "fr", "de").language == "de"
    assert i18n.negotiate(None, "fr;q=1, de;q=0", None).language == "en"
    assert i18n.negotiate("xx-!!", "garbage;;;", None).language == "en"
