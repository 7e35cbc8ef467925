"""Observability for operators, opt in: traces exported by OpenTelemetry, and Prometheus metrics at /metrics.

The core (config, client, models, tools) never imports this package: it reports through `dessert_mcp.telemetry`
(hooks, and OpenTelemetry API spans that are free when nobody listens). The serving code imports it as it starts,
and the heavy halves load only when installed and asked for: `tracing` needs `dessert-mcp[otel]` and an `OTEL_*`
variable that asks for an exporter, `metrics` needs `dessert-mcp[metrics]` and an HTTP transport. See
docs/observability.md.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping

__all__ = ["metrics_installed", "requested_exporters", "spans_heard"]


def metrics_installed() -> bool:
    """Whether prometheus-client (`dessert-mcp[metrics]`) is installed, without importing it."""
    return importlib.util.find_spec("prometheus_client") is not None


def requested_exporters(environ: Mapping[str, str]) -> list[str]:
    """The exporters the `OTEL_*` variables ask for; empty when tracing stays off."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    names = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if not names:
        endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        return ["otlp"] if endpoint and endpoint.strip() else []
    requested = [name for name in (part.strip() for part in names.split(",")) if name]
    return [] if "none" in requested else list(dict.fromkeys(requested))


def spans_heard(environ: Mapping[str, str]) -> bool:
    """Whether spans made in this process can reach anyone: the `OTEL_*` variables ask for an exporter, or a tracer
    provider is set already (`opentelemetry-instrument`, Logfire). When neither, the serving commands leave out the
    SDK's span per message, which costs a few per cent of every call and goes nowhere."""
    from opentelemetry import trace  # the MCP SDK depends on opentelemetry-api: always there, and loaded already

    return bool(requested_exporters(environ)) or not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
