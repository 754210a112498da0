"""Domain errors of the serving core and the one table that maps them to gRPC status codes.

The core raises these without knowing about gRPC; the transport maps them in one place
(`status_for`). Anything not listed becomes INTERNAL with a generic message, so no
exception text reaches a client.
"""

from __future__ import annotations

import grpc


class ServingError(Exception):
    """Base of errors whose message is safe to show to the caller."""

    code = grpc.StatusCode.INTERNAL


class InvalidArgument(ServingError):
    """A request field is empty, too large or out of range; the message names the field."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(ServingError):
    """A passage id given by the caller is not in the index."""

    code = grpc.StatusCode.NOT_FOUND


class Overloaded(ServingError):
    """The bounded queue is full: refused at once rather than queued without limit."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class NotReady(ServingError):
    """The model is not warmed up or the server is draining."""

    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExpired(ServingError):
    """The caller's deadline passed before the work started; it was dropped unrun."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class FailedPrecondition(ServingError):
    """The request cannot be served in the server's state (read-only, no index loaded)."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class Unauthenticated(ServingError):
    code = grpc.StatusCode.UNAUTHENTICATED


INTERNAL_MESSAGE = "internal error; the server logged the details"
# A status message travels percent-encoded in a trailer (a non-ASCII byte takes 3), and gRPC
# clients refuse trailers beyond about 8 KiB: between a soft and a hard limit they refuse at
# random, so a long message (it may quote the caller's input) turned a status into a random
# RESOURCE_EXHAUSTED (measured: 16 of 40 NOT_FOUNDs quoting three 300-emoji ids).
MAX_MESSAGE_BYTES = 1024


def bounded(message: str, limit: int = MAX_MESSAGE_BYTES) -> str:
    """`message`, cut to at most `limit` UTF-8 bytes (ending in "…" where it was cut)."""
    encoded = message.encode()
    if len(encoded) <= limit:
        return message
    return encoded[: limit - 3].decode("utf-8", errors="ignore") + "…"


def quoted(value: str, limit: int = 64) -> str:
    """A caller's value for a message: its repr, cut to `limit` characters."""
    return repr(value if len(value) <= limit else value[:limit] + "…")


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and caller-safe message for any exception raised while serving."""
    if isinstance(exc, ServingError):
        return exc.code, bounded(str(exc))
    return grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE


class Forwarded(ServingError):
    """Another worker's answer to a request this one passed on (a write sent to the worker
    that holds the index's writer lock): its status and message, unchanged."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
