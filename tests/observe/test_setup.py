"""Setting up the exporter from the standard OTEL_* variables, and what tracing costs when nobody asks for it."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from dessert_mcp.observe.tracing import configure_tracing, requested_exporters
from tests.support import ROOT
from tests.support.api import CANARY_KEY
from tests.support.measured import coverage_env


def _python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`code` in a fresh interpreter (a process has one tracer provider for life), from the repository root."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", **coverage_env(), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, []),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, ["otlp"]),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, ["otlp"]),
        ({"OTEL_TRACES_EXPORTER": "console"}, ["console"]),
        ({"OTEL_TRACES_EXPORTER": "otlp, console,otlp"}, ["otlp", "console"]),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, []),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, []),
        ({"OTEL_SDK_DISABLED": "false", "OTEL_TRACES_EXPORTER": "otlp"}, ["otlp"]),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "  "}, []),
    ],
)
def test_the_otel_variables_decide_whether_and_how_spans_are_exported(
    environ: dict[str, str], expected: list[str]
) -> None:
    assert requested_exporters(environ) == expected


def test_nothing_is_set_up_when_no_variable_asks_for_it() -> None:
    assert configure_tracing({}) is None


def test_a_tracer_provider_set_up_by_someone_else_is_left_alone(spans: InMemorySpanExporter) -> None:
    """Here the test session's own provider plays `opentelemetry-instrument` or Logfire."""
    assert configure_tracing({"OTEL_TRACES_EXPORTER": "console"}) is None


def test_the_console_exporter_writes_to_stderr_since_stdout_carries_the_protocol() -> None:
    result = _python(
        """
        import logging
        from opentelemetry import trace
        from dessert_mcp.observe.tracing import configure_tracing
        logging.basicConfig(level=logging.INFO)
        assert configure_tracing() is not None
        trace.get_tracer("t").start_span("hello").end()
        """,
        OTEL_TRACES_EXPORTER="console",
        OTEL_SERVICE_NAME="billing-agents",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert '"name": "hello"' in result.stderr
    assert '"service.name": "billing-agents"' in result.stderr  # the standard variable wins over our default


@pytest.mark.parametrize(
    ("env", "warning"),
    [
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "needs opentelemetry-exporter-otlp-proto-grpc installed"),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, "is not supported"),
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "is not one of otlp, console"),
    ],
)
def test_an_exporter_that_cannot_be_made_is_a_warning_not_a_crash(env: dict[str, str], warning: str) -> None:
    result = _python(
        """
        import logging
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from dessert_mcp.observe.tracing import configure_tracing
        logging.basicConfig(level=logging.INFO)
        assert configure_tracing() is None
        assert not isinstance(trace.get_tracer_provider(), TracerProvider)
        """,
        OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9",
        **env,
    )
    assert result.returncode == 0, result.stderr
    assert warning in result.stderr


def test_without_the_otel_extra_the_server_says_what_to_install() -> None:
    result = _python(
        """
        import logging, sys
        for name in ("opentelemetry.sdk", "opentelemetry.exporter"):
            sys.modules[name] = None  # as if dessert-mcp[otel] were not installed
        from dessert_mcp.observe.tracing import configure_tracing
        logging.basicConfig(level=logging.INFO)
        assert configure_tracing() is None
        """,
        OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9",
    )
    assert result.returncode == 0, result.stderr
    assert "install dessert-mcp[otel]" in result.stderr


def test_the_client_works_unchanged_without_opentelemetry_installed() -> None:
    result = _python(
        f"""
        import json, sys
        sys.modules["opentelemetry"] = None  # as if opentelemetry-api were not installed
        import anyio
        from dessert_mcp.client import DessertClient
        from dessert_mcp.config import Secret
        from tests.support.api import FAKE_BASE_URL, FakeDessertAPI

        async def main():
            api = FakeDessertAPI()
            async with DessertClient(FAKE_BASE_URL, api_key=Secret({CANARY_KEY!r}), transport=api.transport()) as c:
                print((await c.get_balance()).credits_balance, len(api.requests))

        anyio.run(main)
        assert not [m for m in sys.modules if m.startswith("opentelemetry.")]
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["205", "1"]


def test_tracing_adds_no_import_to_the_server_beyond_what_the_sdk_already_makes() -> None:
    """The cold start: opentelemetry-api comes with the MCP SDK anyway, and the exporter and metrics code loads only
    when asked for. (What it costs in time: docs/observability.md.)"""
    result = _python(
        """
        import json, sys
        import mcp.server.mcpserver
        assert "opentelemetry.trace" in sys.modules, "the SDK no longer imports opentelemetry-api"
        before = set(sys.modules)
        import dessert_mcp.stdio, dessert_mcp.tools, dessert_mcp.http.app
        from dessert_mcp.config import Settings
        from dessert_mcp.observe.tracing import configure_tracing
        dessert_mcp.tools.build_server(Settings())
        configure_tracing({})
        added = set(sys.modules) - before
        print(json.dumps(sorted(m for m in added if not m.startswith("dessert_mcp"))))
        """
    )
    assert result.returncode == 0, result.stderr
    added = json.loads(result.stdout)
    assert not [m for m in added if m.startswith(("opentelemetry", "prometheus_client", "google.protobuf"))], added


@pytest.mark.parametrize(
    ("setup", "environ", "heard"),
    [
        ("", {}, False),
        ("", {"OTEL_TRACES_EXPORTER": "console"}, True),
        ("", {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, True),
        ("", {"OTEL_TRACES_EXPORTER": "none"}, False),
        ("from opentelemetry.sdk.trace import TracerProvider; trace.set_tracer_provider(TracerProvider())", {}, True),
    ],
    ids=["nothing", "an-exporter-asked-for", "an-otlp-endpoint", "exporter-none", "a-provider-set-already"],
)
def test_spans_are_heard_when_an_exporter_is_asked_for_or_a_provider_is_set(
    setup: str, environ: dict[str, str], heard: bool
) -> None:
    done = _python(
        f"""
        import os
        from opentelemetry import trace
        {setup}
        from dessert_mcp.observe import spans_heard
        print(spans_heard(os.environ))
        """,
        **environ,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(heard)
