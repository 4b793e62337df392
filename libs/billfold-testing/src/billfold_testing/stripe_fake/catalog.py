"""Products and Prices, and the pricing maths: per-unit, graduated and volume tiers.

Amounts are integers in the currency's smallest unit, so zero-decimal currencies (JPY)
need no special arithmetic: ``unit_amount=1000`` in JPY is ¥1000. :func:`format_amount`
is where the difference shows (hosted pages and PDFs).
"""

from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from stripe.params import (
    PriceCreateParams,
    PriceListParams,
    PriceRetrieveParams,
    PriceUpdateParams,
    ProductCreateParams,
    ProductDeleteParams,
    ProductListParams,
    ProductRetrieveParams,
    ProductUpdateParams,
)

from . import shapes
from .errors import invalid, missing_param
from .events import emit, emit_update
from .expand import INCLUDABLE
from .forms import enum, get_bool, get_dict, get_int, get_list, get_str, merge_metadata, req_str
from .lists import created_filter, paginate
from .params import Allow
from .routing import Ctx, Routes
from .state import FakeState

Json = dict[str, Any]
routes = Routes()

ZERO_DECIMAL = frozenset(
    [
        "bif",
        "clp",
        "djf",
        "gnf",
        "jpy",
        "kmf",
        "krw",
        "mga",
        "pyg",
        "rwf",
        "ugx",
        "vnd",
        "vuv",
        "xaf",
        "xof",
        "xpf",
    ]
)
CURRENCIES = ZERO_DECIMAL | frozenset(
    [
        "usd",
        "eur",
        "gbp",
        "chf",
        "cad",
        "aud",
        "nzd",
        "sek",
        "nok",
        "dkk",
        "pln",
        "czk",
        "huf",
        "ron",
        "bgn",
        "inr",
        "brl",
        "mxn",
        "sgd",
        "hkd",
        "zar",
        "aed",
        "ils",
        "thb",
        "myr",
        "php",
        "idr",
        "try",
    ]
)
_INTERVAL_MAX = {"day": 1095, "week": 156, "month": 36, "year": 3}


def _tiers(state: FakeState, node: Json) -> Any:
    record = state.find("price", str(node.get("id")))
    return record.get("_tiers") if record else None


INCLUDABLE[("price", "tiers")] = _tiers


def check_currency(value: str, param: str = "currency") -> str:
    currency = value.lower()
    if currency not in CURRENCIES:
        raise invalid(f"Invalid currency: {value}.", param=param)
    return currency


def format_amount(amount: int, currency: str) -> str:
    """Human amount, e.g. ``$20.00`` / ``¥1,000`` / ``12.50 EUR``."""
    symbols = {"usd": "$", "eur": "€", "gbp": "£", "jpy": "¥"}
    text = f"{amount:,}" if currency in ZERO_DECIMAL else f"{amount / 100:,.2f}"
    symbol = symbols.get(currency)
    return f"{symbol}{text}" if symbol else f"{text} {currency.upper()}"


# --- pricing maths ---------------------------------------------------------------------------


def _dec(value: Any) -> Decimal:
    return Decimal(str(value)) if value is not None else Decimal(0)


def _transform(price: Json, quantity: int) -> int:
    transform = price.get("transform_quantity")
    if not transform:
        return quantity
    rounding = ROUND_CEILING if transform["round"] == "up" else ROUND_FLOOR
    return int((Decimal(quantity) / Decimal(transform["divide_by"])).to_integral_value(rounding))


def _tier_unit(tier: Json) -> Decimal:
    return _dec(tier.get("unit_amount_decimal") or tier.get("unit_amount"))


def _tier_flat(tier: Json) -> Decimal:
    return _dec(tier.get("flat_amount_decimal") or tier.get("flat_amount"))


def amount_for(price: Json, quantity: int) -> int:
    """What ``quantity`` of ``price`` costs, in the smallest currency unit."""
    if price["billing_scheme"] == "tiered":
        tiers = price["_tiers"]
        if price["tiers_mode"] == "volume":
            # One tier — the one the whole quantity falls into — prices every unit.
            tier = next(t for t in tiers if t["up_to"] is None or quantity <= t["up_to"])
            total = _tier_unit(tier) * quantity + (_tier_flat(tier) if quantity else 0)
        else:
            # Graduated: each tier prices the units that fall inside it.
            total, floor = Decimal(0), 0
            for tier in tiers:
                top = tier["up_to"]
                units = (quantity if top is None else min(quantity, top)) - floor
                if units <= 0:
                    break
                total += _tier_unit(tier) * units + _tier_flat(tier)
                if top is None:
                    break
                floor = top
    else:
        total = _dec(price["unit_amount_decimal"]) * _transform(price, quantity)
    return int(total.to_integral_value(ROUND_HALF_UP))


# --- products --------------------------------------------------------------------------------


@routes.post("/v1/products", params=Allow(ProductCreateParams))
def create_product(ctx: Ctx) -> Json:
    state, p = ctx.state, ctx.params
    product = shapes.blank("product")
    now = state.clock.now()
    product_id = get_str(p, "id") or state.new_id("prod_", 14)
    if state.find("product", product_id):
        raise invalid("Product already exists.", param="id", code="resource_already_exists")
    product.update(
        id=product_id,
        name=req_str(p, "name"),
        created=now,
        updated=now,
        description=get_str(p, "description"),
        unit_label=get_str(p, "unit_label"),
        tax_code=get_str(p, "tax_code"),
        statement_descriptor=get_str(p, "statement_descriptor"),
        url=get_str(p, "url"),
        images=[str(i) for i in get_list(p, "images")],
        metadata=merge_metadata({}, p.get("metadata")),
        type="service",
    )
    if (active := get_bool(p, "active")) is not None:
        product["active"] = active
    state.add("product", product)
    emit(state, "product.created", state.render(product))
    if (data := get_dict(p, "default_price_data")) is not None:
        price = _make_price(state, {**data, "product": product_id}, "default_price_data")
        product["default_price"] = price["id"]
    return state.render(product)


@routes.get("/v1/products/{id}", params=Allow(ProductRetrieveParams))
def retrieve_product(ctx: Ctx) -> Json:
    return ctx.state.render(ctx.state.get("product", ctx.arg("id")))


@routes.post("/v1/products/{id}", params=Allow(ProductUpdateParams))
def update_product(ctx: Ctx) -> Json:
    state, p = ctx.state, ctx.params
    product = state.get("product", ctx.arg("id"))
    before = state.render(product)
    for key in ("name", "description", "unit_label", "tax_code", "url", "statement_descriptor"):
        if key in p:
            product[key] = get_str(p, key) or (None if key != "name" else product["name"])
    if (active := get_bool(p, "active")) is not None:
        product["active"] = active
    if (default := get_str(p, "default_price")) is not None:
        product["default_price"] = (
            state.get("price", default, "default_price")["id"] if default else None
        )
    product["metadata"] = merge_metadata(product["metadata"], p.get("metadata"))
    product["updated"] = state.clock.now()
    after = state.render(product)
    if previous := {k: v for k, v in before.items() if after.get(k) != v and k != "updated"}:
        emit(state, "product.updated", after, previous | {"updated": before["updated"]})
    return after


@routes.get("/v1/products", params=Allow(ProductListParams))
def list_products(ctx: Ctx) -> Json:
    p = ctx.params
    active = get_bool(p, "active")
    ids = set(map(str, get_list(p, "ids")))
    in_range = created_filter(p)
    every = ctx.state.newest_first("product")
    rows = [
        o
        for o in every
        if (active is None or o["active"] == active) and (not ids or o["id"] in ids) and in_range(o)
    ]
    return paginate(rows, p, "/v1/products", ctx.state.render, "product", unfiltered=every)


@routes.delete("/v1/products/{id}", params=Allow(ProductDeleteParams))
def delete_product(ctx: Ctx) -> Json:
    state = ctx.state
    product = state.get("product", ctx.arg("id"))
    if any(pr["product"] == product["id"] for pr in state.newest_first("price")):
        raise invalid(
            "This product cannot be deleted because it has one or more user-created prices."
        )
    product["_deleted"] = True
    emit(state, "product.deleted", state.render(product))
    gone = shapes.blank("deleted_product")
    gone["id"] = product["id"]
    return gone


# --- prices ----------------------------------------------------------------------------------


def _parse_tiers(raw: list[Any]) -> list[Json]:
    tiers: list[Json] = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise invalid("Invalid tiers", param=f"tiers[{i}]")
        up_to_raw = item.get("up_to")
        if up_to_raw is None:
            raise missing_param(f"tiers[{i}][up_to]")
        up_to = None if up_to_raw == "inf" else get_int(item, "up_to", param=f"tiers[{i}][up_to]")
        unit = get_int(item, "unit_amount", param=f"tiers[{i}][unit_amount]")
        flat = get_int(item, "flat_amount", param=f"tiers[{i}][flat_amount]")
        unit_dec = get_str(item, "unit_amount_decimal") or (None if unit is None else str(unit))
        flat_dec = get_str(item, "flat_amount_decimal") or (None if flat is None else str(flat))
        if unit_dec is None and flat_dec is None:
            raise invalid(
                "Each tier must have either unit_amount or flat_amount.", param=f"tiers[{i}]"
            )
        tiers.append(
            {
                "flat_amount": flat,
                "flat_amount_decimal": flat_dec,
                "unit_amount": unit,
                "unit_amount_decimal": unit_dec,
                "up_to": up_to,
            }
        )
    bounds = [t["up_to"] for t in tiers]
    if not tiers or bounds[-1] is not None:
        raise invalid("The last tier must have `up_to` set to `inf`.", param="tiers")
    finite = [b for b in bounds[:-1] if b is not None]
    if len(finite) != len(bounds) - 1 or finite != sorted(set(finite)):
        raise invalid("Tiers must be in ascending order of `up_to`.", param="tiers")
    return tiers


def _recurring(raw: Json) -> Json:
    interval = enum(raw, "interval", tuple(_INTERVAL_MAX), param="recurring[interval]")
    if interval is None:
        raise missing_param("recurring[interval]")
    count = get_int(raw, "interval_count", param="recurring[interval_count]") or 1
    if not 1 <= count <= _INTERVAL_MAX[interval]:
        raise invalid(
            "The maximum billing period is three years; interval_count is out of range.",
            param="recurring[interval_count]",
        )
    usage = enum(raw, "usage_type", ("licensed", "metered"), param="recurring[usage_type]")
    meter = get_str(raw, "meter")
    if usage == "metered" and not meter:
        raise missing_param("recurring[meter]")
    return {
        "interval": interval,
        "interval_count": count,
        "meter": meter,
        "trial_period_days": get_int(raw, "trial_period_days"),
        "usage_type": usage or "licensed",
    }


def _make_price(state: FakeState, p: Json, prefix: str = "") -> Json:
    def name(key: str) -> str:
        return f"{prefix}[{key}]" if prefix else key

    currency = check_currency(req_str(p, "currency", param=name("currency")), name("currency"))
    product_id = get_str(p, "product")
    if product_id:
        state.get("product", product_id, name("product"))
    elif (data := get_dict(p, "product_data")) is not None:
        product_id = state.new_id("prod_", 14)
        product = shapes.blank("product")
        product.update(
            id=product_id,
            name=req_str(data, "name", param="product_data[name]"),
            created=state.clock.now(),
            updated=state.clock.now(),
            metadata=merge_metadata({}, data.get("metadata"), param="product_data[metadata]"),
            type="service",
        )
        state.add("product", product)
        emit(state, "product.created", state.render(product))
    else:
        raise missing_param(name("product"))
    scheme = enum(p, "billing_scheme", ("per_unit", "tiered")) or "per_unit"
    price = shapes.blank("price")
    price.update(
        id=state.new_id("price_"),
        created=state.clock.now(),
        currency=currency,
        product=product_id,
        billing_scheme=scheme,
        nickname=get_str(p, "nickname"),
        lookup_key=get_str(p, "lookup_key"),
        tax_behavior=enum(p, "tax_behavior", ("exclusive", "inclusive", "unspecified"))
        or "unspecified",
        metadata=merge_metadata({}, p.get("metadata")),
    )
    if (active := get_bool(p, "active")) is not None:
        price["active"] = active
    recurring = get_dict(p, "recurring")
    price["recurring"] = _recurring(recurring) if recurring else None
    price["type"] = "recurring" if recurring else "one_time"
    if scheme == "tiered":
        mode = enum(p, "tiers_mode", ("graduated", "volume"))
        if mode is None:
            raise missing_param("tiers_mode")
        price.update(tiers_mode=mode, unit_amount=None, unit_amount_decimal=None)
        price["_tiers"] = _parse_tiers(get_list(p, "tiers"))
    else:
        unit = get_int(p, "unit_amount", param=name("unit_amount"))
        unit_dec = get_str(p, "unit_amount_decimal")
        if unit is None and unit_dec is None:
            raise missing_param(name("unit_amount"))
        if unit is not None and unit < 0:
            raise invalid("This value must be greater than or equal to 0.", param="unit_amount")
        try:
            decimal = str(Decimal(unit_dec)) if unit_dec is not None else str(unit)
        except InvalidOperation:
            raise invalid(f"Invalid decimal: {unit_dec}", param="unit_amount_decimal") from None
        price["unit_amount_decimal"] = decimal
        price["unit_amount"] = unit if unit is not None else int(Decimal(decimal))
        if (tq := get_dict(p, "transform_quantity")) is not None:
            divide_by = get_int(tq, "divide_by", param="transform_quantity[divide_by]")
            rnd = enum(tq, "round", ("up", "down"), param="transform_quantity[round]")
            if not divide_by or rnd is None:
                raise missing_param("transform_quantity[divide_by]")
            price["transform_quantity"] = {"divide_by": divide_by, "round": rnd}
    state.add("price", price)
    emit(state, "price.created", state.render(price))
    return price


def plan_of(price: Json) -> Json:
    """The legacy ``plan`` Stripe still embeds beside ``price`` on subscription items."""
    plan = shapes.blank("plan")
    recurring = price.get("recurring") or {}
    plan.update(
        id=price["id"],
        active=price["active"],
        amount=price["unit_amount"],
        amount_decimal=price["unit_amount_decimal"],
        billing_scheme=price["billing_scheme"],
        created=price["created"],
        currency=price["currency"],
        interval=recurring.get("interval"),
        interval_count=recurring.get("interval_count"),
        meter=recurring.get("meter"),
        metadata=dict(price["metadata"]),
        nickname=price["nickname"],
        product=price["product"],
        tiers_mode=price["tiers_mode"],
        transform_usage=price["transform_quantity"],
        trial_period_days=recurring.get("trial_period_days"),
        usage_type=recurring.get("usage_type", "licensed"),
    )
    return plan


@routes.post("/v1/prices", params=Allow(PriceCreateParams))
def create_price(ctx: Ctx) -> Json:
    return ctx.state.render(_make_price(ctx.state, ctx.params))


@routes.get("/v1/prices/{id}", params=Allow(PriceRetrieveParams))
def retrieve_price(ctx: Ctx) -> Json:
    return ctx.state.render(ctx.state.get("price", ctx.arg("id")))


@routes.post("/v1/prices/{id}", params=Allow(PriceUpdateParams))
def update_price(ctx: Ctx) -> Json:
    state, p = ctx.state, ctx.params
    price = state.get("price", ctx.arg("id"))
    before = state.render(price)
    if (active := get_bool(p, "active")) is not None:
        price["active"] = active
    for key in ("nickname", "lookup_key"):
        if key in p:
            price[key] = get_str(p, key) or None
    price["metadata"] = merge_metadata(price["metadata"], p.get("metadata"))
    after = state.render(price)
    emit_update(state, "price.updated", before, after)
    return after


@routes.get("/v1/prices", params=Allow(PriceListParams))
def list_prices(ctx: Ctx) -> Json:
    p = ctx.params
    active = get_bool(p, "active")
    product = get_str(p, "product")
    kind = get_str(p, "type")
    currency = get_str(p, "currency")
    lookup_keys = set(map(str, get_list(p, "lookup_keys")))
    in_range = created_filter(p)
    every = ctx.state.newest_first("price")
    rows = [
        o
        for o in every
        if (active is None or o["active"] == active)
        and (not product or o["product"] == product)
        and (not kind or o["type"] == kind)
        and (not currency or o["currency"] == currency)
        and (not lookup_keys or o["lookup_key"] in lookup_keys)
        and in_range(o)
    ]
    return paginate(rows, p, "/v1/prices", ctx.state.render, "price", unfiltered=every)
