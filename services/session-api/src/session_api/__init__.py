"""Billfold session API."""

from pathlib import Path

#: SQL migrations for the ``portal`` schema, found by ``billfold migrate`` through
#: the ``billfold.migrations`` entry-point group.
MIGRATIONS = Path(__file__).parent / "migrations"
