import io
import json
import logging

import structlog

from billfold.logs import configure_logging, get_logger, redact_text
from billfold.settings import Settings


def _configure() -> io.StringIO:
    out = io.StringIO()
    configure_logging("test-svc", Settings(log_format="json", log_level="debug"), stream=out)
    return out


def _lines(out: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.getvalue().splitlines() if line.strip()]


def test_every_line_has_the_standard_fields_and_request_id() -> None:
    out = _configure()
    structlog.contextvars.bind_contextvars(request_id="req_abc")
    try:
        get_logger("x").info("something_happened", site="demo")
    finally:
        structlog.contextvars.clear_contextvars()
    get_logger("x").info("outside_a_request")
    first, second = _lines(out)
    assert first["service"] == "test-svc"
    assert first["event"] == "something_happened"
    assert first["level"] == "info"
    assert first["request_id"] == "req_abc"
    assert str(first["ts"]).endswith("Z")
    assert "request_id" not in second


def test_standard_library_loggers_come_out_as_json_too() -> None:
    out = _configure()
    logging.getLogger("aio_pika.robust").warning("connection lost to %s", "broker")
    (line,) = _lines(out)
    assert line["event"] == "connection lost to broker"
    assert line["service"] == "test-svc"
    assert line["level"] == "warning"


def test_secrets_are_redacted_by_shape_and_by_field_name() -> None:
    out = _configure()
    log = get_logger("x")
    log.info(
        "opened GET /r/bfl_Abcdefghijklmnopqrstuvwxyz0123456789",
        key="bf_sk_SECRETSECRETSECRET",
        authorization="Bearer abcdefghijklmnop",
        token="anything at all",
        code="123456",
        headers={"Cookie": "bfs=zzz", "X-API-Key": "bf_sk_NESTEDNESTED"},
        dsn_like="amqp://guest:hunter2@rabbit:5672/",
        stripe="sk_test_4eC39HqLyjWDarjtT1zdp7dc",
        harmless="visible",
    )
    text = out.getvalue()
    for secret in (
        "Abcdefghijklmnopqrstuvwxyz0123456789",
        "SECRETSECRETSECRET",
        "abcdefghijklmnop",
        "anything at all",
        "123456",
        "zzz",
        "NESTEDNESTED",
        "hunter2",
        "4eC39HqLyjWDarjtT1zdp7dc",
    ):
        assert secret not in text, secret
    (line,) = _lines(out)
    assert line["harmless"] == "visible"
    assert line["key"] == "bf_sk_[redacted]"


def test_exception_tracebacks_are_redacted() -> None:
    out = _configure()
    try:
        raise ValueError("bad token bfl_ABCDEFGHIJKLMNOPQRSTUVWX")
    except ValueError:
        get_logger("x").exception("failed")
    text = out.getvalue()
    assert "ABCDEFGHIJKLMNOPQRSTUVWX" not in text
    assert "ValueError" in text


def test_redact_text_leaves_ordinary_text_alone() -> None:
    assert redact_text("customer cu_123 opened the portal") == "customer cu_123 opened the portal"


def test_reconfiguring_applies_to_loggers_already_in_use() -> None:
    """Module-level loggers are cached on first use; a later configure_logging (a test
    fixture, a CLI command) must still move them to the new stream and level."""
    log = get_logger("cached")
    first = io.StringIO()
    configure_logging("test-svc", Settings(log_format="json", log_level="warning"), stream=first)
    log.info("dropped_below_level")
    log.warning("kept")
    second = io.StringIO()
    configure_logging("test-svc", Settings(log_format="json", log_level="debug"), stream=second)
    log.debug("now_visible")
    assert [line["event"] for line in _lines(first)] == ["kept"]
    assert [line["event"] for line in _lines(second)] == ["now_visible"]


def test_redaction_shortcut_does_not_skip_secrets() -> None:
    """Strings that cannot hold a secret skip the regexes; every kind that can still
    goes through them, whatever its case or script."""
    assert redact_text("BEARER abcdefghijklmnop") == "BEARER [redacted]"
    assert redact_text("Basic dXNlcjpwYXNzd29yZA==") == "Basic [redacted]"
    assert redact_text("café bf_sk_ABCDEFGHIJ") == "café bf_sk_[redacted]"
    assert redact_text("x Bearer\u00a0abcdefghijklmnop") == "x Bearer [redacted]"
    assert redact_text("postgres://u:hunter2@db/x") == "postgres://u:[redacted]@db/x"
    assert redact_text("rk_live_abcdefgh") == "rk_live_[redacted]"
    assert redact_text("POST /v1/portal_sessions 201") == "POST /v1/portal_sessions 201"


def test_values_orjson_cannot_encode_are_still_logged() -> None:
    out = _configure()
    get_logger("x").info("odd_values", big=2**70, keyed={1: "one"}, obj=object())
    (line,) = _lines(out)
    assert line["big"] == 2**70
    assert line["keyed"] == {"1": "one"}
    assert str(line["obj"]).startswith("<object object")
