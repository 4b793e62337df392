"""Payment method calls over the real RPC path: default card, removal, and a setup
session whose card becomes the default when the customer completes Checkout."""

from __future__ import annotations

import aiohttp
import pytest

from billfold.rpc import (
    CreateSetupSession,
    DetachPaymentMethod,
    RpcInvalidRequest,
    SetDefaultPaymentMethod,
)

from .conftest import Eventually
from .rpc_harness import RpcEnv, rpc_env_fixture  # noqa: F401 - the fixture


async def _default_in_mirror(env: RpcEnv, customer_id: str) -> object:
    return await env.pool.fetchval(
        "SELECT default_payment_method FROM mirror.customers WHERE id = $1", customer_id
    )


async def test_set_default_updates_stripe_and_the_mirror_before_the_reply(
    rpc_env: RpcEnv,
) -> None:
    env = rpc_env
    cus = await env.customer()
    second = await env.api.v1.payment_methods.attach_async(
        "pm_card_mastercard", params={"customer": cus.stripe_id}
    )
    await env.mirror()
    call = SetDefaultPaymentMethod(
        site_id=env.site_id, customer_id=cus.id, payment_method_id=second.id
    )
    result = await env.client.call(call)
    assert result["object"] == "payment_methods"
    assert result["default_payment_method"] == second.id
    flags = {pm["id"]: pm["is_default"] for pm in result["data"]}  # type: ignore[index, union-attr]
    assert flags == {second.id: True, cus.card: False}
    assert await _default_in_mirror(env, cus.id) == second.id
    rows = await env.pool.fetch(
        "SELECT stripe_id, is_default FROM mirror.payment_methods WHERE customer_id = $1",
        cus.id,
    )
    assert {r["stripe_id"]: r["is_default"] for r in rows} == flags
    stripe_customer = await env.api.v1.customers.retrieve_async(cus.stripe_id)
    assert stripe_customer.invoice_settings is not None
    assert stripe_customer.invoice_settings.default_payment_method == second.id


async def test_detach_a_card_that_is_not_the_default(rpc_env: RpcEnv) -> None:
    env = rpc_env
    cus = await env.customer()
    spare = await env.api.v1.payment_methods.attach_async(
        "pm_card_amex", params={"customer": cus.stripe_id}
    )
    await env.mirror()
    call = DetachPaymentMethod(site_id=env.site_id, customer_id=cus.id, payment_method_id=spare.id)
    result = await env.client.call(call)
    assert [pm["id"] for pm in result["data"]] == [cus.card]  # type: ignore[index, union-attr]
    detached = await env.pool.fetchval(
        "SELECT detached_at FROM mirror.payment_methods WHERE stripe_id = $1", spare.id
    )
    assert detached is not None
    pm = await env.api.v1.payment_methods.retrieve_async(spare.id)
    assert pm.customer is None


async def test_the_default_card_cannot_be_detached(rpc_env: RpcEnv) -> None:
    env = rpc_env
    cus = await env.customer()
    assert cus.card is not None
    call = DetachPaymentMethod(site_id=env.site_id, customer_id=cus.id, payment_method_id=cus.card)
    with pytest.raises(RpcInvalidRequest) as caught:
        await env.client.call(call)
    assert caught.value.code == "default_payment_method"
    pm = await env.api.v1.payment_methods.retrieve_async(cus.card)
    assert pm.customer == cus.stripe_id
    assert env.writes(call.call_id) == 0


@pytest.mark.parametrize("rpc_env", [{"worker": True}], indirect=True)
async def test_a_setup_session_card_becomes_the_default_on_completion(
    rpc_env: RpcEnv, eventually: Eventually
) -> None:
    env = rpc_env
    cus = await env.customer()
    call = CreateSetupSession(
        site_id=env.site_id,
        customer_id=cus.id,
        success_url="https://portal.example.com/billing?setup={CHECKOUT_SESSION_ID}",
        cancel_url="https://portal.example.com/billing",
    )
    result = await env.client.call(call)
    assert result["object"] == "setup_session"
    session = await env.api.v1.checkout.sessions.retrieve_async(str(result["id"]))
    assert session.mode == "setup"
    assert session.customer == cus.stripe_id
    assert session.success_url == call.success_url
    # The customer fills in Stripe's hosted page.
    async with aiohttp.ClientSession() as http:
        response = await http.post(
            str(result["url"]),
            data={"cardnumber": "5555555555554444", "expiry": "12/34", "name": "Ada"},
            allow_redirects=False,
        )
        assert response.status == 303
        assert response.headers["Location"].endswith(f"setup={result['id']}")
    session = await env.api.v1.checkout.sessions.retrieve_async(str(result["id"]))
    intent = await env.api.v1.setup_intents.retrieve_async(str(session.setup_intent))
    new_card = str(intent.payment_method)
    assert new_card != cus.card

    async def is_default() -> bool:
        return await _default_in_mirror(env, cus.id) == new_card

    await eventually(is_default)
    stripe_customer = await env.api.v1.customers.retrieve_async(cus.stripe_id)
    assert stripe_customer.invoice_settings is not None
    assert stripe_customer.invoice_settings.default_payment_method == new_card
    flag = await env.pool.fetchval(
        "SELECT is_default FROM mirror.payment_methods WHERE stripe_id = $1", new_card
    )
    assert flag is True
    intent = await env.api.v1.setup_intents.retrieve_async(intent.id)
    assert intent.metadata is not None
    assert intent.metadata["billfold_make_default"] == "done"


@pytest.mark.parametrize("rpc_env", [{"worker": True}], indirect=True)
async def test_a_card_set_up_outside_the_portal_does_not_become_the_default(
    rpc_env: RpcEnv, eventually: Eventually
) -> None:
    env = rpc_env
    cus = await env.customer()
    # A Checkout setup session the tenant made itself: no RPC metadata.
    session = await env.api.v1.checkout.sessions.create_async(
        params={
            "mode": "setup",
            "customer": cus.stripe_id,
            "success_url": "https://shop.example.com/done",
        }
    )
    async with aiohttp.ClientSession() as http:
        response = await http.post(
            str(session.url),
            data={"cardnumber": "5555555555554444", "expiry": "12/34", "name": "Ada"},
            allow_redirects=False,
        )
        assert response.status == 303
    session = await env.api.v1.checkout.sessions.retrieve_async(session.id)
    intent = await env.api.v1.setup_intents.retrieve_async(str(session.setup_intent))
    await env.settled(eventually)
    mirrored = await env.pool.fetchval(
        "SELECT is_default FROM mirror.payment_methods WHERE stripe_id = $1",
        str(intent.payment_method),
    )
    assert mirrored is False  # mirrored, and not the default
    assert await _default_in_mirror(env, cus.id) == cus.card
    stripe_customer = await env.api.v1.customers.retrieve_async(cus.stripe_id)
    assert stripe_customer.invoice_settings is not None
    assert stripe_customer.invoice_settings.default_payment_method == cus.card
