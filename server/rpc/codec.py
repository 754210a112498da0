"""Proto ↔ domain conversion, in one place: the servicer stays a thin adapter."""

from __future__ import annotations

from bertdot.server.engine import answers
from bertdot.server.index.corpus import Passage
from bertdot.v1 import bertdot_pb2 as pb


def timings(t: answers.Timings) -> pb.Timings:
    return pb.Timings(
        queue_us=t.queue_us,
        tokenize_us=t.tokenize_us,
        encode_us=t.encode_us,
        search_us=t.search_us,
        total_us=t.total_us,
        batch_size=t.batch_size,
    )


def search_response(answer: answers.SearchAnswer, request_id: str) -> pb.SearchResponse:
    return pb.SearchResponse(
        id=request_id,
        hits=[
            pb.Hit(id=h.id, score=h.score, title=h.title or "", text=h.text or "")
            for h in answer.hits
        ],
        stats=pb.QueryStats(token_count=answer.token_count, truncated=answer.truncated),
        timings=timings(answer.timings),
    )


def ef_of(request: pb.SearchRequest) -> int | None:
    return request.ef if request.HasField("ef") else None


def encode_response(answer: answers.EncodeAnswer, request_id: str) -> pb.EncodeResponse:
    return pb.EncodeResponse(
        id=request_id,
        embeddings=[pb.Embedding(values=row) for row in answer.vectors.tolist()],
        stats=[
            pb.QueryStats(token_count=n, truncated=t)
            for n, t in zip(answer.token_counts, answer.truncated, strict=True)
        ],
        dim=int(answer.vectors.shape[1]),
        timings=timings(answer.timings),
    )


def candidates(request: pb.RerankRequest) -> list[answers.Candidate]:
    out = []
    for c in request.candidates:
        if c.WhichOneof("source") == "passage_id":
            out.append(answers.Candidate(passage_id=c.passage_id))
        else:  # an unset candidate is an empty text, refused by validation
            out.append(answers.Candidate(text=c.text))
    return out


def rerank_response(answer: answers.RerankAnswer) -> pb.RerankResponse:
    return pb.RerankResponse(
        results=[
            pb.Scored(index=r.index, passage_id=r.passage_id, score=r.score, text=r.text)
            for r in answer.results
        ],
        query_stats=pb.QueryStats(token_count=answer.token_count, truncated=answer.truncated),
        candidates_encoded=answer.candidates_encoded,
        candidates_truncated=answer.candidates_truncated,
        timings=timings(answer.timings),
    )


def error(code: int, message: str) -> pb.Error:
    return pb.Error(code=code, message=message)


def passages(request: pb.UpsertRequest) -> list[Passage]:
    """An empty title is no title (the encoder then reads the text alone)."""
    return [Passage(p.id, p.title or None, p.text) for p in request.passages]


def upsert_response(answer: answers.UpsertAnswer) -> pb.UpsertResponse:
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


def delete_response(answer: answers.DeleteAnswer) -> pb.DeleteResponse:
    return pb.DeleteResponse(
        deleted=answer.deleted, not_found=answer.not_found, sequence=answer.sequence
    )
