"""What observability costs: per tool call with and without tracing and metrics, and at cold start.

Standalone: `.venv/bin/python bench/observe.py [--calls N] [--rounds R] [--base REF]`. Each configuration runs in its
own process (a process gets one tracer provider for life): an in-memory MCP client calls dessert.get_balance against
an upstream faked at the transport, so the figures are the server's own work, not the network's.

- `before`: the code at `--base` (default: where this branch left main), exported to a temporary directory.
- `off`: this code with nothing configured (the OpenTelemetry API's no-op spans, the do-nothing observer).
- `metrics`: the Prometheus observer (`dessert-mcp[metrics]`), as /metrics runs on the HTTP transports.
- `tracing`: an OpenTelemetry SDK tracer provider with a batch processor and an exporter that drops every span.
- `both`: metrics and tracing.

Then the same additions alone, timed in one process where the machine's noise matters less: a no-op upstream span,
the metrics of one call, an upstream span recorded by the SDK. Cold start: a fresh interpreter importing the
server and building it, as `dessert-mcp` does before serving, against the code at `--base`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CONFIGS = ("before", "off", "metrics", "tracing", "both")
GIT = shutil.which("git") or "/usr/bin/git"
COLD = (
    "import dessert_mcp.cli, dessert_mcp.stdio, dessert_mcp.tools\n"
    "from dessert_mcp.config import Settings\n"
    "dessert_mcp.tools.build_server(Settings())\n"
    "try:\n"
    "    from dessert_mcp.observe.tracing import configure_tracing\n"
    "except ImportError:\n"
    "    pass\n"
    "else:\n"
    "    configure_tracing({})\n"
)


def worker(config: str, calls: int, rounds: int) -> None:
    """Runs in the child: print the median microseconds per call over `rounds` rounds of `calls` calls."""
    import anyio
    import httpx2
    from mcp import Client

    from dessert_mcp.config import Settings
    from dessert_mcp.service import DessertService
    from dessert_mcp.tools import build_server

    body = json.dumps(
        {
            "credits_balance": 205,
            "credits_balance_usd_equivalent": 20.5,
            "credits_lifetime_purchased": 500,
            "auto_recharge_enabled": True,
            "auto_recharge_threshold": 20,
            "auto_recharge_amount_usd": 25.0,
            "pricing": {"credit_usd": 0.1, "static_ad_credits": 5, "full_ad_credits": 15},
        }
    ).encode()

    def answer(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-type": "application/json"}, stream=httpx2.ByteStream(body))

    if config in ("tracing", "both"):
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

        class Drop(SpanExporter):
            def export(self, spans: Sequence[object]) -> SpanExportResult:
                return SpanExportResult.SUCCESS

        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(Drop()))
        trace.set_tracer_provider(provider)
    settings = Settings.from_env(
        {"DESSERT_API_KEY": "dsk_bench_0123456789abcdef", "DESSERT_API_BASE_URL": "https://api.dessert.test"}
    )
    transport = httpx2.MockTransport(answer)
    if config in ("metrics", "both"):
        from dessert_mcp.observe.metrics import Metrics

        service = DessertService(settings, transport=transport, observer=Metrics())
        server = build_server(settings, service=service)
    else:
        server = build_server(settings, transport=transport)

    async def run() -> list[float]:
        per_call: list[float] = []
        async with Client(server) as client:
            for _ in range(200):  # warm up
                await client.call_tool("dessert_get_balance", {})
            for _ in range(rounds):
                started = time.perf_counter()
                for _ in range(calls):
                    await client.call_tool("dessert_get_balance", {})
                per_call.append((time.perf_counter() - started) / calls * 1e6)
        return per_call

    import logging

    logging.disable(logging.INFO)  # one log line per call would measure the terminal
    print(json.dumps(anyio.run(run)))


def hooks() -> None:
    """Runs in the child: print µs for each addition on its own."""
    import timeit

    from dessert_mcp.observe.metrics import Metrics
    from dessert_mcp.telemetry import UpstreamSpan

    attributes = {"http.request.method": "GET", "url.template": "/v1/balance"}

    def span() -> None:
        UpstreamSpan("GET", "/v1/balance", attributes, 1).end(200, None)

    metrics = Metrics()

    def one_call() -> None:  # what a call that makes one upstream request reports
        metrics.call_started("dessert.get_balance")
        metrics.upstream_request("/v1/balance", "200")
        metrics.call_finished("dessert.get_balance", "ok", 0.01)

    def best(fn: object, n: int) -> float:
        return min(timeit.repeat(fn, number=n, repeat=5)) / n * 1e6  # type: ignore[arg-type]

    noop = best(span, 100_000)
    counted = best(one_call, 100_000)
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class Drop(SpanExporter):
        def export(self, spans: Sequence[object]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Drop()))
    trace.set_tracer_provider(provider)
    recorded = best(span, 20_000)
    print(json.dumps({"noop span": noop, "metrics of one call": counted, "recorded span": recorded}))


def export(ref: str) -> Path:
    """`ref`'s tree in a temporary directory (git archive; no worktree is touched)."""
    target = Path(tempfile.mkdtemp(prefix="dessert-bench-base-"))
    archive = subprocess.run([GIT, "-C", str(ROOT), "archive", ref, "server"], capture_output=True, check=True)
    with tempfile.TemporaryFile() as f:
        f.write(archive.stdout)
        f.seek(0)
        with tarfile.open(fileobj=f) as tar:
            tar.extractall(target, filter="data")
    return target / "server"


def child_env(path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DESSERT_", "OTEL_", "PROMETHEUS_"))}
    return env | {"PYTHONPATH": str(path)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=500, help="calls per round (default 500)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per process (default 3)")
    parser.add_argument("--passes", type=int, default=5, help="processes per configuration, interleaved (default 5)")
    parser.add_argument("--cold", type=int, default=15, help="cold starts per side (default 15)")
    parser.add_argument("--base", default=None, help="git ref for `before` (default: merge-base with main)")
    parser.add_argument("--worker", choices=(*CONFIGS, "hooks"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker == "hooks":
        hooks()
        return
    if args.worker:
        worker(args.worker, args.calls, args.rounds)
        return
    base_ref = (
        args.base
        or subprocess.run(
            [GIT, "-C", str(ROOT), "merge-base", "HEAD", "main"], capture_output=True, text=True, check=True
        ).stdout.strip()
    )
    base = export(base_ref)
    here = ROOT / "server"
    rounds: dict[str, list[float]] = {config: [] for config in CONFIGS}
    for n in range(args.passes):  # interleaved, rotating the order, so the shared machine's noise hits all alike
        for config in CONFIGS[n % len(CONFIGS) :] + CONFIGS[: n % len(CONFIGS)]:
            path = base if config == "before" else here
            argv = [sys.executable, str(HERE / "observe.py"), "--worker", "off" if config == "before" else config]
            argv += ["--calls", str(args.calls), "--rounds", str(args.rounds)]
            out = subprocess.run(argv, env=child_env(path), capture_output=True, text=True, check=True).stdout
            rounds[config] += json.loads(out)
    total = args.passes * args.rounds
    print(f"µs per tool call over {total} rounds of {args.calls} calls (before = {base_ref[:10]}); best and median:")
    best = {config: min(values) for config, values in rounds.items()}
    for config, values in rounds.items():
        median = statistics.median(values)
        print(
            f"  {config:<8} best {best[config]:7.1f}  median {median:7.1f}"
            f"   best vs before {best[config] - best['before']:+6.1f}  vs off {best[config] - best['off']:+6.1f}"
        )
    argv = [sys.executable, str(HERE / "observe.py"), "--worker", "hooks"]
    out = subprocess.run(argv, env=child_env(here), capture_output=True, text=True, check=True).stdout
    print("each addition on its own, best of 5:")
    for what, micros in json.loads(out).items():
        print(f"  {what:<20} {micros:6.2f} µs")
    times: dict[str, list[float]] = {"before": [], "now": []}
    for _ in range(args.cold):  # alternate, so the shared machine's noise hits both sides alike
        for side, path in (("before", base), ("now", here)):
            started = time.perf_counter()
            subprocess.run([sys.executable, "-c", COLD], env=child_env(path), check=True)
            times[side].append((time.perf_counter() - started) * 1000)
    before, now = statistics.median(times["before"]), statistics.median(times["now"])
    print(f"cold start (import and build the server), median of {args.cold}:")
    print(f"  before {before:7.1f} ms   now {now:7.1f} ms   ({now - before:+.1f} ms, {now / before - 1:+.1%})")


if __name__ == "__main__":
    main()
