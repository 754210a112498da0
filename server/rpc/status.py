"""The one table from domain errors to gRPC status codes, and caller-safe messages."""

from __future__ import annotations

import grpc

from bertdot.server import errors

STATUS_OF: dict[type[errors.ServingError], grpc.StatusCode] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.Overloaded: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.TooLarge: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.NotReady: grpc.StatusCode.UNAVAILABLE,
    errors.DeadlineExpired: grpc.StatusCode.DEADLINE_EXCEEDED,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.DataLoss: grpc.StatusCode.DATA_LOSS,
}

INTERNAL_MESSAGE = "internal error; the server logged the details"
# A status message travels percent-encoded in a trailer (a non-ASCII byte takes 3), and gRPC
# clients refuse trailers beyond about 8 KiB: between a soft and a hard limit they refuse at
# random, so a long message (it may quote the caller's input) turned a status into a random
# RESOURCE_EXHAUSTED (measured: 16 of 40 NOT_FOUNDs quoting three 300-emoji ids).
MAX_MESSAGE_BYTES = 1024


class Forwarded(errors.ServingError):
    """Another worker's answer to a request this one passed on (a write sent to the worker
    that holds the index's writer lock): its status and message, unchanged."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def bounded(message: str, limit: int = MAX_MESSAGE_BYTES) -> str:
    """`message`, cut to at most `limit` UTF-8 bytes (ending in "…" where it was cut)."""
    encoded = message.encode()
    if len(encoded) <= limit:
        return message
    return encoded[: limit - 3].decode("utf-8", errors="ignore") + "…"


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and caller-safe message for any exception raised while serving."""
    if isinstance(exc, Forwarded):
        return exc.code, bounded(str(exc))
    for kind in type(exc).__mro__:
        code = STATUS_OF.get(kind)
        if code is not None:
            return code, bounded(str(exc))
    return grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE
