"""structlog set-up: JSON off a terminal, console on one, context from contextvars."""

from __future__ import annotations

import logging
import sys

import structlog
import structlog.tracebacks


def _console_tracebacks() -> structlog.typing.ExceptionRenderer:
    """Tracebacks for a terminal. Never with the frames' local variables: they hold passwords,
    session tokens and API keys as often as anything else."""
    if getattr(structlog.dev, "rich", None) is None:  # rich is optional
        return structlog.dev.plain_traceback
    return structlog.dev.RichTracebackFormatter(show_locals=False)


def configure_logging(
    service: str, level: str = "info", fmt: str = "auto", *, cache_loggers: bool = True
) -> None:
    use_console = fmt == "console" or (fmt == "auto" and sys.stdout.isatty())
    # The console renderer formats exceptions itself; JSON gets them as structured data
    # (structlog's dict_tracebacks, without the locals).
    renderers: list[structlog.typing.Processor] = (
        [structlog.dev.ConsoleRenderer(exception_formatter=_console_tracebacks())]
        if use_console
        else [
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
            ),
            structlog.processors.JSONRenderer(),
        ]
    )
    numeric_level = logging.getLevelName(level.upper())
    if not isinstance(numeric_level, int):
        raise ValueError(f"LOG_LEVEL must be debug, info, warning or error, got {level!r}")
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            *renderers,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
        # Tests turn caching off: a cached logger keeps writing to the stream it first saw.
        cache_logger_on_first_use=cache_loggers,
    )
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(service=service)
    # Libraries that log through the standard library (warnings and worse) end up in the same
    # stream, rendered the same way: a JSON log has no plain-text lines in it.
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.contextvars.merge_contextvars,
                structlog.stdlib.add_logger_name,
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
            ],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *renderers],
        )
    )
    logging.basicConfig(handlers=[handler], level=max(numeric_level, logging.WARNING), force=True)
