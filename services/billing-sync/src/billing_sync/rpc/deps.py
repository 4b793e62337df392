"""What billing-sync's RPC handlers use besides the call and its ``RpcContext``."""

from __future__ import annotations

from dataclasses import dataclass

from billing_sync.secrets import SecretBox
from billing_sync.stripe_api import StripeGateway


@dataclass(frozen=True)
class RpcDeps:
    gateway: StripeGateway
    box: SecretBox
