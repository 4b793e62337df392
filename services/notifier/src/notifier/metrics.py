"""Prometheus metrics of the notifier (served at /metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

DELIVERIES = Counter(
    "notifier_deliveries_total",
    "Delivery attempts by channel and outcome (sent, retry, dead).",
    ["channel", "outcome"],
)
EVENT_TO_SENT = Histogram(
    "notifier_event_to_sent_seconds",
    "From the event's occurred_at to the message accepted (SMTP) or acknowledged (webhook).",
    ["channel"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600),
)
