"""When Stripe is slow or down: the caller's deadline passes (``RpcTimeout``) or the
call is ``unavailable``, and a retry with the same ``call_id`` makes one Stripe write."""

from __future__ import annotations

import pytest

import billing_sync.rpc
from billfold.rpc import RpcTimeout, RpcUnavailable, SetCancelAtPeriodEnd

from .conftest import Eventually, LogCapture
from .rpc_harness import RpcEnv, rpc_env_fixture  # noqa: F401 - the fixture


async def test_stripe_hanging_past_the_deadline_then_a_retry_writes_once(
    rpc_env: RpcEnv, eventually: Eventually, logs: LogCapture
) -> None:
    env = rpc_env
    cus = await env.customer(subscription={})
    assert cus.subscription is not None
    call = SetCancelAtPeriodEnd(
        site_id=env.site_id,
        customer_id=cus.id,
        subscription_id=cus.subscription,
        cancel_at_period_end=True,
    )
    env.proxy.pause()  # Stripe takes the request and answers nothing
    with pytest.raises(RpcTimeout):
        await env.client.call(call, timeout=1.0)
    assert env.writes(call.call_id) == 0  # nothing reached Stripe yet
    env.proxy.resume()  # the held request goes through; the handler finishes and commits

    async def answered() -> bool:
        reply = await env.pool.fetchval(
            "SELECT reply IS NOT NULL FROM mirror.rpc_calls WHERE call_id = $1", call.call_id
        )
        return bool(reply)

    await eventually(answered)
    result = await env.client.call_with_retry(call, timeout=5)
    assert result["cancel_at_period_end"] is True
    assert env.writes(call.call_id) == 1
    # The retry was answered from the table: the handler did not run again.
    events = [line["event"] for line in logs.lines() if line.get("call_id") == call.call_id]
    assert events.count("rpc_call_done") == 1
    assert "rpc_call_replayed" in events
    assert await env.pool.fetchval(
        "SELECT cancel_at_period_end FROM mirror.subscriptions WHERE stripe_id = $1",
        cus.subscription,
    )


async def test_a_retry_while_the_first_attempt_still_waits_on_stripe_writes_once(
    rpc_env: RpcEnv,
) -> None:
    env = rpc_env
    cus = await env.customer(subscription={})
    assert cus.subscription is not None
    call = SetCancelAtPeriodEnd(
        site_id=env.site_id,
        customer_id=cus.id,
        subscription_id=cus.subscription,
        cancel_at_period_end=True,
    )
    env.proxy.pause()
    with pytest.raises(RpcTimeout):
        await env.client.call(call, timeout=1.0)
    # The first attempt still holds the call's row: the copy waits on it (bounded by its
    # own deadline) and is refused as unavailable, never run a second time.
    with pytest.raises((RpcUnavailable, RpcTimeout)):
        await env.client.call(call, timeout=1.0)
    env.proxy.resume()
    result = await env.client.call_with_retry(call, timeout=5, attempts=5)
    assert result["cancel_at_period_end"] is True
    assert env.writes(call.call_id) == 1


async def test_a_handler_stuck_on_stripe_gives_up_and_the_retry_writes_once(
    rpc_env: RpcEnv, eventually: Eventually, logs: LogCapture, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = rpc_env
    monkeypatch.setattr(billing_sync.rpc, "OVERRUN", 0.5)
    cus = await env.customer(subscription={})
    assert cus.subscription is not None
    call = SetCancelAtPeriodEnd(
        site_id=env.site_id,
        customer_id=cus.id,
        subscription_id=cus.subscription,
        cancel_at_period_end=True,
    )
    env.proxy.pause()
    with pytest.raises(RpcTimeout):
        await env.client.call(call, timeout=1.0)

    def gave_up() -> bool:
        return any(
            line["event"] == "rpc_handler_overran" and line.get("call_id") == call.call_id
            for line in logs.lines()
        )

    await eventually(gave_up)
    # Nothing kept: the call is not answered, so a retry runs it again.
    assert (
        await env.pool.fetchval(
            "SELECT count(*) FROM mirror.rpc_calls WHERE call_id = $1", call.call_id
        )
        == 0
    )
    # The abandoned request may still reach Stripe now (as after a crash between the
    # write and the commit); either way the retry's same idempotency key makes it one.
    env.proxy.resume()
    result = await env.client.call_with_retry(call, timeout=5)
    assert result["cancel_at_period_end"] is True
    assert env.writes(call.call_id) == 1
    assert await env.pool.fetchval(
        "SELECT cancel_at_period_end FROM mirror.subscriptions WHERE stripe_id = $1",
        cus.subscription,
    )


async def test_stripe_down_is_unavailable_and_the_retry_runs_the_call(rpc_env: RpcEnv) -> None:
    env = rpc_env
    cus = await env.customer(subscription={})
    assert cus.subscription is not None
    call = SetCancelAtPeriodEnd(
        site_id=env.site_id,
        customer_id=cus.id,
        subscription_id=cus.subscription,
        cancel_at_period_end=True,
    )
    await env.proxy.cut()
    with pytest.raises(RpcUnavailable) as caught:
        await env.client.call(call)
    assert caught.value.code == "stripe_unavailable"
    # Not stored: nothing of the attempt was kept.
    assert (
        await env.pool.fetchval(
            "SELECT count(*) FROM mirror.rpc_calls WHERE call_id = $1", call.call_id
        )
        == 0
    )
    await env.proxy.restore()
    result = await env.client.call(call)
    assert result["cancel_at_period_end"] is True
    assert env.writes(call.call_id) == 1
