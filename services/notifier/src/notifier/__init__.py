"""Billfold notifier: turns events into emails to customers and signed webhooks to tenants."""

from pathlib import Path

#: SQL migrations for the ``notify`` schema, found by ``billfold migrate`` through the
#: ``billfold.migrations`` entry-point group.
MIGRATIONS = Path(__file__).parent / "migrations"
