"""gRPC interceptors shared by every service and client.

Server side, outermost first: ``ObservabilityInterceptor`` (trace span, Prometheus series,
error mapping) then ``AuthInterceptor`` (shared bearer token). Client side:
``ClientInterceptor`` adds the token, the trace context and a default deadline.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer

from k2rl.core.errors import ServiceError
from k2rl.core.metrics import ServiceMetrics
from k2rl.core.tracing import PROPAGATOR

log = logging.getLogger(__name__)

# Kubernetes and docker probes cannot send metadata, so health stays open without a token.
UNAUTHENTICATED_METHODS = frozenset({"/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch"})

Behavior = Callable[..., Any]


def split_method(full_method: str) -> tuple[str, str]:
    """'/pkg.Service/Method' -> ('pkg.Service', 'Method')."""
    _, service, method = full_method.split("/", 2)
    return service, method


def wrap_handler(
    handler: grpc.RpcMethodHandler, wrap: Callable[[Behavior, bool, bool], Behavior]
) -> grpc.RpcMethodHandler:
    """Rebuild ``handler`` with its behavior passed through ``wrap(behavior, req_stream, resp_stream)``."""
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(
            wrap(handler.unary_unary, False, False),
            handler.request_deserializer, handler.response_serializer,
        )
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(
            wrap(handler.unary_stream, False, True),
            handler.request_deserializer, handler.response_serializer,
        )
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(
            wrap(handler.stream_unary, True, False),
            handler.request_deserializer, handler.response_serializer,
        )
    return grpc.stream_stream_rpc_method_handler(
        wrap(handler.stream_stream, True, True),
        handler.request_deserializer, handler.response_serializer,
    )


def _metadata_dict(metadata: Any) -> dict[str, str]:
    return {key: value for key, value in (metadata or ()) if isinstance(value, str)}


class AuthInterceptor(grpc.ServerInterceptor):
    """Rejects RPCs without ``authorization: Bearer <token>`` (constant-time compare)."""

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

    def intercept_service(
        self, continuation: Callable, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None or handler_call_details.method in UNAUTHENTICATED_METHODS:
            return handler
        presented = _metadata_dict(handler_call_details.invocation_metadata).get("authorization", "")
        if hmac.compare_digest(presented.encode(), self._expected):
            return handler
        reason = "missing" if not presented else "invalid"

        def deny(behavior: Behavior, request_streaming: bool, response_streaming: bool) -> Behavior:
            def reject(request_or_iterator: Any, context: grpc.ServicerContext) -> Any:
                context.abort(
                    grpc.StatusCode.UNAUTHENTICATED,
                    f"{reason} bearer token: send metadata 'authorization: Bearer <token>' "
                    "with the deployment's shared token (K2RL_AUTH_TOKEN)",
                )

            return reject

        return wrap_handler(handler, deny)


class ObservabilityInterceptor(grpc.ServerInterceptor):
    """Server span + per-RPC metrics + mapping of escaped exceptions to gRPC status codes."""

    def __init__(self, service: str, metrics: ServiceMetrics, tracer: Tracer) -> None:
        self._service = service
        self._rpc = metrics.rpc
        self._tracer = tracer

    def intercept_service(
        self, continuation: Callable, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        full_method = handler_call_details.method
        grpc_service, grpc_method = split_method(full_method)
        labels = (self._service, grpc_service, grpc_method)
        parent = PROPAGATOR.extract(_metadata_dict(handler_call_details.invocation_metadata))

        def observe(behavior: Behavior, request_streaming: bool, response_streaming: bool) -> Behavior:
            def run(request_or_iterator: Any, context: grpc.ServicerContext) -> Any:
                span = self._tracer.start_span(
                    full_method.lstrip("/"), context=parent, kind=SpanKind.SERVER,
                    attributes={"rpc.system": "grpc", "rpc.service": grpc_service,
                                "rpc.method": grpc_method},
                )
                token = otel_context.attach(trace.set_span_in_context(span))
                started = time.perf_counter()
                self._rpc.started.labels(*labels).inc()
                self._rpc.in_flight.labels(*labels).inc()
                if request_streaming:
                    request_or_iterator = self._count(request_or_iterator, self._rpc.messages_received, labels)
                else:
                    self._rpc.messages_received.labels(*labels).inc()

                def finish() -> None:
                    code = _final_code(context)
                    span.set_attribute("rpc.grpc.status_code", code.value[0])
                    if code is not grpc.StatusCode.OK:
                        span.set_status(Status(StatusCode.ERROR, code.name))
                    span.end()
                    self._rpc.in_flight.labels(*labels).dec()
                    self._rpc.handled.labels(*labels, code.name).inc()
                    self._rpc.latency.labels(*labels).observe(time.perf_counter() - started)

                if response_streaming:
                    otel_context.detach(token)
                    return self._stream(behavior, request_or_iterator, context, span, labels, finish)
                try:
                    response = self._invoke(behavior, request_or_iterator, context, span)
                    self._rpc.messages_sent.labels(*labels).inc()
                    return response
                finally:
                    otel_context.detach(token)
                    finish()

            return run

        return wrap_handler(handler, observe)

    def _stream(
        self, behavior: Behavior, request: Any, context: grpc.ServicerContext,
        span: trace.Span, labels: tuple[str, str, str], finish: Callable[[], None],
    ) -> Iterator[Any]:
        # A generator runs on whatever thread pulls it; attach the span around each step.
        token = otel_context.attach(trace.set_span_in_context(span))
        try:
            for response in self._invoke(behavior, request, context, span):
                self._rpc.messages_sent.labels(*labels).inc()
                otel_context.detach(token)
                yield response
                token = otel_context.attach(trace.set_span_in_context(span))
        finally:
            otel_context.detach(token)
            finish()

    def _invoke(self, behavior: Behavior, request: Any, context: grpc.ServicerContext, span: trace.Span) -> Any:
        try:
            result = behavior(request, context)
            if isinstance(result, Iterator):
                return self._guard_iterator(result, context, span)
            return result
        except Exception as exc:  # noqa: BLE001 - every escape becomes a deliberate status
            self._abort_from_exception(exc, context, span)

    def _guard_iterator(self, iterator: Iterator[Any], context: grpc.ServicerContext, span: trace.Span) -> Iterator[Any]:
        try:
            yield from iterator
        except Exception as exc:  # noqa: BLE001
            self._abort_from_exception(exc, context, span)

    def _abort_from_exception(self, exc: Exception, context: grpc.ServicerContext, span: trace.Span) -> None:
        if _code_already_set(context):
            raise exc  # the handler called context.abort(); its status stands
        if isinstance(exc, ServiceError):
            context.abort(exc.code, exc.details())
        trace_id = f"{span.get_span_context().trace_id:032x}"
        log.exception("unhandled error, returning INTERNAL (trace_id=%s)", trace_id)
        span.record_exception(exc)
        context.abort(
            grpc.StatusCode.INTERNAL,
            f"internal error: {type(exc).__name__}: {exc} (trace_id={trace_id}; see service logs)",
        )

    @staticmethod
    def _count(iterator: Iterator[Any], counter: Any, labels: tuple[str, str, str]) -> Iterator[Any]:
        for message in iterator:
            counter.labels(*labels).inc()
            yield message


def _code_already_set(context: grpc.ServicerContext) -> bool:
    code = context.code()
    return code is not None and code is not grpc.StatusCode.OK


def _final_code(context: grpc.ServicerContext) -> grpc.StatusCode:
    code = context.code()
    if code is None:
        return grpc.StatusCode.OK
    if isinstance(code, grpc.StatusCode):
        return code
    return next((c for c in grpc.StatusCode if c.value[0] == code), grpc.StatusCode.UNKNOWN)


class _ClientCallDetails(grpc.ClientCallDetails):
    def __init__(self, method: str, timeout: float | None, metadata: Any, credentials: Any,
                 wait_for_ready: bool | None, compression: Any) -> None:
        self.method = method
        self.timeout = timeout
        self.metadata = metadata
        self.credentials = credentials
        self.wait_for_ready = wait_for_ready
        self.compression = compression


class ClientInterceptor(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds the bearer token, W3C trace context and a default deadline to every call.

    Streaming responses get no default deadline: a Generate stream may legitimately run
    for as long as the rollout does; callers pass ``timeout=`` when they want one.
    """

    def __init__(self, tracer: Tracer, token: str | None, default_timeout_s: float | None) -> None:
        self._tracer = tracer
        self._token = token
        self._default_timeout_s = default_timeout_s

    def _details(self, details: grpc.ClientCallDetails, streaming_response: bool) -> _ClientCallDetails:
        metadata = list(details.metadata or [])
        if self._token and not any(k == "authorization" for k, _ in metadata):
            metadata.append(("authorization", f"Bearer {self._token}"))
        carrier: dict[str, str] = {}
        PROPAGATOR.inject(carrier)
        metadata.extend(carrier.items())
        timeout = details.timeout
        if timeout is None and not streaming_response:
            timeout = self._default_timeout_s
        return _ClientCallDetails(
            details.method, timeout, metadata, details.credentials,
            getattr(details, "wait_for_ready", None), getattr(details, "compression", None),
        )

    def _call(self, continuation: Callable, details: grpc.ClientCallDetails, request: Any,
              streaming_response: bool) -> Any:
        method = details.method.decode() if isinstance(details.method, bytes) else details.method
        span = self._tracer.start_span(method.lstrip("/"), kind=SpanKind.CLIENT,
                                       attributes={"rpc.system": "grpc"})
        with trace.use_span(span, end_on_exit=False):  # current while the traceparent is injected
            call = continuation(self._details(details, streaming_response), request)

        def finish(done: grpc.Call) -> None:
            # Ends with the call, without blocking the caller (``.future()`` stays asynchronous).
            code = done.code()
            span.set_attribute("rpc.grpc.status_code", code.value[0])
            if code is not grpc.StatusCode.OK:
                span.set_status(Status(StatusCode.ERROR, code.name))
            span.end()

        call.add_done_callback(finish)
        return call

    def intercept_unary_unary(self, continuation, client_call_details, request):  # type: ignore[override]
        return self._call(continuation, client_call_details, request, streaming_response=False)

    def intercept_unary_stream(self, continuation, client_call_details, request):  # type: ignore[override]
        return self._call(continuation, client_call_details, request, streaming_response=True)

    def intercept_stream_unary(self, continuation, client_call_details, request_iterator):  # type: ignore[override]
        return self._call(continuation, client_call_details, request_iterator, streaming_response=False)

    def intercept_stream_stream(self, continuation, client_call_details, request_iterator):  # type: ignore[override]
        return self._call(continuation, client_call_details, request_iterator, streaming_response=True)
