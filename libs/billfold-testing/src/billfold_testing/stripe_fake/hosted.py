"""The hosted invoice page and invoice PDF behind ``hosted_invoice_url`` / ``invoice_pdf``.

Like Stripe's, these URLs are capability URLs (an unguessable token, no API key needed) and
exist only once the invoice is finalized.
"""

from __future__ import annotations

import html
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from .catalog import format_amount
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


async def invoice_page(request: web.Request) -> web.Response:
    inv = _find(request.app[STATE_KEY], request.match_info["token"])
    items = "".join(f"<p>{html.escape(row)}</p>" if row else "<hr>" for row in invoice_text(inv))
    body = (
        f"<!doctype html><html lang=en><meta charset=utf-8><title>Invoice {inv['number']}"
        f'</title>{items}<p><a href="{request.path}/pdf">Download PDF</a></p></html>'
    )
    return web.Response(text=body, content_type="text/html")


async def invoice_pdf(request: web.Request) -> web.Response:
    inv = _find(request.app[STATE_KEY], request.match_info["token"])
    return web.Response(
        body=render_pdf(invoice_text(inv), f"Invoice {inv['number']}"),
        content_type="application/pdf",
        headers={"Content-Disposition": f'inline; filename="Invoice-{inv["number"]}.pdf"'},
    )
