import subprocess
import sys

import pytest

from billfold.settings import Settings, SettingsError, load_settings


def test_defaults_work_for_a_local_run(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DATABASE_URL", "REDIS_URL", "AMQP_URL", "PORTAL_BASE_URL", "SESSION_API_PORT"):
        monkeypatch.delenv(f"BILLFOLD_{name}", raising=False)
    s = Settings()
    assert s.database_url == "postgresql://postgres@127.0.0.1:5432/billfold"
    assert s.redis_url == "redis://127.0.0.1:6379/0"
    assert s.amqp_url == "amqp://guest:guest@127.0.0.1:5672/"
    assert s.portal_base_url == "http://127.0.0.1:8081"
    assert s.session_api_port == 8080


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BILLFOLD_SESSION_API_PORT", "9999")
    monkeypatch.setenv("BILLFOLD_PORTAL_BASE_URL", "https://billing.example.com/")
    s = load_settings()
    assert s.session_api_port == 9999
    assert s.portal_base_url == "https://billing.example.com"  # trailing slash dropped


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("BILLFOLD_SESSION_API_PORT", "eighty"),
        ("BILLFOLD_SESSION_API_PORT", "70000"),
        ("BILLFOLD_DATABASE_URL", "mysql://x"),
        ("BILLFOLD_LOG_LEVEL", "loud"),
    ],
)
def test_invalid_setting_stops_with_one_line_naming_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith(f"billfold: invalid setting {name}:")


def test_cli_refuses_to_start_with_a_bad_setting() -> None:
    exe = [sys.executable, "-c", "from billfold.cli import main; main()", "migrate"]
    env = {"BILLFOLD_AMQP_URL": "http://nope", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(exe, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "billfold: invalid setting BILLFOLD_AMQP_URL: Value error, must start with amqp:// or amqps://"
    ]
