"""Debian's Chromium for Playwright (tests and ``make screenshots``): Playwright cannot
download browsers here, so it launches this binary with these arguments (without the
background-networking ones Chromium floods a closed network)."""

from __future__ import annotations

import shutil

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
