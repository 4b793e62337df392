"""The ``billfold`` operator CLI.

The shared library owns the entry point and the commands every deployment needs
(``migrate``); each installed service adds its own command groups through the
``billfold.cli`` entry-point group (a callable taking the root ``click.Group``), so no
service imports another and an image carries only the commands of what it runs. A
service adds options to another's command the same way (:class:`CommandExtension`,
:func:`extensible`): ``billfold site update S --stripe-api-key …``.
"""

from __future__ import annotations

import asyncio
import functools
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, TypeVar

import asyncpg
import click
from click.core import ParameterSource

from billfold.db import apply_migrations, ensure_database, migration_dirs
from billfold.logs import configure_logging
from billfold.settings import load_settings

CLI_GROUP = "billfold.cli"
#: Options other services add to ``billfold site update`` (session-api's command).
SITE_UPDATE_GROUP = "billfold.cli.site_update"
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


# --- options one service adds to another's command ------------------------------------


@dataclass(frozen=True)
class CommandExtension:
    """Options a service adds to another service's command, and what to do with them.

    Published under an entry-point group (e.g. :data:`SITE_UPDATE_GROUP`); the owning
    command takes them with :func:`extensible`. So ``billfold site update S
    --stripe-api-key …`` is session-api's command with billing-sync's option, and
    neither service imports the other: billing-sync's handler writes its own schema.
    """

    params: list[click.Parameter]
    #: Called with the command's subject (e.g. the site reference) and this extension's
    #: values, when at least one of its options was given on the command line.
    apply: Callable[[str, dict[str, Any]], None]


def extensible(
    group: str, *, subject: str, extensions: list[CommandExtension] | None = None
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Decorate a command's function (below ``@….command``): it gets the options of every
    installed :class:`CommandExtension` of ``group`` (or of ``extensions``). The function
    itself runs only if one of its own options was given; then each extension whose
    options were given runs with the value of the ``subject`` parameter. No option at
    all is a usage error."""
    if extensions is None:
        extensions = [ep.load() for ep in sorted(entry_points(group=group), key=lambda e: e.name)]

    def decorate(func: Callable[..., None]) -> Callable[..., None]:
        @functools.wraps(func)
        def run(**values: Any) -> None:
            ctx = click.get_current_context()

            def given(name: str | None) -> bool:
                return name is not None and ctx.get_parameter_source(name) in (
                    ParameterSource.COMMANDLINE,
                    ParameterSource.ENVIRONMENT,
                )

            chosen = []
            for ext in extensions:
                mine = {p.name: values.pop(p.name) for p in ext.params if p.name}
                if any(given(name) for name in mine):
                    chosen.append((ext, mine))
            own = [
                p.name
                for p in ctx.command.params
                if isinstance(p, click.Option) and p.name in values and p.name != subject
            ]
            if not chosen and not any(given(name) for name in own):
                flags = [
                    o.opts[0]
                    for o in ctx.command.params
                    if isinstance(o, click.Option) and o.name != subject and o.name != "help"
                ]
                raise InputError(f"nothing to update: pass {', '.join(flags) or 'an option'}")
            if any(given(name) for name in own):
                func(**values)
            for ext, mine in chosen:
                ext.apply(values[subject], mine)

        params: list[click.Parameter] = getattr(run, "__click_params__", [])
        for ext in extensions:
            params.extend(reversed(ext.params))  # click reverses decorator order
        run.__click_params__ = params  # type: ignore[attr-defined]
        return run

    return decorate


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
