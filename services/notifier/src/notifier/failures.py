"""How a send attempt failed: the dispatcher retries transient failures, dead-letters
permanent ones (and transient ones once the retry schedule is exhausted)."""

from __future__ import annotations


class DeliveryFailed(Exception):
    def __init__(self, reason: str, *, permanent: bool) -> None:
        super().__init__(reason)
        self.reason = reason[:500]
        self.permanent = permanent


def transient(reason: str) -> DeliveryFailed:
    return DeliveryFailed(reason, permanent=False)


def permanent(reason: str) -> DeliveryFailed:
    return DeliveryFailed(reason, permanent=True)
