"""The hosted invoice page and invoice PDF behind ``hosted_invoice_url`` / ``invoice_pdf``.

Like Stripe's, these URLs are capability URLs (an unguessable token, no API key needed) and
exist only once the invoice is finalized. When the invoice's payment is waiting for 3-D Secure
(``requires_action``), the page offers "Complete authentication", which stands for the
customer passing the challenge: the payment then succeeds and the invoice is paid.
"""

from __future__ import annotations

import html
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from . import invoices, payments
from .catalog import format_amount
from .clock import run_due
from .pdf import render_pdf
from .routing import STATE_KEY
from .state import FakeState

Json = dict[str, Any]


def _date(ts: int | None) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d") if ts else "—"


def _find(state: FakeState, token: str) -> Json:
    for inv in state.table("invoice").values():
        if inv.get("_token") == token and inv["status"] != "draft":
            return inv
    raise web.HTTPNotFound(text="Invoice not found")


def invoice_text(inv: Json) -> list[str]:
    """The invoice as lines of text, shared by the HTML page and the PDF."""
    cur = str(inv["currency"])
    rows = [
        f"Invoice {inv['number']}",
        f"Status: {inv['status']}",
        f"Billed to: {inv['customer_name'] or inv['customer_email'] or inv['customer']}",
        f"Date: {_date(inv['created'])}   Due: {_date(inv['due_date'])}",
        "",
    ]
    for line in inv["lines"]["data"]:
        rows.append(f"{line['description']}: {format_amount(int(line['amount']), cur)}")
    rows += [
        "",
        f"Total: {format_amount(int(inv['total']), cur)}",
        f"Amount paid: {format_amount(int(inv['amount_paid']), cur)}",
        f"Amount due: {format_amount(int(inv['amount_remaining']), cur)}",
        "",
        "Test mode - issued by Billfold's fake Stripe, not a real invoice.",
    ]
    return rows


def _waiting_intent(state: FakeState, inv: Json) -> Json | None:
    intent = payments.intent_of(state, inv)
    if inv["status"] == "open" and intent and intent["status"] == "requires_action":
        return intent
    return None


async def invoice_page(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    inv = _find(state, request.match_info["token"])
    items = "".join(f"<p>{html.escape(row)}</p>" if row else "<hr>" for row in invoice_text(inv))
    action = ""
    if _waiting_intent(state, inv):
        action = (
            f'<form method="post" action="{request.path}/authenticate"><p>Your bank asks you '
            "to confirm this payment.</p><button type=submit>Complete authentication</button>"
            "</form>"
        )
    body = (
        f"<!doctype html><html lang=en><meta charset=utf-8><title>Invoice {inv['number']}"
        f'</title>{items}{action}<p><a href="{request.path}/pdf">Download PDF</a></p></html>'
    )
    return web.Response(text=body, content_type="text/html")


async def authenticate(request: web.Request) -> web.StreamResponse:
    """The customer passed 3-D Secure on the hosted page: the waiting payment succeeds."""
    state = request.app[STATE_KEY]
    inv = _find(state, request.match_info["token"])
    state.request = None  # events from the hosted page carry no API request
    run_due(state)
    intent = _waiting_intent(state, inv)
    if intent is None:
        return web.Response(text="Nothing to authenticate", status=409)
    with state.clock.pinned(state.clock.now()):
        pm = state.find("payment_method", str(intent["payment_method"]))
        invoices.mark_paid(state, inv, pm=pm)
    raise web.HTTPSeeOther(location=f"/i/{request.match_info['token']}")


async def invoice_pdf(request: web.Request) -> web.Response:
    inv = _find(request.app[STATE_KEY], request.match_info["token"])
    return web.Response(
        body=render_pdf(invoice_text(inv), f"Invoice {inv['number']}"),
        content_type="application/pdf",
        headers={"Content-Disposition": f'inline; filename="Invoice-{inv["number"]}.pdf"'},
    )
