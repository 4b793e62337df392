"""``billfold site domain add|list|remove``: custom hosts the portal answers on.

TLS is the ingress's job (deploy/k8s/custom-domain.example.yaml shows cert-manager);
portal-web maps the ``Host`` header to the site and refuses hosts it does not know.
"""

from __future__ import annotations

import re

import click

from billfold.cli import Group, InputError
from billfold.settings import Settings
from session_api.cli import _run, _site
from session_api.dbtypes import Conn
from session_api.sites import repository as sites

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


def check_host(value: str) -> str:
    """A lower-case DNS name with at least two labels, no port, scheme or path."""
    host = value.strip().lower().rstrip(".")
    labels = host.split(".")
    if len(host) > 253 or len(labels) < 2 or not all(_LABEL.match(label) for label in labels):
        raise InputError(f"not a host name such as billing.example.com: {value!r}")
    if labels[-1].isdigit():
        raise InputError(f"a custom domain is a name, not an IP address: {value!r}")
    return host


@click.group(cls=Group)
def domain() -> None:
    """Custom domains of a site: add, list, remove."""


@domain.command("add")
@click.option("--site", "site_ref", required=True, help="Site slug or id.")
@click.argument("host")
def domain_add(site_ref: str, host: str) -> None:
    """Serve the site's portal on HOST (point its DNS and TLS at the ingress)."""
    name = check_host(host)

    async def work(_: Settings, conn: Conn) -> sites.Site:
        target = await _site(conn, site_ref)
        try:
            await sites.add_domain(conn, target.id, name)
        except sites.DomainTaken as exc:
            raise InputError(f"{name} is already a domain of site {exc.site_id}") from None
        return target

    target = _run(work)
    click.echo(f"{name} now serves site {target.id} ({target.slug})")


@domain.command("list")
@click.option("--site", "site_ref", required=True, help="Site slug or id.")
def domain_list(site_ref: str) -> None:
    """List the site's custom domains."""

    async def work(_: Settings, conn: Conn) -> list[str]:
        return await sites.domains(conn, (await _site(conn, site_ref)).id)

    for name in _run(work):
        click.echo(name)


@domain.command("remove")
@click.argument("host")
def domain_remove(host: str) -> None:
    """Stop serving HOST (portal-web refuses it within its cache time, 30 s)."""
    name = check_host(host)

    async def work(_: Settings, conn: Conn) -> bool:
        return await sites.remove_domain(conn, name)

    if not _run(work):
        raise InputError(f"no such domain: {name!r}")
    click.echo(f"removed {name}")
