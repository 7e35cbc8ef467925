"""Exporting the server's spans, configured only by the standard OpenTelemetry variables (`dessert-mcp[otel]`).

The SDK already makes a span per MCP message and the client one per Dessert request (`dessert_mcp.telemetry`); this
sets up the tracer provider that sends them somewhere. Tracing is on when `OTEL_TRACES_EXPORTER` names an exporter
(`otlp`, `console`), or, with that variable unset, when `OTEL_EXPORTER_OTLP_ENDPOINT` or
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set. `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none` turn it off.
Everything else (endpoint, headers, timeout, compression, sampler, batch sizes, service name, resource attributes)
the OpenTelemetry SDK reads itself from its own variables.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Final

from opentelemetry import trace

from dessert_mcp import __version__
from dessert_mcp.observe import requested_exporters

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

logger = logging.getLogger("dessert_mcp")

SERVICE_NAME: Final = "dessert-mcp"
EXPORTERS: Final = ("otlp", "console")
_INSTALL: Final = "install dessert-mcp[otel] (opentelemetry-sdk and the OTLP exporter)"


def configure_tracing(environ: Mapping[str, str] | None = None) -> TracerProvider | None:
    """Set the global tracer provider the `OTEL_*` variables describe; None when they ask for nothing.

    A provider someone else already set (`opentelemetry-instrument`, Logfire) is left alone. Call it once per
    process, after logging is set up: its problems are logged, never raised, so tracing cannot stop the server.
    """
    env = os.environ if environ is None else environ
    names = requested_exporters(env)
    if not names:
        return None
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        logger.warning("OTEL_* variables ask for traces, but opentelemetry-sdk is missing: %s.", _INSTALL)
        return None
    if isinstance(trace.get_tracer_provider(), TracerProvider):
        logger.info("Tracing: using the tracer provider already set up in this process")
        return None
    exporters = [(name, exporter) for name in names if (exporter := _exporter(name, env)) is not None]
    if not exporters:
        return None
    resource = Resource.create({"service.version": __version__})
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": SERVICE_NAME}))
    provider = TracerProvider(resource=resource)  # reads OTEL_TRACES_SAMPLER itself; flushes at exit
    for _name, exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    logger.info("Tracing: exporting spans with %s", ", ".join(name for name, _ in exporters))
    return provider


def _exporter(name: str, environ: Mapping[str, str]) -> SpanExporter | None:
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter(out=sys.stderr)  # stdout carries the protocol in stdio mode
    if name != "otlp":
        logger.warning("OTEL_TRACES_EXPORTER: %r is not one of %s; ignored.", name, ", ".join(EXPORTERS))
        return None
    protocol = (
        environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or ""
    ).strip() or "http/protobuf"
    try:
        if protocol == "grpc":
            # Not in dessert-mcp[otel] (it pulls in grpcio): for collectors that speak gRPC only.
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # type: ignore[import-not-found]
                OTLPSpanExporter as GRPCExporter,
            )

            grpc: SpanExporter = GRPCExporter()
            return grpc
        if protocol == "http/protobuf":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            return OTLPSpanExporter()
    except ImportError:
        package = "opentelemetry-exporter-otlp-proto-grpc" if protocol == "grpc" else "dessert-mcp[otel]"
        logger.warning("OTLP over %s needs %s installed; traces are not exported.", protocol, package)
        return None
    logger.warning("OTEL_EXPORTER_OTLP_PROTOCOL: %r is not supported (grpc, http/protobuf); ignored.", protocol)
    return None
