"""bertdot.client: a light sync and asyncio client of the bertdot retrieval service.

Needs only grpcio, protobuf and numpy: importing it never pulls in the model
stack (onnxruntime, tokenizers, hnswlib, torch).
"""

from bertdot.client.aio import AsyncClient
from bertdot.client.errors import (
    BertdotError,
    Cancelled,
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    Unimplemented,
)
from bertdot.client.sync import Client
from bertdot.client.types import (
    DeleteResult,
    EncodeResult,
    Hit,
    IndexInfo,
    Info,
    ModelInfo,
    Passage,
    PassageRef,
    Query,
    RerankResult,
    Scored,
    SearchResult,
    Timings,
    UpsertResult,
)

__all__ = [
    "AsyncClient",
    "BertdotError",
    "Cancelled",
    "Client",
    "DeadlineExceeded",
    "DeleteResult",
    "EncodeResult",
    "FailedPrecondition",
    "Hit",
    "IndexInfo",
    "Info",
    "Internal",
    "InvalidArgument",
    "ModelInfo",
    "NotFound",
    "Passage",
    "PassageRef",
    "PermissionDenied",
    "Query",
    "RerankResult",
    "ResourceExhausted",
    "Scored",
    "SearchResult",
    "Timings",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "UpsertResult",
]
