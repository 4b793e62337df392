"""Prometheus metrics for RPC, on both sides (label ``side``: ``client`` or ``server``).

``outcome`` is ``ok``, an error type (``not_found``, ``stripe_error``,
``invalid_request``, ``unavailable``), or what happened instead of a reply: the
client's ``timeout`` and ``connection_error``; the server's ``replayed`` (answered from
``rpc_calls``), ``late`` (skipped, deadline passed) and ``malformed``.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

RPC_CALLS = Counter("billfold_rpc_calls_total", "RPC calls by outcome", ["side", "call", "outcome"])
RPC_LATENCY = Histogram(
    "billfold_rpc_call_duration_seconds",
    "RPC call latency (client: until the reply; server: until the reply is sent)",
    ["side", "call"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


def count(side: str, call: str, outcome: str, seconds: float | None = None) -> None:
    RPC_CALLS.labels(side, call, outcome).inc()
    if seconds is not None:
        RPC_LATENCY.labels(side, call).observe(seconds)
