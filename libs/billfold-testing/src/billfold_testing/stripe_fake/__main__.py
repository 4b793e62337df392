"""``python -m billfold_testing.stripe_fake --port 12111``: run the fake for the local demo."""

from __future__ import annotations

import argparse
import logging

from aiohttp import web

from .app import create_app
from .dunning import AFTER_RETRIES, DunningPolicy
from .webhooks import RetryPolicy


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m billfold_testing.stripe_fake",
        description="Stateful fake Stripe API (test mode only; not Stripe).",
    )
    # Loopback by default: the fake accepts any sk_test_ key and has no real security.
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=12111, help="port (default 12111)")
    parser.add_argument(
        "--public-url",
        help="base URL clients and browsers use to reach the fake (hosted pages); "
        "default http://HOST:PORT",
    )
    parser.add_argument(
        "--webhook-backoff", type=float, default=1.0, help="first webhook retry delay (s)"
    )
    parser.add_argument("--webhook-attempts", type=int, default=5)
    parser.add_argument(
        "--retry-days",
        default="3,5,7",
        help="Smart Retries: days between failed payment attempts (default 3,5,7)",
    )
    parser.add_argument(
        "--after-retries",
        choices=AFTER_RETRIES,
        default="canceled",
        help="subscription status once every retry failed (default canceled)",
    )
    parser.add_argument(
        "--no-access-log",
        action="store_true",
        help="log no line per request (benchmarks: the fake's CPU is not the system's)",
    )
    args = parser.parse_args(argv)
    try:
        days = tuple(int(d) for d in args.retry_days.split(",") if d.strip())
        dunning = DunningPolicy(retry_days=days, after_retries=args.after_retries)
    except ValueError as exc:
        parser.error(f"--retry-days: {exc}")
    logging.basicConfig(level=logging.INFO)
    base_url = args.public_url or f"http://{args.host}:{args.port}"
    app = create_app(
        retry=RetryPolicy(attempts=args.webhook_attempts, backoff=args.webhook_backoff),
        base_url=base_url,
        dunning=dunning,
    )
    print(f"fake Stripe listening on {base_url} (use any sk_test_… key)", flush=True)
    access_log = None if args.no_access_log else logging.getLogger("aiohttp.access")
    web.run_app(app, host=args.host, port=args.port, print=None, access_log=access_log)


if __name__ == "__main__":
    main()
