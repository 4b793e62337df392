"""Billfold billing-sync: mirrors Stripe into the ``mirror`` schema; the only Stripe client."""

from pathlib import Path

#: Migrations for the ``mirror`` schema, found by ``billfold migrate`` through the
#: ``billfold.migrations`` entry-point group (``mirror`` sorts before session-api's
#: ``portal``, and no migration of one folder depends on the other's).
MIGRATIONS = Path(__file__).parent / "migrations"
