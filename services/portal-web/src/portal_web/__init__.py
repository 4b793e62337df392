"""Billfold portal-web: turns a link into a browser session and shows the customer portal."""

from pathlib import Path

#: Migrations for the ``web`` schema, found by ``billfold migrate`` through the
#: ``billfold.migrations`` entry-point group.
MIGRATIONS = Path(__file__).parent / "migrations"
