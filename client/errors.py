"""Typed exceptions for gRPC failures.

Callers catch ``bertdot.client.InvalidArgument`` rather than inspecting
``grpc.RpcError.code()``; every exception still keeps the status code and the
server's message, so nothing is lost by the translation. The table below is the
only place that maps codes to classes.
"""

from __future__ import annotations

import grpc


class BertdotError(Exception):
    """Base of every error the client raises for a failed call.

    ``code`` is the gRPC status code, ``details`` the server's message.
    ``query_id`` is set when the error belongs to one item of a stream
    (the other items of that stream were still answered).
    """

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(
        self,
        details: str = "",
        *,
        code: grpc.StatusCode | None = None,
        query_id: str | None = None,
    ) -> None:
        super().__init__(details)
        if code is not None:
            self.code = code
        self.details = details
        self.query_id = query_id

    def __str__(self) -> str:
        where = f" (query {self.query_id!r})" if self.query_id is not None else ""
        return f"{self.code.name}: {self.details}{where}"


class InvalidArgument(BertdotError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(BertdotError):
    code = grpc.StatusCode.NOT_FOUND


class ResourceExhausted(BertdotError):
    """The server is overloaded and rejected the call early; back off and retry."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(BertdotError):
    """No server could be reached or it is not ready (after the allowed retries)."""

    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(BertdotError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Unauthenticated(BertdotError):
    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(BertdotError):
    code = grpc.StatusCode.PERMISSION_DENIED


class FailedPrecondition(BertdotError):
    """E.g. a write to a read-only server."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class Cancelled(BertdotError):
    code = grpc.StatusCode.CANCELLED


class Unimplemented(BertdotError):
    code = grpc.StatusCode.UNIMPLEMENTED


class Internal(BertdotError):
    code = grpc.StatusCode.INTERNAL


_BY_CODE: dict[grpc.StatusCode, type[BertdotError]] = {
    cls.code: cls
    for cls in (
        InvalidArgument,
        NotFound,
        ResourceExhausted,
        Unavailable,
        DeadlineExceeded,
        Unauthenticated,
        PermissionDenied,
        FailedPrecondition,
        Cancelled,
        Unimplemented,
        Internal,
    )
}
_BY_NUMBER: dict[int, grpc.StatusCode] = {code.value[0]: code for code in grpc.StatusCode}


def error_for(code: grpc.StatusCode, details: str, *, query_id: str | None = None) -> BertdotError:
    """The typed exception for ``code``; unknown codes get the base class with that code."""
    cls = _BY_CODE.get(code, BertdotError)
    return cls(details, code=code, query_id=query_id)


def from_rpc_error(error: grpc.RpcError) -> BertdotError:
    """Translate a failed call (sync or asyncio) into its typed exception."""
    code = error.code() if hasattr(error, "code") else None
    details = error.details() if hasattr(error, "details") else None
    return error_for(code or grpc.StatusCode.UNKNOWN, details or str(error))


def from_status(number: int, message: str, *, query_id: str | None = None) -> BertdotError:
    """Translate the numeric ``Error`` of one stream item (google.rpc.Code numbering)."""
    return error_for(_BY_NUMBER.get(number, grpc.StatusCode.UNKNOWN), message, query_id=query_id)
