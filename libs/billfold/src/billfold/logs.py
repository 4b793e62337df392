"""Structured logging, set up once per process.

Every line carries ``service``, ``event``, ``level``, ``ts`` and, inside a request or a
message handler, ``request_id`` (bound through contextvars). Standard-library loggers
(aiohttp, aio-pika, asyncpg) are routed through the same processors, so an SRE reads one
format. The redaction processor runs last before rendering, so nothing a caller logs —
a token in a URL, a key in a header dict, a code in an exception message — gets out.

Speed matters here: the access log writes one line per request. structlog's own events
are therefore rendered natively (no detour through the standard library's ``Logger``,
``LogRecord`` and ``ProcessorFormatter``) and serialised with orjson; only foreign
(standard-library) records take the ``ProcessorFormatter`` path, with the same
processors and renderer. Both write to one :class:`_Sink`, which ``configure_logging``
re-points, so loggers cached before a reconfiguration (module-level ``get_logger``)
follow it, and so does the level, which is checked by the first processor; their
processors (service name, format) follow too, being one list replaced in place.

:func:`save_logging_state` and :func:`restore_logging_state` put all of that (structlog's
configuration, the sink, the root handlers and level) back as it was, for code that
reconfigures logging for a while: tests, above all.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any, TextIO

import orjson
import structlog
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError
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
# The prefixes are not anchored with \b: logged bytes are often escaped (aiohttp quotes a
# refused header as b'X-API-Key: \x7fbf_sk_…'), and no word boundary lies between an
# escape's last hex digit and the prefix, so an anchored pattern let such a key through.
# The price is redacting the odd word that merely ends like a prefix ("desk_test_abcdef").
_SECRET_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(bf_sk_|bf_pk_|bfl_|bfs_)[A-Za-z0-9_\-]{6,}"), r"\1" + REDACTED),
    (re.compile(r"((?:sk|rk|pk)_(?:test|live)_|whsec_)[A-Za-z0-9]{6,}"), r"\1" + REDACTED),
    (re.compile(r"(?i)(bearer|basic)\s+[A-Za-z0-9._~+/=\-]{8,}"), r"\1 " + REDACTED),
    (re.compile(r"(://[^:/@\s]+:)[^@\s]+@"), r"\1" + REDACTED + "@"),
)
# KEEP IN STEP WITH _SECRET_PATTERNS: a pattern added or loosened there needs its
# literal part here too, or strings holding it would skip the regexes.
# Substrings one of the patterns above needs (case-sensitive ones as they are, the
# case-insensitive ones lower-cased). An ASCII string containing none of them cannot
# match any pattern, so it skips the regexes; non-ASCII text always runs them (Unicode
# case folding makes a substring test unsafe there). Unanchoring the prefixes (above)
# changed no literal: each pattern still needs one of these whatever precedes it.
_NEEDLES = ("bf_", "bfl_", "bfs_", "_test_", "_live_", "whsec_", "://")
_NEEDLES_LOWER = ("bearer", "basic")
# The same test as one scan in C (every access-log line checks ~10 strings; the loop over
# the needles in Python was most of a line's cost). Used on ASCII text only, where
# re.ASCII | IGNORECASE folds exactly as str.lower() does.
_NEEDLE_SCAN = re.compile(
    "|".join([re.escape(n) for n in _NEEDLES] + [f"(?i:{re.escape(n)})" for n in _NEEDLES_LOWER]),
    re.ASCII,
)

# A request id taken from a caller (X-Request-Id, a message header): short and plain,
# nothing that could break a log line. One that fits may still hold a key (bf_sk_…), so
# request_id is redacted like every other field.
_PLAIN_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,64}")

_secret_key_memo: dict[str, bool] = {}


def _is_secret_key(key: str) -> bool:
    """``_SECRET_FIELDS.search(key)``, memoised: log field names come from a small set."""
    hit = _secret_key_memo.get(key)
    if hit is None:
        hit = _SECRET_FIELDS.search(key) is not None
        if len(_secret_key_memo) >= 4096:
            _secret_key_memo.clear()
        _secret_key_memo[key] = hit
    return hit


def _may_hold_secret(text: str) -> bool:
    return not text.isascii() or _NEEDLE_SCAN.search(text) is not None


def plain_request_id(value: str | None) -> str | None:
    """``value`` if it is a short plain id (``[A-Za-z0-9._:-]{1,64}``), else None."""
    return value if value and _PLAIN_REQUEST_ID.fullmatch(value) else None


def redact_text(text: str) -> str:
    if not _may_hold_secret(text):
        return text
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
                if isinstance(k, str) and _is_secret_key(k) and v
                else redact_value(v, depth + 1)
            )
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact_value(v, depth + 1) for v in value]
    return value


_PLAIN = (int, float, bool, type(None))


def redact_processor(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    # Every field, ours included (request_id can come from a caller): none is exempt.
    # _is_secret_key and _may_hold_secret written out inline: this runs for each field
    # of every line (a dozen on an access line), and the calls cost more than the tests.
    memo = _secret_key_memo
    scan = _NEEDLE_SCAN.search
    for key, value in list(event_dict.items()):
        secret_key = memo.get(key)
        if secret_key is None:
            secret_key = _is_secret_key(key)
        if secret_key and value:
            event_dict[key] = REDACTED
        elif type(value) is str:
            if not value.isascii() or scan(value) is not None:
                event_dict[key] = redact_text(value)
        elif type(value) not in _PLAIN:
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


def _json_fallback(value: Any) -> Any:
    return repr(value)


def _json_dumps(event_dict: Any, **_: Any) -> str:
    try:
        return orjson.dumps(event_dict, default=_json_fallback).decode("utf-8")
    except TypeError:  # what orjson refuses (non-str keys, huge ints…): the slow path
        return json.dumps(event_dict, default=repr)


class _Sink:
    """Where every line goes; ``configure_logging`` swaps the stream and the level."""

    def __init__(self) -> None:
        self.stream: TextIO = sys.stderr
        self.level = logging.INFO
        self.lock = threading.Lock()

    def write(self, line: str) -> None:
        with self.lock:
            stream = self.stream
            stream.write(line + "\n")
            stream.flush()


_SINK = _Sink()


class _SinkLogger:
    """The wrapped logger of structlog's native path: writes a rendered line."""

    __slots__ = ()

    def msg(self, message: str) -> None:
        _SINK.write(message)

    log = debug = info = warning = warn = error = critical = exception = fatal = msg


def _sink_logger_factory(*_: Any) -> _SinkLogger:
    return _SinkLogger()


class _SinkHandler(logging.Handler):
    """Standard-library records, formatted by ``ProcessorFormatter``, to the same sink."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        _SINK.write(line)


class _ParserErrorFilter(logging.Filter):
    """Cuts aiohttp's log of a request its HTTP parser refused (or whose body it could not
    decode) down to one WARNING line naming the exception class.

    aiohttp.server logs such a request at ERROR with a traceback, and the exception's
    message quotes the raw request line or header: an API key included. A key split by
    a control byte (``bf_sk_Y7s\\x002Tcm…``) leaves its tail beyond any pattern, so the
    message and the traceback go, whatever they hold. (Billfold apps answer these in
    ``billfold.http.malformed`` without logging aiohttp's line at all; this covers any
    other server in the process, and aiohttp changing under us.)
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, RequestPayloadError) and exc.__cause__ is not None:
            exc = exc.__cause__  # a body aiohttp could not read: name the decoder's error
        if isinstance(exc, HttpProcessingError | RequestPayloadError):
            record.msg = "http_request_malformed: %s"
            record.args = (type(exc).__name__,)
            record.exc_info = None
            record.exc_text = None
            record.stack_info = None
            if record.levelno > logging.WARNING:
                record.levelno = logging.WARNING
                record.levelname = logging.getLevelName(logging.WARNING)
        return True


_PARSER_ERROR_FILTER = _ParserErrorFilter()
# The logger aiohttp's RequestHandler logs parser errors to (aiohttp.log.server_logger).
_AIOHTTP_SERVER_LOGGER = "aiohttp.server"


_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "exception": logging.ERROR,
    "critical": logging.CRITICAL,
    "fatal": logging.CRITICAL,
}


def _filter_by_level(_: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    # Checked per event (not baked into a cached logger class) so a reconfigured level
    # applies to loggers already in use.
    if _LEVELS.get(method_name, logging.INFO) < _SINK.level:
        raise structlog.DropEvent
    return event_dict


# The processor list structlog is configured with. configure_logging replaces its
# contents in place: a logger cached on first use holds this very list, so it follows a
# reconfiguration (service name, renderer) instead of keeping the processors of the
# configuration it was first used under.
_PROCESSORS: list[Processor] = []


def configure_logging(service: str, settings: Settings, stream: Any = None) -> None:
    """Configure structlog and the standard library for this process. Idempotent."""
    out = stream or sys.stderr
    fmt = settings.log_format
    if fmt == "auto":
        fmt = "console" if getattr(out, "isatty", lambda: False)() else "json"
    renderer: Processor
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer(serializer=_json_dumps)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    level = logging.getLevelName(settings.log_level.upper())
    with _SINK.lock:
        _SINK.stream = out
        _SINK.level = level if isinstance(level, int) else logging.INFO

    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
        _service_adder(service),
    ]
    _PROCESSORS[:] = [
        _filter_by_level,
        *shared,
        structlog.processors.StackInfoRenderer(),
        *_format_exc_then_redact(renderer),
    ]
    structlog.configure(
        processors=_PROCESSORS,
        logger_factory=_sink_logger_factory,
        # Level filtering is _filter_by_level's job (it follows reconfiguration).
        wrapper_class=structlog.make_filtering_bound_logger(logging.NOTSET),
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            *_format_exc_then_redact(renderer),
        ],
    )
    handler = _SinkHandler()
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    # The access log is ours (one line per request from the http middleware).
    logging.getLogger("aiohttp.access").disabled = True
    server_logger = logging.getLogger(_AIOHTTP_SERVER_LOGGER)
    if _PARSER_ERROR_FILTER not in server_logger.filters:
        server_logger.addFilter(_PARSER_ERROR_FILTER)


# Named loggers configure_logging changes (besides the root's handlers and level).
_TOUCHED_LOGGERS = ("aiohttp.access", _AIOHTTP_SERVER_LOGGER)


@dataclass(frozen=True)
class LoggingState:
    """What :func:`save_logging_state` saw; give it to :func:`restore_logging_state`."""

    structlog_config: dict[str, Any]
    processors: list[Processor]
    stream: TextIO
    level: int
    root_handlers: list[logging.Handler]
    root_level: int
    # name -> (disabled, filters) of each logger in _TOUCHED_LOGGERS
    loggers: dict[str, tuple[bool, list[Any]]]


def save_logging_state() -> LoggingState:
    """Everything :func:`configure_logging` changes, as it is now."""
    config = structlog.get_config()
    root = logging.getLogger()
    return LoggingState(
        structlog_config=dict(config),
        processors=list(config["processors"]),
        stream=_SINK.stream,
        level=_SINK.level,
        root_handlers=list(root.handlers),
        root_level=root.level,
        loggers={
            name: (logging.getLogger(name).disabled, list(logging.getLogger(name).filters))
            for name in _TOUCHED_LOGGERS
        },
    )


def restore_logging_state(state: LoggingState) -> None:
    """Put logging back as :func:`save_logging_state` saw it, loggers already cached
    included (they hold :data:`_PROCESSORS`, whose contents are restored in place)."""
    _PROCESSORS[:] = state.processors
    structlog.configure(**{**state.structlog_config, "processors": _PROCESSORS})
    with _SINK.lock:
        _SINK.stream = state.stream
        _SINK.level = state.level
    root = logging.getLogger()
    root.handlers[:] = state.root_handlers
    root.setLevel(state.root_level)
    for name, (disabled, filters) in state.loggers.items():
        logger = logging.getLogger(name)
        logger.disabled = disabled
        logger.filters[:] = filters


def get_logger(name: str | None = None) -> Any:
    return structlog.get_logger(name)


def bind_request_id(request_id: str) -> None:
    structlog.contextvars.bind_contextvars(request_id=request_id)


def bound_context() -> MutableMapping[str, Any]:
    return structlog.contextvars.get_contextvars()
