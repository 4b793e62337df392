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
