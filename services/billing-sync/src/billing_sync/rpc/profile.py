"""The billing profile: name, email, phone, address, tax ids."""

from __future__ import annotations

from typing import Any, cast

from stripe.params import CustomerUpdateParams

from billfold.rpc import Address, JsonObject, RpcContext, UpdateBillingProfile
from billing_sync.mirror import customers
from billing_sync.rpc import results
from billing_sync.rpc.deps import RpcDeps
from billing_sync.rpc.errors import stripe_errors
from billing_sync.rpc.scope import open_scope, own_tax_id
from billing_sync.stripe_api import write_options

_ADDRESS_FIELDS = ("line1", "line2", "city", "state", "postal_code", "country")


def _address(address: Address) -> dict[str, str] | str:
    """The whole address replaces the old one: fields left out are cleared ("" is how
    Stripe's API clears); an address with no field at all clears it."""
    values = address.model_dump()
    if all(values[f] in (None, "") for f in _ADDRESS_FIELDS):
        return ""
    return {f: values[f] or "" for f in _ADDRESS_FIELDS}


def _changes(call: UpdateBillingProfile) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for name in ("name", "email", "phone"):
        value = getattr(call, name)
        if value is not None:
            params[name] = value  # "" clears
    if call.address is not None:
        params["address"] = _address(call.address)
    return params


async def update_profile(call: UpdateBillingProfile, ctx: RpcContext, deps: RpcDeps) -> JsonObject:
    scope = await open_scope(call, ctx, deps)
    for tax_id in call.tax_ids_remove:
        await own_tax_id(scope, tax_id)
    tax_ids = scope.client.v1.customers.tax_ids
    with stripe_errors():
        # One write per step, each with its own key: a retry repeats none of them.
        if changes := _changes(call):
            await scope.client.v1.customers.update_async(
                scope.stripe_customer,
                params=cast(CustomerUpdateParams, changes),
                options=write_options(ctx.idempotency_key("customer")),
            )
        for tax_id in call.tax_ids_remove:
            await tax_ids.delete_async(
                scope.stripe_customer,
                tax_id,
                options=write_options(ctx.idempotency_key(f"tax_id_remove:{tax_id}")),
            )
        for n, new in enumerate(call.tax_ids_add):
            await tax_ids.create_async(
                scope.stripe_customer,
                params={"type": new.type, "value": new.value},
                options=write_options(ctx.idempotency_key(f"tax_id_add:{n}")),
            )
        await customers.refresh(scope.sync, scope.stripe_customer)
    return await results.customer(scope.conn, scope.customer_id)
