"""structlog set-up shared by every entry point: key=value lines (or JSON) on stderr, UTF-8.

Lines go out through ``tqdm.write``, which lifts any progress bar on stderr, prints the line and
redraws the bar: a log line never lands in the middle of a bar."""
from __future__ import annotations

import logging
import sys

import structlog

from shared.escape import terminal_text


def _escape_controls(_logger, _name, event_dict: dict) -> dict:
    """Model names, answers and server errors reach the logs: show their control characters (ANSI
    escapes, carriage returns) as text instead of letting them drive the terminal."""
    return {k: terminal_text(v, keep_newlines=k == "exception") if isinstance(v, str) else v
            for k, v in event_dict.items()}


class _BarSafeLogger:
    """A structlog logger printing each rendered line above the progress bars (tqdm.write)."""

    def __init__(self, file):
        self._file = file

    def msg(self, message: str) -> None:
        from tqdm import tqdm  # here, not at import: the daemon and tools log rarely

        tqdm.write(message, file=self._file)

    debug = info = warning = warn = error = critical = exception = fatal = failure = err = log = msg


def configure_logging(level: str = "info", json: bool = False) -> None:
    """Configure structlog once per process. ``json=True`` gives one JSON object per line."""
    for stream in (sys.stdout, sys.stderr):
        # Windows consoles default to a legacy code page; our texts are often Chinese.
        if hasattr(stream, "reconfigure") and (stream.encoding or "").lower() != "utf-8":
            try:
                stream.reconfigure(encoding="utf-8", errors="replace")
            except (ValueError, OSError):
                pass
    renderer = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=False),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            *(() if json else (_escape_controls,)),  # JSON escapes control characters itself
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=lambda *_: _BarSafeLogger(sys.stderr),
        cache_logger_on_first_use=False,
    )


def get_logger(name: str, **bound):
    """A structlog logger carrying ``component=name``.

    Lazy: the configuration is looked up at the first log call, not here, so module-level
    loggers created before ``configure_logging()`` still honour it (stderr, --log-json)."""
    return structlog.get_logger(component=name, **bound)
