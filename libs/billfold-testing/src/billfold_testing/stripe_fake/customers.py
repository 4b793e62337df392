"""Customers (with address, phone, metadata, default payment method) and their tax ids."""

from __future__ import annotations

import re
import secrets
from typing import Any

from stripe.params import (
    CustomerCreateParams,
    CustomerDeleteParams,
    CustomerListParams,
    CustomerRetrieveParams,
    CustomerTaxIdCreateParams,
    CustomerTaxIdDeleteParams,
    CustomerTaxIdListParams,
    CustomerTaxIdRetrieveParams,
    CustomerUpdateParams,
)

from . import payment_methods as pms
from . import shapes
from .errors import invalid, not_found
from .events import emit, emit_update
from .expand import INCLUDABLE
from .forms import get_dict, get_list, get_str, merge_metadata, req_str
from .lists import created_filter, list_object, paginate
from .params import Allow
from .routing import Ctx, Routes
from .state import FakeState

Json = dict[str, Any]
routes = Routes()

_ADDRESS_KEYS = ("city", "country", "line1", "line2", "postal_code", "state")
#: tax id type -> (country, value pattern); types not listed are accepted as-is.
TAX_ID_TYPES: dict[str, tuple[str | None, str]] = {
    "eu_vat": (None, r"[A-Z]{2}[0-9A-Z]{2,13}"),
    "gb_vat": ("GB", r"GB(\d{9}|\d{12})"),
    "us_ein": ("US", r"\d{2}-?\d{7}"),
    "au_abn": ("AU", r"\d{11}"),
    "ch_vat": ("CH", r"CHE-?\d{3}\.?\d{3}\.?\d{3} ?(MWST|TVA|IVA)"),
    "ca_bn": ("CA", r"\d{9}"),
    "no_vat": ("NO", r"\d{9}MVA"),
    "in_gst": ("IN", r"[0-9A-Z]{15}"),
    "jp_cn": ("JP", r"\d{13}"),
}


def address_param(raw: Any, param: str = "address") -> Json | None:
    """Stripe replaces the whole address; omitted sub-fields become null."""
    if raw == "":
        return None
    if not isinstance(raw, dict):
        raise invalid("Invalid hash", param=param)
    return {key: (raw.get(key) or None) for key in _ADDRESS_KEYS}


def _apply_fields(state: FakeState, customer: Json, p: Json) -> None:
    for key in ("email", "name", "phone", "description"):
        if key in p:
            customer[key] = get_str(p, key) or None
    if "address" in p:
        customer["address"] = address_param(p["address"])
    if "shipping" in p:
        shipping = get_dict(p, "shipping")
        customer["shipping"] = (
            {
                "address": address_param(shipping.get("address", {}), "shipping[address]"),
                "name": req_str(shipping, "name", param="shipping[name]"),
                "phone": get_str(shipping, "phone"),
            }
            if shipping
            else None
        )
    if "preferred_locales" in p:
        customer["preferred_locales"] = [str(x) for x in get_list(p, "preferred_locales")]
    customer["metadata"] = merge_metadata(customer["metadata"], p.get("metadata"))
    settings = get_dict(p, "invoice_settings") or {}
    if "footer" in settings:
        customer["invoice_settings"]["footer"] = get_str(settings, "footer") or None
    if "default_payment_method" in settings:
        pm_id = get_str(settings, "default_payment_method")
        if pm_id:
            pms.require_attached(
                state, pm_id, customer["id"], "invoice_settings[default_payment_method]"
            )
        customer["invoice_settings"]["default_payment_method"] = pm_id or None


def _create_tax_id(state: FakeState, customer_id: str, p: Json, prefix: str = "") -> Json:
    kind = req_str(p, "type", param=f"{prefix}type")
    value = req_str(p, "value", param=f"{prefix}value")
    country, pattern = TAX_ID_TYPES.get(kind, (None, r".+"))
    if not re.fullmatch(pattern, value):
        raise invalid(f"Invalid value for {kind}.", param=f"{prefix}value", code="tax_id_invalid")
    if kind == "eu_vat":
        country = "GR" if value[:2] == "EL" else value[:2]
    tax_id = shapes.blank("tax_id")
    tax_id.update(
        id=state.new_id("txi_"),
        created=state.clock.now(),
        customer=customer_id,
        country=country,
        type=kind,
        value=value,
        owner={"customer": customer_id, "customer_account": None, "type": "customer"},
        verification={
            "status": "pending" if kind == "eu_vat" else "unavailable",
            "verified_address": None,
            "verified_name": None,
        },
    )
    state.add("tax_id", tax_id)
    emit(state, "customer.tax_id.created", state.render(tax_id))
    return tax_id


def live_customer(state: FakeState, customer_id: str, param: str = "customer") -> Json:
    return state.get("customer", customer_id, param)


@routes.post("/v1/customers", params=Allow(CustomerCreateParams))
def create_customer(ctx: Ctx) -> Json:
    state, p = ctx.state, ctx.params
    customer = shapes.blank("customer")
    customer.update(
        id=state.new_id("cus_", 14),
        created=state.clock.now(),
        balance=0,
        invoice_prefix=secrets.token_hex(4).upper(),
        next_invoice_sequence=1,
        shipping=None,
        test_clock=get_str(p, "test_clock"),
    )
    if customer["test_clock"]:
        state.get("test_helpers.test_clock", customer["test_clock"], "test_clock")
    pm_id = get_str(p, "payment_method")
    settings = get_dict(p, "invoice_settings") or {}
    default_pm = get_str(settings, "default_payment_method")
    # The default may name the payment method attached by this same request.
    _apply_fields(
        state,
        customer,
        {
            **p,
            "invoice_settings": {
                k: v for k, v in settings.items() if k != "default_payment_method"
            },
        },
    )
    state.add("customer", customer)
    emit(state, "customer.created", state.render(customer))
    if pm_id:
        pm = pms.resolve(state, pm_id)
        pms.attach(state, pm, customer["id"])
        if default_pm == pm_id:
            default_pm = pm["id"]
    if default_pm:
        before = state.render(customer)
        _apply_fields(state, customer, {"invoice_settings": {"default_payment_method": default_pm}})
        emit_update(state, "customer.updated", before, state.render(customer))
    for i, data in enumerate(get_list(p, "tax_id_data")):
        _create_tax_id(state, customer["id"], data, f"tax_id_data[{i}][")
    return state.render(customer)


@routes.get("/v1/customers/{id}", params=Allow(CustomerRetrieveParams))
def retrieve_customer(ctx: Ctx) -> Json:
    customer = ctx.state.find("customer", ctx.arg("id"))
    if customer is None:
        raise not_found("customer", ctx.arg("id"))
    if customer.get("_deleted"):
        gone = shapes.blank("deleted_customer")
        gone["id"] = customer["id"]
        return gone
    return ctx.state.render(customer)


@routes.post("/v1/customers/{id}", params=Allow(CustomerUpdateParams))
def update_customer(ctx: Ctx) -> Json:
    state = ctx.state
    customer = live_customer(state, ctx.arg("id"), "id")
    before = state.render(customer)
    _apply_fields(state, customer, ctx.params)
    after = state.render(customer)
    emit_update(state, "customer.updated", before, after)
    return after


@routes.delete("/v1/customers/{id}", params=Allow(CustomerDeleteParams))
def delete_customer(ctx: Ctx) -> Json:
    from .subscriptions import cancel_now  # late: subscriptions imports this module

    state = ctx.state
    customer = live_customer(state, ctx.arg("id"), "id")
    for sub in state.newest_first("subscription"):
        if sub["customer"] == customer["id"] and sub["status"] not in (
            "canceled",
            "incomplete_expired",
        ):
            cancel_now(state, sub)
    customer["_deleted"] = True
    emit(state, "customer.deleted", state.render(customer))
    gone = shapes.blank("deleted_customer")
    gone["id"] = customer["id"]
    return gone


@routes.get("/v1/customers", params=Allow(CustomerListParams))
def list_customers(ctx: Ctx) -> Json:
    email = get_str(ctx.params, "email")
    clock = get_str(ctx.params, "test_clock")
    in_range = created_filter(ctx.params)
    every = ctx.state.newest_first("customer")
    rows = [
        c
        for c in every
        # Stripe's email filter is exact and case-sensitive.
        if (email is None or c["email"] == email)
        and (clock is None or c["test_clock"] == clock)
        and in_range(c)
    ]
    return paginate(
        rows, ctx.params, "/v1/customers", ctx.state.render, "customer", unfiltered=every
    )


# --- tax ids ---------------------------------------------------------------------------------


@routes.post("/v1/customers/{customer}/tax_ids", params=Allow(CustomerTaxIdCreateParams))
def create_tax_id(ctx: Ctx) -> Json:
    customer = live_customer(ctx.state, ctx.arg("customer"))
    return ctx.state.render(_create_tax_id(ctx.state, customer["id"], ctx.params))


def _tax_id_of(ctx: Ctx) -> Json:
    live_customer(ctx.state, ctx.arg("customer"))
    tax_id = ctx.state.get("tax_id", ctx.arg("id"))
    if tax_id["customer"] != ctx.arg("customer"):
        raise not_found("tax_id", ctx.arg("id"))
    return tax_id


@routes.get("/v1/customers/{customer}/tax_ids/{id}", params=Allow(CustomerTaxIdRetrieveParams))
def retrieve_tax_id(ctx: Ctx) -> Json:
    return ctx.state.render(_tax_id_of(ctx))


@routes.delete("/v1/customers/{customer}/tax_ids/{id}", params=Allow(CustomerTaxIdDeleteParams))
def delete_tax_id(ctx: Ctx) -> Json:
    tax_id = _tax_id_of(ctx)
    tax_id["_deleted"] = True
    emit(ctx.state, "customer.tax_id.deleted", ctx.state.render(tax_id))
    gone = shapes.blank("deleted_tax_id")
    gone["id"] = tax_id["id"]
    return gone


#: How many tax ids a customer fetched with ``expand[]=tax_ids`` embeds (a list's default
#: page); ``has_more`` says whether there are more to list.
EMBEDDED_TAX_IDS = 10


def _include_tax_ids(state: FakeState, node: Json) -> Json:
    """Stripe's includable ``customer.tax_ids``: "This field is not included by default. To
    include it in the response, expand the tax_ids field." A list object, as the list
    endpoint's first page."""
    customer = str(node.get("id"))
    rows = [t for t in state.newest_first("tax_id") if t["customer"] == customer]
    return list_object(
        [state.render(t) for t in rows[:EMBEDDED_TAX_IDS]],
        f"/v1/customers/{customer}/tax_ids",
        len(rows) > EMBEDDED_TAX_IDS,
    )


INCLUDABLE[("customer", "tax_ids")] = _include_tax_ids


@routes.get("/v1/customers/{customer}/tax_ids", params=Allow(CustomerTaxIdListParams))
def list_tax_ids(ctx: Ctx) -> Json:
    customer = live_customer(ctx.state, ctx.arg("customer"))["id"]
    rows = [t for t in ctx.state.newest_first("tax_id") if t["customer"] == customer]
    return paginate(
        rows, ctx.params, f"/v1/customers/{customer}/tax_ids", ctx.state.render, "tax_id"
    )
