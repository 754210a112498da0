"""Proto ↔ domain conversion of the write RPCs (Upsert, Delete) and their Info fields."""

from __future__ import annotations

from bertdot.server.corpus import Passage
from bertdot.server.writes import DeleteAnswer, UpsertAnswer
from bertdot.v1 import bertdot_pb2 as pb


def passages(request: pb.UpsertRequest) -> list[Passage]:
    """An empty title is no title (the encoder then reads the text alone)."""
    return [Passage(p.id, p.title or None, p.text) for p in request.passages]


def upsert_response(answer: UpsertAnswer) -> pb.UpsertResponse:
    return pb.UpsertResponse(
        upserted=answer.upserted,
        truncated=answer.truncated,
        sequence=answer.sequence,
        timings=pb.Timings(
            encode_us=answer.encode_us,
            search_us=answer.apply_us,  # index insertion, as the proto describes
            total_us=answer.total_us,
            batch_size=answer.upserted,
        ),
    )


def delete_response(answer: DeleteAnswer) -> pb.DeleteResponse:
    return pb.DeleteResponse(
        deleted=answer.deleted, not_found=answer.not_found, sequence=answer.sequence
    )
