"""Errors a service raises on purpose, each mapped to one gRPC status code.

Domain code (engine.py, pool.py, ...) raises these; the server interceptor turns them into
a gRPC status with the message intact. Anything else that escapes a handler becomes
INTERNAL with the exception type and the trace id, never a bare UNKNOWN.
"""

from __future__ import annotations

import grpc


class ServiceError(Exception):
    """Base class: a failure the caller can act on, with the gRPC code that says how."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def details(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


class InvalidArgument(ServiceError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(ServiceError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(ServiceError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(ServiceError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhausted(ServiceError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Aborted(ServiceError):
    code = grpc.StatusCode.ABORTED


class Unavailable(ServiceError):
    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(ServiceError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED
