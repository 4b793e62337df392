"""`make screenshots`: regenerate docs/screenshots/ from the demo `make run` makes.

It runs scripts/run.sh (the fake Stripe, every service, the demo customers created in
Stripe and mirrored by billing-sync) in a slice of its own (database, vhost, Redis
prefix; dropped afterwards), opens the printed portal link in Debian's Chromium through
Playwright, and saves each section at 1280 px (desktop) and 360 px, light and dark:
docs/screenshots/<section>-<desktop|mobile>-<light|dark>.png.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

from playwright.async_api import async_playwright

from billfold_testing.browser import CHROMIUM, CHROMIUM_ARGS
from billfold_testing.demo_run import demo_object, read_until
from billfold_testing.infra import Slice, create_slice, destroy_slice

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "screenshots"
# Each section shown for the demo customer who has the most to show there.
SECTIONS = {
    "plan": "demo-grace",  # tiered price, its tiers table
    "invoices": "demo-edsger",  # open, void and declined invoices
    "payment-methods": "demo-ada",  # two cards
    "usage": "demo-ada",  # metered API calls, a bar per day
    "profile": "demo-ada",
}
WIDTHS = {"desktop": (1280, 860), "mobile": (360, 780)}
SCHEMES = ("light", "dark")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _link(api: str, key: str, customer: str) -> str:
    """A portal link for ``customer``, with a way back, from the session API."""
    body = json.dumps({"customer": customer, "return_url": "https://app.example.com/account"})
    request = urllib.request.Request(  # noqa: S310 - http://127.0.0.1, our own API
        f"{api}/v1/portal_sessions",
        data=body.encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310 - our own API
        return str(json.loads(resp.read())["url"])


def _start_demo(piece: Slice, var_dir: Path) -> tuple[subprocess.Popen[str], str, dict[str, str]]:
    """run.sh on free ports; returns the process, the portal's base URL and a link per
    section."""
    portal_base = f"http://127.0.0.1:{_free_port()}"
    api_port = _free_port()
    env = {
        **os.environ,
        **piece.env,
        "BILLFOLD_SESSION_API_PORT": str(api_port),
        "BILLFOLD_NOTIFIER_PORT": str(_free_port()),
        "BILLFOLD_PORTAL_WEB_PORT": portal_base.rsplit(":", 1)[1],
        "BILLFOLD_PORTAL_BASE_URL": portal_base,
        "BILLFOLD_BILLING_SYNC_PORT": str(_free_port()),
        "BILLFOLD_RUN_STRIPE_FAKE_PORT": str(_free_port()),
        "BILLFOLD_SMTP_URL": f"smtp://127.0.0.1:{_free_port()}",
        "BILLFOLD_RUN_VAR_DIR": str(var_dir),
        "BILLFOLD_LOG_LEVEL": "warning",
    }
    for name in ("BILLFOLD_STRIPE_API_KEY", "BILLFOLD_STRIPE_API_BASE"):
        env.pop(name, None)  # the fake Stripe, as `make run` without a key
    proc = subprocess.Popen(  # noqa: S603 - our own script, fixed arguments
        [shutil.which("bash") or "/bin/bash", str(ROOT / "scripts" / "run.sh")],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,  # Ctrl-C to it alone, as a terminal would
    )
    demo = demo_object(read_until(proc, "Try it", timeout=300))
    ids = {c["external_id"]: c["id"] for c in demo["customers"]}
    api = f"http://127.0.0.1:{api_port}"
    links = {s: _link(api, demo["api_key"], ids[who]) for s, who in SECTIONS.items()}
    return proc, portal_base, links


async def _shoot(portal_base: str, links: dict[str, str]) -> list[Path]:
    saved: list[Path] = []
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            for section, link in links.items():
                context = await browser.new_context(locale="en-US", device_scale_factor=1)
                page = await context.new_page()
                await page.goto(link)  # the link page continues by itself (our script)
                await page.wait_for_url(f"{portal_base}/p/**")
                for size, (width, height) in WIDTHS.items():
                    for scheme in SCHEMES:
                        await page.set_viewport_size({"width": width, "height": height})
                        await page.emulate_media(color_scheme=scheme)  # type: ignore[arg-type]
                        await page.goto(f"{portal_base}/p/{section}")
                        path = OUT / f"{section}-{size}-{scheme}.png"
                        await page.screenshot(path=str(path), full_page=True)
                        saved.append(path)
                await context.close()
        finally:
            await browser.close()
    return saved


def main() -> None:
    # `make screenshots ONLY="usage plan"`: just those sections (the others stay as they are).
    only = sys.argv[1:]
    unknown = set(only) - set(SECTIONS)
    if unknown:
        sys.exit(f"unknown section(s): {', '.join(sorted(unknown))}; known: {', '.join(SECTIONS)}")
    OUT.mkdir(parents=True, exist_ok=True)
    piece = create_slice()
    var_dir = ROOT / "var" / "screenshots"
    proc = None
    try:
        proc, portal_base, links = _start_demo(piece, var_dir)
        links = {s: link for s, link in links.items() if not only or s in only}
        for path in asyncio.run(_shoot(portal_base, links)):
            print(path.relative_to(ROOT))
    finally:
        if proc is not None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        shutil.rmtree(var_dir, ignore_errors=True)
        destroy_slice(piece)


if __name__ == "__main__":
    sys.exit(main())
