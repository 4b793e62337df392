"""`make run`'s script end to end: it migrates, starts the fake Stripe and the services,
creates the demo customers in Stripe, prints a working API key, customer and portal link
(whose Plan page shows the customer's subscription), and Ctrl-C stops everything."""

from __future__ import annotations

import email
import email.policy
import http.cookiejar
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from email.message import EmailMessage
from pathlib import Path

from billfold_testing.demo_run import demo_object, read_until
from billfold_testing.infra import Slice
from billfold_testing.stripe_fake.fixtures import StripeFake

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _portal_plan_page(link: str, portal_base: str) -> str:
    """Follow a portal link as a browser does: GET it, POST its form (same origin), keep
    the session cookie, and GET the Plan page."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    with opener.open(link, timeout=10) as resp:
        assert resp.status == 200
    request = urllib.request.Request(link, data=b"", headers={"Origin": portal_base}, method="POST")
    with opener.open(request, timeout=10) as resp:  # 303s into the portal, followed
        assert resp.status == 200
        assert resp.geturl().startswith(portal_base + "/p/")
    with opener.open(portal_base + "/p/plan", timeout=10) as resp:
        assert resp.status == 200
        return str(resp.read().decode())


def test_run_prints_a_working_key_and_ctrl_c_stops_everything(
    bf_slice: Slice, tmp_path: Path
) -> None:
    port = _free_port()
    notifier_port = _free_port()
    smtp_port = _free_port()
    portal_port = _free_port()
    billing_port = _free_port()
    stripe_port = _free_port()
    portal_base = f"http://127.0.0.1:{portal_port}"
    env = {
        **os.environ,
        **bf_slice.env,
        "BILLFOLD_SESSION_API_PORT": str(port),
        "BILLFOLD_NOTIFIER_PORT": str(notifier_port),
        "BILLFOLD_PORTAL_WEB_PORT": str(portal_port),
        "BILLFOLD_PORTAL_BASE_URL": portal_base,
        "BILLFOLD_BILLING_SYNC_PORT": str(billing_port),
        "BILLFOLD_RUN_STRIPE_FAKE_PORT": str(stripe_port),
        "BILLFOLD_SMTP_URL": f"smtp://127.0.0.1:{smtp_port}",
        "BILLFOLD_RUN_VAR_DIR": str(tmp_path),
        "UV": shutil.which("uv") or "uv",
    }
    # No Stripe settings: run.sh starts the fake Stripe. No notifier keys given: run.sh
    # makes a development pair on first run.
    env.pop("BILLFOLD_STRIPE_API_KEY", None)
    env.pop("BILLFOLD_STRIPE_API_BASE", None)
    for name in list(env):
        if name.startswith("BILLFOLD_NOTIFIER_") and name != "BILLFOLD_NOTIFIER_PORT":
            del env[name]
    proc = subprocess.Popen(
        ["bash", "scripts/run.sh"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,  # so the test can send Ctrl-C to it alone
    )
    try:
        lines = read_until(proc, "Try it", timeout=180)
        demo = demo_object(lines)
        assert demo["api_key"].startswith("bf_sk_")
        assert demo["portal_url"].startswith(portal_base + "/r/bfl_")
        assert [c["external_id"] for c in demo["customers"]][:1] == ["demo-ada"]
        assert len(demo["customers"]) == 7
        customer = demo["customers"][0]["id"]
        # The printed link opens the portal on the demo customer's plan, which came
        # from the fake Stripe through billing-sync's webhooks and mirror.
        plan = _portal_plan_page(demo["portal_url"], portal_base)
        assert "Team (per seat)" in plan
        # Her next charge: 5 seats at $12.00, and the metered API calls of her period so
        # far at $0.002 each (Stripe's invoice preview counts the usage reported).
        assert "API calls" in plan
        charge = re.search(r"Next charge</dt><dd>\$([\d,]+\.\d\d) on ", plan)
        assert charge, plan
        assert float(charge.group(1).replace(",", "")) > 60.0
        curl_lines = read_until(proc, "curl -s -X POST", timeout=10)
        assert f"http://127.0.0.1:{port}/v1/portal_sessions" in curl_lines[-1]

        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/portal_sessions",
            data=json.dumps({"customer": customer}).encode(),
            headers={
                "Authorization": f"Bearer {demo['api_key']}",
                "Content-Type": "application/json",
            },
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as resp:
            assert resp.status == 201
            created = json.loads(resp.read())
        assert created["customer"] == customer
        assert created["status"] == "active"

        # send_email: the notifier mails the link to the development SMTP sink, which
        # prints it and keeps the message as an .eml file.
        keys = tmp_path / "notifier-keys.env"
        assert keys.stat().st_mode & 0o777 == 0o600
        assert "BILLFOLD_NOTIFIER_PRIVATE_KEY=" in keys.read_text()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/portal_sessions",
            data=json.dumps({"customer": customer, "send_email": True}).encode(),
            headers={
                "Authorization": f"Bearer {demo['api_key']}",
                "Content-Type": "application/json",
            },
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as resp:
            assert resp.status == 201
            emailed = json.loads(resp.read())
        mail_lines = read_until(proc, "link: ", timeout=30)
        assert mail_lines[-1].strip().endswith(f"link: {emailed['url']}")
        assert "Manage your billing" in mail_lines[-2]
        emls = list((tmp_path / "mail").glob("*.eml"))
        assert len(emls) == 1
        saved = email.message_from_bytes(emls[0].read_bytes(), policy=email.policy.default)
        assert isinstance(saved, EmailMessage)
        plain = saved.get_body(preferencelist=("plain",))
        assert plain is not None
        assert emailed["url"] in plain.get_content()

        # Keep reading what the services print while they stop: a full pipe would block
        # their (synchronous) log writes and so their shutdown.
        assert proc.stdout is not None
        drain = threading.Thread(target=proc.stdout.read, daemon=True)
        drain.start()
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=30) == 130  # the conventional status of a Ctrl-C exit
        deadline = time.monotonic() + 15
        while _port_open(port) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _port_open(port), "session-api still listening after Ctrl-C"
        assert not _port_open(notifier_port), "notifier still listening after Ctrl-C"
        assert not _port_open(smtp_port), "smtp sink still listening after Ctrl-C"
        assert not _port_open(stripe_port), "fake Stripe still listening after Ctrl-C"
        assert not _port_open(billing_port), "billing-sync still listening after Ctrl-C"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_run_with_a_stripe_of_its_own_fills_the_mirror_by_listing(
    bf_slice: Slice, tmp_path: Path, stripe_fake: StripeFake
) -> None:
    """BILLFOLD_STRIPE_API_KEY (and here a base: this fake stands in for real Stripe) set:
    run.sh starts no fake, and with no public webhook URL (BILLFOLD_RUN_WEBHOOK_URL) the
    demo reaches the mirror through `billfold sync`."""
    ports = {
        name: _free_port() for name in ("SESSION_API", "NOTIFIER", "PORTAL_WEB", "BILLING_SYNC")
    }
    portal_base = f"http://127.0.0.1:{ports['PORTAL_WEB']}"
    env = {
        **os.environ,
        **bf_slice.env,
        **{f"BILLFOLD_{name}_PORT": str(port) for name, port in ports.items()},
        "BILLFOLD_PORTAL_BASE_URL": portal_base,
        "BILLFOLD_STRIPE_API_KEY": stripe_fake.api_key,
        "BILLFOLD_STRIPE_API_BASE": stripe_fake.base_url,
        "BILLFOLD_SMTP_URL": f"smtp://127.0.0.1:{_free_port()}",
        "BILLFOLD_RUN_VAR_DIR": str(tmp_path),
        "UV": shutil.which("uv") or "uv",
    }
    env.pop("BILLFOLD_RUN_WEBHOOK_URL", None)
    proc = subprocess.Popen(
        ["bash", "scripts/run.sh"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        lines = read_until(proc, "Try it", timeout=180)
        assert not any(line.startswith("[stripe-fake]") for line in lines)  # none started
        demo = demo_object(lines)
        assert len(demo["customers"]) == 7
        assert stripe_fake.client().v1.webhook_endpoints.list().data == []  # no webhooks
        assert "Team (per seat)" in _portal_plan_page(demo["portal_url"], portal_base)
        assert proc.stdout is not None
        threading.Thread(target=proc.stdout.read, daemon=True).start()
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=30) == 130
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
