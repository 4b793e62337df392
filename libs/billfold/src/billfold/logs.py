"""Structured logging, set up once per process.

Every line carries ``service``, ``event``, ``level``, ``ts`` and, inside a request or a
message handler, ``request_id`` (bound through contextvars). Standard-library loggers
(aiohttp, aio-pika, asyncpg) are routed through the same processors, so an SRE reads one
format. The redaction processor runs last before rendering, so nothing a caller logs —
a token in a URL, a key in a header dict, a code in an exception message — gets out.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from billfold.settings import Settings

REDACTED = "[redacted]"

# Field names whose values are secret whatever they look like.
_SECRET_FIELDS = re.compile(
    r"(token|secret|password|passwd|api_?key|authorization|cookie|otp|code_hash|"
    r"^code$|signature|session_key|dsn)",
    re.IGNORECASE,
)
# Secrets recognisable by shape anywhere in a string: our own prefixes, Stripe's,
# bearer/basic credentials, and passwords inside URLs.
_SECRET_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\b(bf_sk_|bf_pk_|bfl_|bfs_)[A-Za-z0-9_\-]{6,}"), r"\1" + REDACTED),
    (re.compile(r"\b((?:sk|rk|pk)_(?:test|live)_|whsec_)[A-Za-z0-9]{6,}"), r"\1" + REDACTED),
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=\-]{8,}"), r"\1 " + REDACTED),
    (re.compile(r"(://[^:/@\s]+:)[^@\s]+@"), r"\1" + REDACTED + "@"),
)


def redact_text(text: str) -> str:
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def redact_value(value: Any, depth: int = 0) -> Any:
    if depth > 6:
        return value
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {
            k: (
                REDACTED
                if isinstance(k, str) and _SECRET_FIELDS.search(k) and v
                else redact_value(v, depth + 1)
            )
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact_value(v, depth + 1) for v in value]
    return value


def redact_processor(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    for key, value in list(event_dict.items()):
        if key in ("level", "ts", "service", "logger", "request_id"):
            continue
        if _SECRET_FIELDS.search(key) and value:
            event_dict[key] = REDACTED
        else:
            event_dict[key] = redact_value(value)
    return event_dict


def _service_adder(service: str) -> Processor:
    def add_service(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
        event_dict.setdefault("service", service)
        return event_dict

    return add_service


def _format_exc_then_redact(renderer: Processor) -> list[Processor]:
    # Tracebacks are rendered to text before redaction so a secret in an exception
    # message is caught too.
    return [structlog.processors.format_exc_info, redact_processor, renderer]


def configure_logging(service: str, settings: Settings, stream: Any = None) -> None:
    """Configure structlog and the standard library for this process. Idempotent."""
    out = stream or sys.stderr
    fmt = settings.log_format
    if fmt == "auto":
        fmt = "console" if getattr(out, "isatty", lambda: False)() else "json"
    renderer: Processor
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer(sort_keys=False)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=False)

    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
        _service_adder(service),
    ]
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            *_format_exc_then_redact(renderer),
        ],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    # The access log is ours (one line per request from the http middleware).
    logging.getLogger("aiohttp.access").disabled = True


def get_logger(name: str | None = None) -> Any:
    return structlog.stdlib.get_logger(name)


def bind_request_id(request_id: str) -> None:
    structlog.contextvars.bind_contextvars(request_id=request_id)


def bound_context() -> MutableMapping[str, Any]:
    return structlog.contextvars.get_contextvars()
