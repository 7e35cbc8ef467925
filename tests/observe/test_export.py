"""The server as a host runs it (stdio, a subprocess), exporting its spans over OTLP/HTTP to a collector on
loopback, and logging JSON lines that name the same trace."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from dessert_mcp.cli.hosts import server_command
from tests.support.api import CANARY_KEY, assert_no_secret
from tests.support.faults import ThreadedFaultySandbox
from tests.support.measured import host_default_env


class Collector:
    """An OTLP/HTTP trace receiver (protobuf) on 127.0.0.1, keeping what it was sent."""

    def __init__(self) -> None:
        self.requests: list[ExportTraceServiceRequest] = []
        self.received = threading.Condition()
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                with collector.received:
                    collector.requests.append(request)
                    collector.received.notify_all()
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200 if self.path == "/v1/traces" else 404)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def spans(self) -> list[tuple[dict[str, Any], Any]]:
        """(resource attributes, span) for every span received."""
        found = []
        for request in self.requests:
            for resource_spans in request.resource_spans:
                resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                for scope_spans in resource_spans.scope_spans:
                    found += [(resource, span) for span in scope_spans.spans]
        return found


@pytest.fixture
def collector() -> Iterator[Collector]:
    collector = Collector()
    thread = threading.Thread(target=collector.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield collector
    finally:
        collector.server.shutdown()
        collector.server.server_close()


def _attributes(span: Any) -> dict[str, Any]:
    values = {}
    for a in span.attributes:
        kind = a.value.WhichOneof("value")
        values[a.key] = getattr(a.value, kind) if kind else None
    return values


async def test_spans_reach_an_otlp_collector_and_json_logs_name_their_trace(
    collector: Collector, canary_sandbox: ThreadedFaultySandbox, tmp_path: Path
) -> None:
    command, args = server_command()
    env = host_default_env() | {
        "DESSERT_API_KEY": CANARY_KEY,
        "DESSERT_API_BASE_URL": canary_sandbox.url,
        "DESSERT_MCP_LOG_FORMAT": "json",
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url,
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment.name=test",
    }
    stderr = tmp_path / "stderr.log"
    with stderr.open("w") as errlog:
        params = StdioServerParameters(command=command, args=args, env=env)
        async with Client(stdio_client(params, errlog=errlog)) as client:
            result = await client.call_tool("dessert.get_balance", {})
            assert not result.is_error
    # The server flushes its spans as it exits; wait for them rather than trust the timing.
    wanted = {"tools/call dessert.get_balance", "GET /v1/balance"}
    with collector.received:
        collector.received.wait_for(lambda: wanted <= {span.name for _, span in collector.spans()}, timeout=15)
    spans = collector.spans()
    by_name = {span.name: (resource, span) for resource, span in spans}
    assert wanted <= set(by_name)
    resource, call = by_name["tools/call dessert.get_balance"]
    _, request = by_name["GET /v1/balance"]
    assert resource["service.name"] == "dessert-mcp"
    assert resource["deployment.environment.name"] == "test"
    assert request.parent_span_id == call.span_id
    assert request.trace_id == call.trace_id
    assert _attributes(request)["http.response.status_code"] == 200
    assert_no_secret(str([(r, _attributes(s), s.name) for r, s in spans]))

    log = stderr.read_text()
    assert_no_secret(log)
    lines = [json.loads(line) for line in log.splitlines() if line.strip()]
    (entry,) = [line for line in lines if line.get("tool") == "dessert.get_balance"]
    assert entry["level"] == "INFO"
    assert entry["code"] == "ok"
    assert isinstance(entry["duration_ms"], float)
    assert entry["request_id"]
    assert entry["trace_id"] == call.trace_id.hex()
    assert entry["time"].endswith("Z")
    assert any("Tracing: exporting spans with otlp" in line["message"] for line in lines)
