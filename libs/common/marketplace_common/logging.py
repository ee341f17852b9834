"""structlog configuration: one event per line, named events with fields.

* JSON lines when stderr is not a terminal (containers, CI), a readable
  console rendering on a terminal; ``json=True/False`` forces either.
* Fields bound with :func:`structlog.contextvars.bind_contextvars` (the server
  binds ``request_id`` and ``method`` per RPC) appear on every line, and so do
  ``trace_id`` and ``span_id`` while a span is active (tracing on).
* Fields bound with :func:`bind_process_fields` appear on every line of the
  process (one of several server processes logs its ``worker`` index and ``pid``).
* ISO-8601 UTC timestamps, a level filter, and stdlib ``logging`` (grpc,
  SQLAlchemy, alembic, ...) rendered through the same pipeline.
* Secrets never reach the output: values under keys such as ``authorization``,
  ``token``, ``api_key`` or ``password`` are replaced, passwords in URLs are
  masked and pydantic ``SecretStr`` values stay masked.
"""

from __future__ import annotations

import functools
import logging
import re
import sys
from collections.abc import Mapping
from typing import Any, TextIO, cast

import structlog
from structlog.typing import EventDict, FilteringBoundLogger, Processor, WrappedLogger

from marketplace_common.tracing import add_trace_ids

REDACTED = "[REDACTED]"
_SECRET_KEYS = frozenset(
    {
        "authorization",
        "token",
        "api_key",
        "apikey",
        "password",
        "passwd",
        "secret",
        "cookie",
        "set-cookie",
        "x-api-key",
        "client_secret",
        "private_key",
    }
)
_SECRET_SUFFIXES = ("_token", "_password", "_secret", "_api_key", "_apikey", "_private_key")
# Pagination tokens are opaque cursors, not credentials: keep them readable.
_PUBLIC_SUFFIXES = ("page_token",)
_URL_PASSWORD = re.compile(r"(://[^:/@\s]*:)[^@/\s]*@")
_HANDLER_MARK = "_marketplace_handler"
_NAME_FIELD = "logger_name"
_PROCESS_FIELDS: dict[str, Any] = {}


@functools.lru_cache(maxsize=4096)
def is_secret_key(key: str) -> bool:
    """True when values logged under ``key`` must be redacted (memoized: every field of
    every line asks, and a program logs a few hundred distinct keys at most)."""
    name = key.lower()
    if name.endswith(_PUBLIC_SUFFIXES):
        return False
    return name in _SECRET_KEYS or name.endswith(_SECRET_SUFFIXES)


def _redact_value(key: str, value: Any) -> Any:
    if is_secret_key(key):
        return REDACTED
    if isinstance(value, str):
        return _URL_PASSWORD.sub(r"\1***@", value) if "://" in value else value
    if isinstance(value, Mapping):
        return {k: _redact_value(str(k), v) for k, v in value.items()}
    return value


def redact_secrets(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """structlog processor: replace secret values (see module docstring)."""
    for key, value in event_dict.items():
        if key == "event":
            continue
        if is_secret_key(key):
            event_dict[key] = REDACTED
        elif isinstance(value, str):
            if "://" in value:
                event_dict[key] = _URL_PASSWORD.sub(r"\1***@", value)
        elif isinstance(value, Mapping):
            event_dict[key] = _redact_value(key, value)
    return event_dict


def _name_field(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    name = event_dict.pop(_NAME_FIELD, None)
    if name is not None:
        event_dict["logger"] = name
    return event_dict


def bind_process_fields(**fields: Any) -> None:
    """Add ``fields`` to every line this process logs from now on (e.g. ``worker=1,
    pid=...`` in one of several server processes); a line's own field wins."""
    _PROCESS_FIELDS.update(fields)


def _process_fields(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    for key, value in _PROCESS_FIELDS.items():
        event_dict.setdefault(key, value)
    return event_dict


def _shared_processors() -> list[Processor]:
    return [
        _name_field,
        structlog.contextvars.merge_contextvars,
        _process_fields,
        add_trace_ids,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact_secrets,
    ]


def _renderer(json: bool) -> Processor:
    if json:
        return structlog.processors.JSONRenderer()
    return structlog.dev.ConsoleRenderer(colors=False)


def configure_logging(
    level: str | int = "INFO",
    json: bool | None = None,
    *,
    stream: TextIO | None = None,
) -> None:
    """Configure structlog and the stdlib root logger (call once, at startup).

    Args:
        level: minimum level, a name ("DEBUG", "info") or a stdlib number.
        json: True for JSON lines, False for console output, None for
            automatic (JSON unless ``stream`` is a terminal).
        stream: where lines go; stderr by default.
    """
    out = stream if stream is not None else sys.stderr
    numeric = level if isinstance(level, int) else logging.getLevelNamesMapping()[level.upper()]
    use_json = json if json is not None else not _isatty(out)
    shared = _shared_processors()
    tail: list[Processor] = [structlog.processors.format_exc_info] if use_json else []
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.StackInfoRenderer(),
            *tail,
            _renderer(use_json),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.WriteLoggerFactory(file=out),
        # Not cached: tests and reconfiguration must take effect on existing loggers.
        cache_logger_on_first_use=False,
    )
    _route_stdlib(out, numeric, shared, [*tail, _renderer(use_json)])


def _route_stdlib(
    out: TextIO, level: int, shared: list[Processor], render: list[Processor]
) -> None:
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *render],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    setattr(handler, _HANDLER_MARK, True)
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def get_logger(name: str | None = None, **fields: Any) -> FilteringBoundLogger:
    """Return a structlog logger; ``name`` is logged as ``logger``, ``fields`` are bound.

    The logger stays lazy: it follows later ``configure_logging`` calls.
    """
    if name is not None:
        # "logger" is get_logger's own parameter name; _name_field renames it.
        fields[_NAME_FIELD] = name
    return cast(FilteringBoundLogger, structlog.get_logger(**fields))
