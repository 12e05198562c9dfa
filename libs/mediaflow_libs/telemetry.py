"""OpenTelemetry tracing: one set-up from the standard ``OTEL_*`` variables, and the W3C trace
context carried in AMQP message headers so a trace continues from the HTTP request that
queued a job to the worker that runs it.

Spans are exported only when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or its ``_TRACES_`` form) is
set and an OTLP exporter package is installed; otherwise they are made (so trace ids reach
the logs and the next service) but not sent anywhere.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from typing import Any

import structlog
from opentelemetry import propagate, trace
from opentelemetry.context import Context

log = structlog.get_logger(__name__)

# The OTLP exporters, preferred first; both read their endpoint and headers from OTEL_*.
_EXPORTERS = (
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.proto.grpc.trace_exporter",
)


def configure_tracing(service: str) -> None:
    """Install the process's tracer provider; call once, at start, from ``main``."""
    if os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return
    # Imported here: only processes that trace pay for the SDK.
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    # Resource.create reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES, which win.
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: f"mediaflow-{service}"}))
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    if endpoint:
        exporter = _otlp_exporter()
        if exporter is None:
            log.warning("telemetry.no_exporter", endpoint=endpoint, hint="install an OTLP exporter")
        else:
            provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)


def _otlp_exporter() -> Any:
    for module_name in _EXPORTERS:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        return module.OTLPSpanExporter()
    return None


def inject_trace_context(headers: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``headers`` plus the current trace context (``traceparent``, ``tracestate``), for a
    message whose consumer should continue this trace; unchanged outside any span."""
    carrier = dict(headers or {})
    propagate.inject(carrier)
    return carrier


def trace_headers(headers: Mapping[str, Any] | None) -> dict[str, str]:
    """Only the trace context fields of ``headers`` (as text): what to copy onto a message
    that carries the same job on (a retry), leaving the broker's own headers behind."""
    fields = propagate.get_global_textmap().fields
    carried = {}
    for name, value in (headers or {}).items():
        if name in fields:
            carried[name] = value.decode() if isinstance(value, bytes) else str(value)
    return carried


def extract_trace_context(headers: Mapping[str, Any] | None) -> Context:
    """The trace context a message's headers carry (an empty one when they carry none)."""
    return propagate.extract(trace_headers(headers))


def current_trace_id() -> str | None:
    """The current span's trace id in hex, for log lines; None outside a recorded trace."""
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None
