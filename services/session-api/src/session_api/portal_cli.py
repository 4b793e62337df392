"""``billfold portal link`` and ``billfold portal preview``: what a support dashboard's
"Send portal link" and "View as customer" do, for operators.

Both mint a portal session through ``portal_sessions.operator`` (the session API's own
create path) and print its URL alone on the last line of stdout.
"""

from __future__ import annotations

import click
from pydantic import ValidationError

from billfold.cache import create_redis
from billfold.cli import Group, InputError
from billfold.http.errors import ApiError
from billfold.settings import Settings
from session_api.cli import _run, _site
from session_api.customers import repository as customers
from session_api.dbtypes import Conn
from session_api.portal_sessions import operator
from session_api.portal_sessions.schemas import CreatePortalSession
from session_api.portal_sessions.service import Created


@click.group(cls=Group)
def portal() -> None:
    """Portal sessions for support staff: send a link, preview as the customer."""


def _mint(site_ref: str, customer: str, *, send_email: bool, preview: bool) -> Created:
    try:
        params = CreatePortalSession(customer=customer, send_email=send_email)
    except ValidationError:
        raise InputError(f"--customer must be 1 to 255 characters, got {customer!r}") from None

    async def work(settings: Settings, conn: Conn) -> Created:
        site = await _site(conn, site_ref)
        # Any of the three ids, as `GET /v1/customers/{id}` takes them.
        found = await customers.find(conn, site.id, customer)
        params_ = params.model_copy(update={"customer": found.id}) if found else params
        redis = create_redis(settings)
        try:
            return await operator.create(conn, redis, settings, site, params_, preview=preview)
        except ApiError as exc:
            raise InputError(str(exc)) from None
        finally:
            await redis.aclose()

    return _run(work)


@portal.command("link")
@click.option("--site", "site_ref", required=True, help="Site slug or id.")
@click.option("--customer", required=True, help="Billfold id, Stripe id (cus_…) or external id.")
@click.option("--send-email", is_flag=True, help="Also email the link to the customer.")
def portal_link(site_ref: str, customer: str, send_email: bool) -> None:
    """Mint a portal link for a customer (printed once, on the last line)."""
    created = _mint(site_ref, customer, send_email=send_email, preview=False)
    body = created.body
    click.echo(
        f"created portal session {body['id']} for {body['customer']}, expires "
        f"{body['expires_at']}" + (" (emailed)" if send_email else ""),
        err=True,
    )
    click.echo(body["url"])


@portal.command("preview")
@click.option("--site", "site_ref", required=True, help="Site slug or id.")
@click.option("--customer", required=True, help="Billfold id, Stripe id (cus_…) or external id.")
def portal_preview(site_ref: str, customer: str) -> None:
    """Open a customer's portal read-only: every action is refused, a banner says so."""
    created = _mint(site_ref, customer, send_email=False, preview=True)
    body = created.body
    click.echo(
        f"created read-only preview {body['id']} of {body['customer']}, expires "
        f"{body['expires_at']}",
        err=True,
    )
    click.echo(body["url"])
