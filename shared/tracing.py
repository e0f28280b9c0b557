"""OpenTelemetry tracing: one tracer provider per service, W3C trace context in gRPC metadata.

Every service gets its own ``TracerProvider`` (resource ``service.name``), never the global one, so
that several services started in one process (the integration tests) keep their spans apart.

- ``OTEL_EXPORTER_OTLP_ENDPOINT`` set: spans are batched and exported over OTLP/gRPC; the sampler is
  the SDK's (``OTEL_TRACES_SAMPLER``, default parent-based always-on).
- Not set: spans are not recorded (sampler always-off). Trace and span ids are still made and
  carried from service to service in the ``traceparent`` metadata, so the log lines of one request
  share a trace id in every service, at a cost of a few microseconds per span (see the README).

Span attributes never carry metadata, messages, URLs with their query string or any other value
that could hold a secret: only names, codes and sizes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter, Setter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

TRACER_NAME = "trading-core"
PROPAGATOR = TraceContextTextMapPropagator()

__all__ = [
    "PROPAGATOR",
    "SpanKind",
    "Status",
    "StatusCode",
    "context_from_metadata",
    "make_tracer_provider",
    "metadata_with_context",
]


def make_tracer_provider(
    service: str, endpoint: str = "", *, processors: Sequence[SpanProcessor] = ()
) -> TracerProvider:
    """The service's tracer provider: OTLP export when ``endpoint`` is set, extra ``processors`` (tests)."""
    resource = Resource.create({"service.name": service})
    if not endpoint and not processors:
        return TracerProvider(resource=resource, sampler=ALWAYS_OFF)
    provider = TracerProvider(resource=resource)
    if endpoint:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    for processor in processors:
        provider.add_span_processor(processor)
    return provider


class _MetadataGetter(Getter[Sequence[Any]]):
    """Reads ``traceparent`` / ``tracestate`` from gRPC invocation metadata (pairs or ``_Metadatum``)."""

    def get(self, carrier: Sequence[Any], key: str) -> list[str] | None:
        values = [str(value) for name, value in carrier if name == key]
        return values or None

    def keys(self, carrier: Sequence[Any]) -> list[str]:
        return [str(name) for name, _ in carrier]


class _ListSetter(Setter[list[tuple[str, str]]]):
    def set(self, carrier: list[tuple[str, str]], key: str, value: str) -> None:
        carrier.append((key, value))


_GETTER = _MetadataGetter()
_SETTER = _ListSetter()


def context_from_metadata(metadata: Sequence[Any] | None) -> Context | None:
    """The trace context a caller sent in its metadata (None when it sent none)."""
    if not metadata:
        return None
    for name, _ in metadata:
        if name == "traceparent":
            return PROPAGATOR.extract(metadata, getter=_GETTER)
    return None


def metadata_with_context(
    metadata: Iterable[tuple[str, str]] | None, span: trace.Span | None = None
) -> list[tuple[str, str]]:
    """``metadata`` plus the ``traceparent`` (and ``tracestate``) of ``span`` (default: the current one)."""
    pairs = [(k, v) for k, v in (metadata or ()) if k not in ("traceparent", "tracestate")]
    context = trace.set_span_in_context(span) if span is not None else None
    PROPAGATOR.inject(pairs, context=context, setter=_SETTER)
    return pairs


def error_status(description: str) -> Status:
    """A span status for a failure, described by a code or type name (never a message)."""
    return Status(StatusCode.ERROR, description)
