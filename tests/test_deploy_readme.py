"""README.md stays true: the set-up commands up top, every setting in the configuration
table with the code's own default, and relative links that resolve.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from billfold.settings import ENV_PREFIX, Settings
from billing_sync.settings import BillingSyncSettings

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
# Written alongside the code; the README links them before they exist.
PLANNED_DOCS = {"docs/ARCHITECTURE.md", "docs/PERFORMANCE.md"}
# The shared settings and every service's own subclass.
FIELDS = {
    name: cls.model_fields[name]
    for cls in (Settings, BillingSyncSettings)
    for name in cls.model_fields
}


def config_table() -> dict[str, str]:
    """`| `BILLFOLD_X` | `default` | meaning |` rows -> {BILLFOLD_X: default}."""
    rows = re.findall(r"^\| `(BILLFOLD_\w+)` \| `([^`]*)` \|", README, re.M)
    return dict(rows)


def test_setup_commands_come_first() -> None:
    first_block = README.split("```")[1]
    assert "make run" in first_block
    assert "make test" in first_block
    before = README.split("```")[0]
    assert before.count("\n## ") <= 1, "only the introduction may precede the set-up commands"


@pytest.mark.parametrize("name", sorted(FIELDS))
def test_every_setting_is_documented_with_its_default(name: str) -> None:
    table = config_table()
    variable = ENV_PREFIX + name.upper()
    field = FIELDS[name]
    if field.is_required() or field.default is None:
        # Documented as "required" or "none", not as a value.
        assert re.search(rf"^\| `{variable}` \| (required|none) \|", README, re.M), variable
        return
    assert variable in table, f"README configuration table lacks {variable}"
    assert table[variable] == str(field.default), variable


def test_configuration_table_has_no_stale_rows() -> None:
    known = {ENV_PREFIX + name.upper() for name in FIELDS}
    assert set(config_table()) <= known


def test_walkthrough_covers_the_api() -> None:
    for needle in (
        '-u "$API_KEY:"',
        "Authorization: Bearer $API_KEY",
        "X-API-Key: $API_KEY",
        "Content-Type: application/json",
        "Idempotency-Key:",
        "customer=",
        "limit=",
        "starting_after=",
        "-X DELETE",
        "/v1/customers/",
        '{"error": {"type": "invalid_request_error", "code": ',
        '"param": ',
    ):
        assert needle in README, needle


def test_relative_links_resolve() -> None:
    links = re.findall(r"\]\((?!https?://|#)([^)]+)\)", README)
    assert set(links) >= PLANNED_DOCS
    for link in set(links) - PLANNED_DOCS:
        assert (ROOT / link).exists(), f"README links to missing {link}"
    for path in re.findall(r"`((?:deploy|scripts|\.ci)/[\w./-]+)`", README):
        assert (ROOT / path).exists(), f"README mentions missing {path}"
