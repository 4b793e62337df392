"""The webhook endpoint: signatures checked, events stored once, answered fast."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from aiohttp import ClientSession

from billfold_testing.stripe_fake import sign
from billing_sync import accounts
from billing_sync.secrets import SecretBox
from billing_sync.webhook_accounts import WebhookAccounts

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


async def _post(synced: Synced, body: str, secret: str) -> int:
    headers = {"Stripe-Signature": sign(body, secret)}
    async with (
        ClientSession() as http,
        http.post(synced.webhook_url, data=body, headers=headers) as resp,
    ):
        return resp.status


async def test_a_new_signing_secret_applies_to_the_very_next_delivery(
    synced: Synced, box: SecretBox
) -> None:
    # The endpoint keeps the site's secret a few seconds (billing_sync.webhook_accounts);
    # a delivery signed with a secret set meanwhile is checked against a fresh read.
    assert await _post(synced, _event("evt_before_" + synced.site_id), synced.webhook_secret) == 200
    rolled = "whsec_rolled" + "R" * 20
    async with synced.pool.acquire() as conn:
        await accounts.configure(conn, box, synced.site_id, webhook_secret=rolled)
    assert await _post(synced, _event("evt_after_" + synced.site_id), rolled) == 200
    # A secret that was never this site's is still refused (after its one fresh read).
    assert await _post(synced, _event("evt_other_" + synced.site_id), "whsec_" + "x" * 26) == 400
    assert await _stored(synced) == 2


async def test_kept_accounts_expire_and_unknown_sites_are_never_kept(
    synced: Synced, box: SecretBox
) -> None:
    known = WebhookAccounts(box, ttl=0.3)
    assert known.kept(synced.site_id) is None
    account = await known.refresh(synced.pool, synced.site_id)
    assert account is not None
    assert account.webhook_secret == synced.webhook_secret
    assert known.kept(synced.site_id) == account
    await asyncio.sleep(0.35)  # past the ttl: the entry must be gone, not served
    assert known.kept(synced.site_id) is None
    assert await known.refresh(synced.pool, "site_doesnotexist") is None
    assert known.kept("site_doesnotexist") is None
    never = WebhookAccounts(box, ttl=0)
    assert await never.refresh(synced.pool, synced.site_id) is not None
    assert never.kept(synced.site_id) is None
