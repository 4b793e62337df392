"""The settings split: the Stripe key lives only in billing-sync's settings."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import SecretStr

from billfold.settings import Settings, SettingsError, load_settings
from billing_sync.settings import BillingSyncSettings, new_secrets_key

KEY = "sk_live_" + "Z" * 40


def test_other_services_settings_cannot_hold_the_stripe_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BILLFOLD_STRIPE_API_KEY", KEY)
    monkeypatch.setenv("BILLFOLD_BILLING_SECRETS_KEY", new_secrets_key())
    shared = Settings()
    assert not hasattr(shared, "stripe_api_key")
    assert not hasattr(shared, "billing_secrets_key")
    assert KEY not in repr(shared.model_dump())
    assert all(KEY not in repr(getattr(shared, name)) for name in type(shared).model_fields)
    # billing-sync's own settings do read it, as a secret that does not print.
    own = load_settings(BillingSyncSettings)
    assert isinstance(own.stripe_api_key, SecretStr)
    assert own.stripe_api_key.get_secret_value() == KEY
    assert KEY not in repr(own)
    assert KEY not in str(own.model_dump())


def test_the_secrets_key_is_required_and_checked(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("BILLFOLD_BILLING_SECRETS_KEY", raising=False)
    with pytest.raises(SettingsError):
        load_settings(BillingSyncSettings)
    assert capsys.readouterr().err.strip() == (
        "billfold: invalid setting BILLFOLD_BILLING_SECRETS_KEY: Field required"
    )
    for bad in ("not base64!", "c2hvcnQ="):  # not base64; base64 of 5 bytes
        monkeypatch.setenv("BILLFOLD_BILLING_SECRETS_KEY", bad)
        with pytest.raises(SettingsError):
            load_settings(BillingSyncSettings)
        err = capsys.readouterr().err
        assert "BILLFOLD_BILLING_SECRETS_KEY" in err
        assert bad not in err
    monkeypatch.setenv("BILLFOLD_BILLING_SECRETS_KEY", new_secrets_key())
    assert len(load_settings(BillingSyncSettings).secrets_key_bytes()) == 32


def test_the_service_refuses_to_start_without_a_secrets_key() -> None:
    env = {"PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [sys.executable, "-m", "billing_sync"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "billfold: invalid setting BILLFOLD_BILLING_SECRETS_KEY: Field required"
    ]


def test_stripe_defaults_and_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BILLFOLD_BILLING_SECRETS_KEY", new_secrets_key())
    monkeypatch.delenv("BILLFOLD_STRIPE_API_BASE", raising=False)
    monkeypatch.delenv("BILLFOLD_STRIPE_API_KEY", raising=False)
    s = BillingSyncSettings()
    assert s.stripe_api_base == "https://api.stripe.com"
    assert s.stripe_api_key is None
    assert s.billing_sync_port == 8082
    monkeypatch.setenv("BILLFOLD_STRIPE_API_BASE", "http://127.0.0.1:12111/")
    monkeypatch.setenv("BILLFOLD_RECONCILE_INTERVAL", "60")
    s = BillingSyncSettings()
    assert s.stripe_api_base == "http://127.0.0.1:12111"
    assert s.reconcile_interval == 60.0
