"""What the server reports about its own work: the hooks metrics plug into, and the spans of upstream requests.

Both cost next to nothing when nobody watches. `Observer` does nothing; `dessert_mcp.observe.metrics` overrides it
with Prometheus counters. The spans use the OpenTelemetry API only, which is a no-op until something sets a
tracer provider (`dessert_mcp.observe.tracing` does, from the standard `OTEL_*` variables); without
`opentelemetry-api` installed (the client used on its own) there are no spans at all.

Nothing secret or personal goes into a label or an attribute: routes, status codes, this server's error codes,
attempt numbers, tool names and the API's host. Never a key, a token, an account or a transaction's text.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from dessert_mcp import __version__

try:  # the MCP SDK depends on opentelemetry-api, so the server always has it; the client alone may not
    from opentelemetry import trace as _trace
except ImportError:  # tests/observe/test_setup.py runs the client without it, in a subprocess
    _trace = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from opentelemetry.trace import Span

__all__ = ["NO_OBSERVER", "Observer", "UpstreamSpan", "current_trace_id", "mark_current_span"]

TRACER_NAME: Final = "dessert_mcp"
# A proxy until a tracer provider is set, then that provider's tracer: made once, never per request.
_tracer = _trace.get_tracer(TRACER_NAME, __version__) if _trace is not None else None


class Observer:
    """Events worth counting. Every method does nothing here; a subclass records what it wants.

    `code` is "ok" or one of the client's error codes (`ErrorCode`), "cancelled" or "internal_error";
    `outcome` is an HTTP status ("200", "429") or, when no answer came, the error code ("timeout").
    """

    def call_started(self, tool: str) -> None:
        """A tool call began (the in-flight count goes up until `call_finished`)."""

    def call_finished(self, tool: str, code: str, duration_s: float) -> None:
        """A tool call ended with `code` after `duration_s` seconds."""

    def upstream_request(self, route: str, outcome: str) -> None:
        """One request to Dessert (one attempt) ended with `outcome`."""

    def upstream_retry(self, route: str, code: str) -> None:
        """An attempt failed with the retryable `code`, and another one follows."""

    def shared(self, route: str) -> None:
        """A call got its answer from an identical request already in flight (single-flight)."""

    def cache_hit(self, route: str) -> None:
        """A call got its answer from the short cache, without asking Dessert."""

    def ledger_failed(self, operation: str) -> None:
        """The ledger could not do `operation` (record_usage, record_balance, read); the call answered without it."""

    def webhook(self, outcome: str) -> None:
        """An alert webhook attempt ended: `delivered`, `retried` (another attempt follows) or `failed` (for good); or
        a queued one was `abandoned` unsent (its URL is no longer configured)."""


NO_OBSERVER: Final = Observer()


class UpstreamSpan:
    """The span of one HTTP request to Dessert (one attempt), after OpenTelemetry's HTTP client conventions.

    Named `GET /v1/balance`; `http.request.resend_count` counts the attempts before this one.
    """

    __slots__ = ("_span",)

    def __init__(self, method: str, route: str, attributes: Mapping[str, Any], attempt: int) -> None:
        self._span: Span | None = None
        if _tracer is None:
            return
        span = _tracer.start_span(f"{method} {route}", kind=_trace.SpanKind.CLIENT, attributes=attributes)
        if span.is_recording():
            if attempt > 1:
                span.set_attribute("http.request.resend_count", attempt - 1)
            self._span = span

    def end(self, status: int | None, error: str | None) -> None:
        """`status` is the HTTP status (None without an answer); `error` this server's code when the attempt failed."""
        span = self._span
        if span is None:
            return
        if status is not None:
            span.set_attribute("http.response.status_code", status)
        if error is not None:
            # error.type: the status when there was one to blame, else the failure's code (e.g. "timeout").
            span.set_attribute("error.type", str(status) if status is not None and status >= 400 else error)
            span.set_attribute("dessert.error.code", error)
            span.set_status(_trace.StatusCode.ERROR)
        span.end()


def mark_current_span(attribute: str) -> None:
    """Set a boolean attribute (`dessert.cache.hit`, `dessert.upstream.shared`) on the current span, if any."""
    if _trace is not None:
        span = _trace.get_current_span()
        if span.is_recording():
            span.set_attribute(attribute, True)


def current_trace_id() -> str | None:
    """The current trace's id (32 hex digits), to find a log line's trace; None when nothing is traced."""
    if _trace is None:
        return None
    context = _trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None
