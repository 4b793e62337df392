"""The billing profile over the real RPC path: fields, address, tax ids."""

from __future__ import annotations

import pytest

from billfold.rpc import (
    Address,
    RpcNotFound,
    RpcStripeError,
    TaxIdInput,
    UpdateBillingProfile,
)

from .rpc_harness import RpcEnv, rpc_env_fixture  # noqa: F401 - the fixture


async def test_update_fields_address_and_add_then_remove_a_tax_id(rpc_env: RpcEnv) -> None:
    env = rpc_env
    cus = await env.customer()
    call = UpdateBillingProfile(
        site_id=env.site_id,
        customer_id=cus.id,
        name="Ada Lovelace",
        email="ada@example.org",
        phone="+44 20 7946 0000",
        address=Address(line1="1 Analytical St", city="London", postal_code="N1", country="GB"),
        tax_ids_add=[TaxIdInput(type="gb_vat", value="GB123456789")],
    )
    result = await env.client.call(call)
    assert result["object"] == "customer"
    assert (result["name"], result["email"], result["phone"]) == (
        "Ada Lovelace",
        "ada@example.org",
        "+44 20 7946 0000",
    )
    assert result["address"] == {
        "line1": "1 Analytical St",
        "line2": None,
        "city": "London",
        "state": None,
        "postal_code": "N1",
        "country": "GB",
    }
    tax_ids = result["tax_ids"]
    assert isinstance(tax_ids, list)
    assert [(t["type"], t["value"]) for t in tax_ids] == [("gb_vat", "GB123456789")]  # type: ignore[index, call-overload]
    row = await env.pool.fetchrow(
        "SELECT name, email, phone, address, tax_ids FROM mirror.customers WHERE id = $1", cus.id
    )
    assert row is not None
    assert row["name"] == "Ada Lovelace"
    assert row["address"]["city"] == "London"
    assert [t["value"] for t in row["tax_ids"]] == ["GB123456789"]
    stripe_customer = await env.api.v1.customers.retrieve_async(cus.stripe_id)
    assert stripe_customer.email == "ada@example.org"
    # Two writes, each under its own key (a retry repeats neither).
    assert env.writes(f"{call.call_id}:customer") == 1
    assert env.writes(f"{call.call_id}:tax_id_add:0") == 1

    tax_id = str(tax_ids[0]["id"])  # type: ignore[index, call-overload]
    remove = UpdateBillingProfile(
        site_id=env.site_id, customer_id=cus.id, tax_ids_remove=[tax_id], phone=""
    )
    result = await env.client.call(remove)
    assert result["tax_ids"] == []
    assert result["phone"] is None
    assert result["name"] == "Ada Lovelace"  # left out: unchanged
    assert (
        await env.pool.fetchval("SELECT tax_ids FROM mirror.customers WHERE id = $1", cus.id) == []
    )


async def test_another_customers_tax_id_is_not_found(rpc_env: RpcEnv) -> None:
    env = rpc_env
    cus = await env.customer()
    other = await env.customer()
    theirs = await env.api.v1.customers.tax_ids.create_async(
        other.stripe_id, params={"type": "eu_vat", "value": "DE123456789"}
    )
    await env.mirror()
    call = UpdateBillingProfile(
        site_id=env.site_id, customer_id=cus.id, name="Mallory", tax_ids_remove=[theirs.id]
    )
    with pytest.raises(RpcNotFound):
        await env.client.call(call)
    still = await env.api.v1.customers.tax_ids.list_async(other.stripe_id)
    assert [t.id for t in still.data] == [theirs.id]
    stripe_customer = await env.api.v1.customers.retrieve_async(cus.stripe_id)
    assert stripe_customer.name == "Ada"  # nothing written before the refusal


async def test_an_invalid_tax_id_is_a_readable_stripe_error(rpc_env: RpcEnv) -> None:
    env = rpc_env
    cus = await env.customer()
    call = UpdateBillingProfile(
        site_id=env.site_id,
        customer_id=cus.id,
        tax_ids_add=[TaxIdInput(type="eu_vat", value="not a vat number")],
    )
    with pytest.raises(RpcStripeError) as caught:
        await env.client.call(call)
    assert caught.value.code == "tax_id_invalid"
    assert caught.value.message == "The tax ID is not valid."
    assert (
        await env.pool.fetchval("SELECT tax_ids FROM mirror.customers WHERE id = $1", cus.id) == []
    )
