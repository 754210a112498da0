"""Domain errors of the serving core: what went wrong, in words a caller can act on.

The core raises these without knowing about gRPC; the transport maps them to status codes
in one table (`bertdot.server.rpc.status`). Anything not listed there becomes INTERNAL with
a generic message, so no exception text reaches a client.
"""

from __future__ import annotations


class ServingError(Exception):
    """Base of errors whose message is safe to show to the caller."""


class InvalidArgument(ServingError):
    """A request field is empty, too large or out of range; the message names the field."""


class NotFound(ServingError):
    """A passage id given by the caller is not in the index."""


class Overloaded(ServingError):
    """The bounded queue is full: refused at once rather than queued without limit."""


class TooLarge(ServingError):
    """A request message is larger than the server accepts (`--max-message-bytes`)."""


class NotReady(ServingError):
    """The model is not warmed up or the server is draining."""


class DeadlineExpired(ServingError):
    """The caller's deadline passed before the work started; it was dropped unrun."""


class FailedPrecondition(ServingError):
    """The request cannot be served in the server's state (read-only, no index loaded)."""


class DataLoss(ServingError):
    """Stored data the answer needs is damaged (the passage store): unrecoverable here."""


class Unauthenticated(ServingError):
    """The call lacks the bearer token the server requires."""


def quoted(value: str, limit: int = 64) -> str:
    """A caller's value for a message: its repr, cut to `limit` characters."""
    return repr(value if len(value) <= limit else value[:limit] + "…")
