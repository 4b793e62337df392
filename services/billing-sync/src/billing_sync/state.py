"""Typed application state shared by the handlers and background tasks."""

from __future__ import annotations

from aiohttp import web

from billing_sync.secrets import SecretBox
from billing_sync.settings import BillingSyncSettings
from billing_sync.stripe_api import StripeGateway
from billing_sync.webhook_accounts import WebhookAccounts

SETTINGS: web.AppKey[BillingSyncSettings] = web.AppKey("settings", BillingSyncSettings)
SECRET_BOX: web.AppKey[SecretBox] = web.AppKey("secret_box", SecretBox)
STRIPE: web.AppKey[StripeGateway] = web.AppKey("stripe", StripeGateway)
WEBHOOK_ACCOUNTS: web.AppKey[WebhookAccounts] = web.AppKey("webhook_accounts", WebhookAccounts)
