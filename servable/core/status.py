"""Error codes and the one exception type that carries them through the server.

Codes are TensorFlow's ``tensorflow.error.Code`` numbers, which gRPC status codes share
one to one; the REST front door maps them to HTTP with ``http_status``. Every layer
raises ``ServingError`` for anything a client or operator should see, so the front
doors translate errors in exactly one place.
"""

from __future__ import annotations

import enum


class Code(enum.IntEnum):
    """``tensorflow.error.Code`` (equal to ``grpc.StatusCode`` values)."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


_HTTP_STATUS = {
    Code.OK: 200,
    Code.CANCELLED: 499,
    Code.UNKNOWN: 500,
    Code.INVALID_ARGUMENT: 400,
    Code.DEADLINE_EXCEEDED: 504,
    Code.NOT_FOUND: 404,
    Code.ALREADY_EXISTS: 409,
    Code.PERMISSION_DENIED: 403,
    Code.RESOURCE_EXHAUSTED: 429,
    Code.FAILED_PRECONDITION: 400,
    Code.ABORTED: 409,
    Code.OUT_OF_RANGE: 400,
    Code.UNIMPLEMENTED: 501,
    Code.INTERNAL: 500,
    Code.UNAVAILABLE: 503,
    Code.DATA_LOSS: 500,
    Code.UNAUTHENTICATED: 401,
}


def http_status(code: Code) -> int:
    """HTTP status TF Serving's REST API answers for ``code`` (http_server.cc)."""
    return _HTTP_STATUS.get(code, 500)


class ServingError(Exception):
    """An error with a TF Serving status code and a message meant for the client."""

    def __init__(self, code: Code, message: str) -> None:
        super().__init__(message)
        self.code = Code(code)
        self.message = message

    def __str__(self) -> str:
        return self.message

    def status_text(self) -> str:
        """TF Serving's rendering of a status, ``CODE: message`` (start-up failures, nested REST errors)."""
        return f"{self.code.name}: {self.message}"

    def __repr__(self) -> str:
        return f"ServingError({self.code.name}, {self.message!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ServingError) and (self.code, self.message) == (other.code, other.message)

    def __hash__(self) -> int:
        return hash((self.code, self.message))


def invalid_argument(message: str) -> ServingError:
    return ServingError(Code.INVALID_ARGUMENT, message)


def not_found(message: str) -> ServingError:
    return ServingError(Code.NOT_FOUND, message)


def failed_precondition(message: str) -> ServingError:
    return ServingError(Code.FAILED_PRECONDITION, message)


def unavailable(message: str) -> ServingError:
    return ServingError(Code.UNAVAILABLE, message)


def unimplemented(message: str) -> ServingError:
    return ServingError(Code.UNIMPLEMENTED, message)


def internal(message: str) -> ServingError:
    return ServingError(Code.INTERNAL, message)


def resource_exhausted(message: str) -> ServingError:
    return ServingError(Code.RESOURCE_EXHAUSTED, message)


def deadline_exceeded(message: str) -> ServingError:
    return ServingError(Code.DEADLINE_EXCEEDED, message)
