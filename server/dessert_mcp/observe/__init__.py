"""Observability for operators, opt in: traces exported by OpenTelemetry, and Prometheus metrics at /metrics.

The core (config, client, models, tools) never imports this package: it reports through `dessert_mcp.telemetry`
(hooks, and OpenTelemetry API spans that are free when nobody listens). The serving code imports it as it starts,
and the heavy halves load only when installed and asked for: `tracing` needs `dessert-mcp[otel]` and an `OTEL_*`
variable that asks for an exporter, `metrics` needs `dessert-mcp[metrics]` and an HTTP transport. See
docs/observability.md.
"""

from __future__ import annotations

import importlib.util

__all__ = ["metrics_installed"]


def metrics_installed() -> bool:
    """Whether prometheus-client (`dessert-mcp[metrics]`) is installed, without importing it."""
    return importlib.util.find_spec("prometheus_client") is not None
