"""The webhook endpoint: signatures checked, events stored once, answered fast."""

from __future__ import annotations

import json
import time

import pytest
from aiohttp import ClientSession

from billfold_testing.stripe_fake import sign

from .conftest import LogCapture, Synced


def _event(event_id: str = "evt_test_1") -> str:
    return json.dumps(
        {
            "id": event_id,
            "object": "event",
            "type": "customer.updated",
            "created": int(time.time()),
            "data": {"object": {"id": "cus_nope", "object": "customer"}},
        }
    )


async def _stored(synced: Synced) -> int:
    return int(
        await synced.pool.fetchval(
            "SELECT count(*) FROM mirror.stripe_events WHERE site_id = $1", synced.site_id
        )
    )


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("missing", "signature_missing"),
        ("wrong_secret", "signature_invalid"),
        ("tampered", "signature_invalid"),
        ("stale", "signature_stale"),
        ("garbage", "signature_invalid"),
    ],
)
async def test_bad_signatures_are_400_logged_once_and_store_nothing(
    synced: Synced, logs: LogCapture, case: str, reason: str
) -> None:
    body = _event(f"evt_{case}")
    headers = {"Content-Type": "application/json"}
    if case == "wrong_secret":
        headers["Stripe-Signature"] = sign(body, "whsec_someoneelse0000000000")
    elif case == "tampered":
        headers["Stripe-Signature"] = sign(body, synced.webhook_secret)
        body = body.replace("customer.updated", "customer.deleted")
    elif case == "stale":
        headers["Stripe-Signature"] = sign(body, synced.webhook_secret, int(time.time()) - 600)
    elif case == "garbage":
        headers["Stripe-Signature"] = "t=1,v1=zz"
    async with (
        ClientSession() as http,
        http.post(synced.webhook_url, data=body, headers=headers) as resp,
    ):
        assert resp.status == 400
        error = (await resp.json())["error"]
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "signature_invalid"
    assert error["param"] == "Stripe-Signature"
    assert await _stored(synced) == 0
    rejected = [line for line in logs.lines() if line["event"] == "stripe_webhook_rejected"]
    assert [(r["reason"], r["site"]) for r in rejected] == [(reason, synced.site_id)]
    assert synced.webhook_secret not in logs.text()


async def test_unknown_site_is_the_same_400(synced: Synced) -> None:
    body = _event("evt_unknown_site")
    url = synced.webhook_url.replace(synced.site_id, "site_doesnotexist")
    async with (
        ClientSession() as http,
        http.post(
            url, data=body, headers={"Stripe-Signature": sign(body, synced.webhook_secret)}
        ) as resp,
    ):
        assert resp.status == 400
        assert (await resp.json())["error"]["code"] == "signature_invalid"
    assert (
        int(
            await synced.pool.fetchval(
                "SELECT count(*) FROM mirror.stripe_events WHERE id = 'evt_unknown_site'"
            )
        )
        == 0
    )


async def test_a_duplicate_delivery_is_200_and_stores_nothing_new(synced: Synced) -> None:
    body = _event("evt_dup_" + synced.site_id)
    answers = []
    async with ClientSession() as http:
        for _ in range(3):
            headers = {"Stripe-Signature": sign(body, synced.webhook_secret)}
            async with http.post(synced.webhook_url, data=body, headers=headers) as resp:
                assert resp.status == 200
                answers.append((await resp.json())["duplicate"])
    assert answers == [False, True, True]
    assert await _stored(synced) == 1
