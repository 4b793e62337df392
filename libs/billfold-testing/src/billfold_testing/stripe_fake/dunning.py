"""Smart Retries as the fake models them: when a failed automatic invoice payment is retried,
and what happens to the subscription once every retry has failed.

Stripe's settings (Billing > Revenue recovery) offer a retry schedule and a final action
("cancel the subscription", "mark the subscription as unpaid", "leave it past-due"); the
fake's :class:`DunningPolicy` is that setting. The clock drives the retries (``clock.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

AfterRetries = Literal["canceled", "unpaid", "past_due"]
AFTER_RETRIES: tuple[AfterRetries, ...] = ("canceled", "unpaid", "past_due")


@dataclass
class DunningPolicy:
    """``retry_days[n]`` is the wait, in days after the previous attempt, before retry n+1;
    after the last retry fails the subscription becomes ``after_retries`` (Stripe's default
    is to cancel it)."""

    retry_days: tuple[int, ...] = (3, 5, 7)
    after_retries: AfterRetries = "canceled"

    def __post_init__(self) -> None:
        if any(days <= 0 for days in self.retry_days) or len(self.retry_days) > 8:
            raise ValueError("retry_days: up to 8 positive numbers of days")
        if self.after_retries not in AFTER_RETRIES:
            raise ValueError(f"after_retries must be one of {', '.join(AFTER_RETRIES)}")

    def delay_after(self, attempt_count: int) -> int | None:
        """Days until the next automatic attempt after ``attempt_count`` attempts, or None
        when the schedule is used up."""
        if 1 <= attempt_count <= len(self.retry_days):
            return self.retry_days[attempt_count - 1]
        return None
