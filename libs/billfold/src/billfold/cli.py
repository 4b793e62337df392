"""The ``billfold`` operator CLI.

The shared library owns the entry point and the commands every deployment needs
(``migrate``); each installed service adds its own command groups through the
``billfold.cli`` entry-point group (a callable taking the root ``click.Group``), so no
service imports another and an image carries only the commands of what it runs.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine
from importlib.metadata import entry_points
from typing import Any, TypeVar

import asyncpg
import click

from billfold.db import apply_migrations, ensure_database, migration_dirs
from billfold.logs import configure_logging
from billfold.settings import load_settings

CLI_GROUP = "billfold.cli"
T = TypeVar("T")


# --- what every service's commands share ------------------------------------------------


def run_database_command(coro: Coroutine[Any, Any, T], *, schema: str) -> T:
    """Run a command's database work; an unreachable or unmigrated database is one line
    telling the operator what to do (``schema``: the one the command needs), not a
    traceback."""
    try:
        return asyncio.run(coro)
    except (OSError, asyncpg.PostgresConnectionError, asyncpg.InvalidCatalogNameError) as exc:
        raise click.ClickException(
            f"cannot reach the database ({type(exc).__name__}); "
            "check BILLFOLD_DATABASE_URL and run `billfold migrate`"
        ) from None
    except asyncpg.UndefinedTableError:
        raise click.ClickException(
            f"the database has no {schema} schema yet: run `billfold migrate` first"
        ) from None


class InputError(click.ClickException):
    """Bad input: one line, exit code 2 (the usage-error convention)."""

    exit_code = 2


class _OneLineErrors:
    """Mixin: click usage errors without the usage dump (one line, still exit 2)."""

    def make_context(self, *args: Any, **kwargs: Any) -> click.Context:
        try:
            return super().make_context(*args, **kwargs)  # type: ignore[misc, no-any-return]
        except click.UsageError as exc:
            exc.ctx = None
            raise


class Command(_OneLineErrors, click.Command):
    pass


class Group(_OneLineErrors, click.Group):
    """A service's command group: bad input is one ``Error: …`` line and exit code 2."""

    command_class = Command

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        try:
            return super().resolve_command(ctx, args)
        except click.UsageError as exc:
            exc.ctx = None
            raise


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Operate a Billfold deployment."""


@cli.command()
@click.option("--create-db/--no-create-db", default=True, help="Create the database if missing.")
def migrate(create_db: bool) -> None:
    """Apply pending SQL migrations of every installed service (safe to run twice)."""
    settings = load_settings()
    configure_logging("migrate", settings)
    if create_db and asyncio.run(ensure_database(settings.database_url)):
        click.echo("created database", err=True)
    dirs = migration_dirs()
    applied = apply_migrations(settings.database_url, dirs)
    for ident in applied:
        click.echo(f"applied {ident}")
    click.echo(f"migrations up to date ({len(applied)} applied, {len(dirs)} sources)")


def _register_service_commands() -> None:
    for ep in sorted(entry_points(group=CLI_GROUP), key=lambda e: e.name):
        register = ep.load()
        register(cli)


def main() -> None:
    _register_service_commands()
    try:
        cli.main(prog_name="billfold", standalone_mode=True)
    except KeyboardInterrupt:
        sys.exit(130)
