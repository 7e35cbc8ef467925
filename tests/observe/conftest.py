"""Spans recorded in memory: the session's one tracer provider (OpenTelemetry allows one per process)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter


class _Recorder(SimpleSpanProcessor):
    """Exports ended spans only while a test records, so the rest of the suite leaves nothing behind."""

    recording = False

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        if self.recording:
            super().on_start(span, parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        if self.recording:
            super().on_end(span)


@pytest.fixture(scope="session")
def _recorder() -> tuple[_Recorder, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    recorder = _Recorder(exporter)
    provider = TracerProvider()
    provider.add_span_processor(recorder)
    trace.set_tracer_provider(provider)
    return recorder, exporter


@pytest.fixture
def spans(_recorder: tuple[_Recorder, InMemorySpanExporter]) -> Iterator[InMemorySpanExporter]:
    """The spans this test ends, from `spans.get_finished_spans()`."""
    recorder, exporter = _recorder
    exporter.clear()
    recorder.recording = True
    try:
        yield exporter
    finally:
        recorder.recording = False
        exporter.clear()
