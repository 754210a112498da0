"""What the client returns, and the one place that converts to and from protos.

Users get frozen dataclasses and numpy arrays, never generated messages: the
wire can then grow fields without breaking code that pattern-matches results.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

import numpy as np

from bertdot.client.errors import BertdotError, from_status
from bertdot.v1 import bertdot_pb2 as pb


@dataclass(frozen=True)
class Timings:
    """Server-side microseconds of one request; ``batch_size`` requests shared its encoder call."""

    queue_us: int = 0
    tokenize_us: int = 0
    encode_us: int = 0
    search_us: int = 0
    total_us: int = 0
    batch_size: int = 0


@dataclass(frozen=True)
class Hit:
    id: str
    score: float
    title: str = ""
    text: str = ""


@dataclass(frozen=True)
class SearchResult:
    """The answer to one query; ``truncated`` says the query was cut at the model's max length."""

    id: str
    hits: tuple[Hit, ...]
    token_count: int
    truncated: bool
    timings: Timings


@dataclass(frozen=True)
class Query:
    """One query of a stream, when it needs its own id or options (else pass a plain str).

    Unset options fall back to the arguments of the ``search_*`` call.
    """

    text: str
    id: str | None = None
    k: int | None = None
    ef: int | None = None
    return_text: bool | None = None


@dataclass(frozen=True, eq=False)
class EncodeResult:
    """``embeddings`` is a float32 array of shape (len(texts), dim)."""

    embeddings: np.ndarray
    token_counts: tuple[int, ...]
    truncated: tuple[bool, ...]
    dim: int
    timings: Timings


@dataclass(frozen=True)
class PassageRef:
    """A rerank candidate given by the id of a passage already in the index."""

    id: str


@dataclass(frozen=True)
class Scored:
    """One reranked candidate; ``index`` is its position in the request."""

    index: int
    score: float
    passage_id: str = ""
    text: str = ""


@dataclass(frozen=True)
class RerankResult:
    results: tuple[Scored, ...]
    token_count: int
    truncated: bool
    candidates_encoded: int
    candidates_truncated: int
    timings: Timings


@dataclass(frozen=True)
class ModelInfo:
    source: str
    revision: str
    architecture: str
    dim: int
    pooling: str
    similarity: str
    precision: str
    provider: str
    max_length: int
    artifact_fingerprint: str


@dataclass(frozen=True)
class IndexInfo:
    size: int
    m: int
    ef_construction: int
    default_ef: int
    read_only: bool
    sequence: int


@dataclass(frozen=True)
class Info:
    model: ModelInfo
    index: IndexInfo | None
    server_version: str


@dataclass(frozen=True)
class Passage:
    id: str
    text: str
    title: str = ""


@dataclass(frozen=True)
class UpsertResult:
    upserted: int
    truncated: int
    sequence: int
    timings: Timings


@dataclass(frozen=True)
class DeleteResult:
    deleted: int
    not_found: tuple[str, ...]
    sequence: int


# ------------------------------------------------------------ to protos ----


def search_request(
    query: str | Query, default_id: str, k: int, ef: int | None, return_text: bool
) -> pb.SearchRequest:
    """Build one request; a ``Query``'s own options win over the call's defaults."""
    if isinstance(query, str):
        query = Query(query)
    req = pb.SearchRequest(
        id=query.id if query.id is not None else default_id,
        query=query.text,
        k=query.k if query.k is not None else k,
        return_text=query.return_text if query.return_text is not None else return_text,
    )
    chosen_ef = query.ef if query.ef is not None else ef
    if chosen_ef is not None:
        req.ef = chosen_ef
    return req


def rerank_request(
    query: str, candidates: Iterable[str | PassageRef], top_k: int, return_text: bool
) -> pb.RerankRequest:
    protos = [
        pb.Candidate(passage_id=c.id) if isinstance(c, PassageRef) else pb.Candidate(text=c)
        for c in candidates
    ]
    return pb.RerankRequest(query=query, candidates=protos, top_k=top_k, return_text=return_text)


def upsert_request(passages: Iterable[Passage | Mapping[str, str]]) -> pb.UpsertRequest:
    """Accept ``Passage`` objects or mappings with ``id``, ``text`` and optional ``title``."""
    protos = []
    for p in passages:
        if isinstance(p, Passage):
            protos.append(pb.Passage(id=p.id, title=p.title, text=p.text))
        else:
            protos.append(pb.Passage(id=p["id"], title=p.get("title", ""), text=p["text"]))
    return pb.UpsertRequest(passages=protos)


# ---------------------------------------------------------- from protos ----


def timings_from_proto(t: pb.Timings) -> Timings:
    return Timings(t.queue_us, t.tokenize_us, t.encode_us, t.search_us, t.total_us, t.batch_size)


def search_result_from_proto(r: pb.SearchResponse) -> SearchResult:
    hits = tuple(Hit(h.id, h.score, h.title, h.text) for h in r.hits)
    return SearchResult(
        r.id, hits, r.stats.token_count, r.stats.truncated, timings_from_proto(r.timings)
    )


def stream_item_from_proto(r: pb.SearchResponse) -> SearchResult | BertdotError:
    """A stream answer, or the typed error of that one query when the server set ``error``."""
    if r.HasField("error") and r.error.code != 0:
        return from_status(r.error.code, r.error.message, query_id=r.id)
    return search_result_from_proto(r)


def encode_result_from_proto(r: pb.EncodeResponse) -> EncodeResult:
    dim = r.dim or (len(r.embeddings[0].values) if r.embeddings else 0)
    vectors = np.zeros((len(r.embeddings), dim), dtype=np.float32)
    for row, emb in enumerate(r.embeddings):
        vectors[row] = emb.values
    return EncodeResult(
        vectors,
        tuple(s.token_count for s in r.stats),
        tuple(s.truncated for s in r.stats),
        dim,
        timings_from_proto(r.timings),
    )


def rerank_result_from_proto(r: pb.RerankResponse) -> RerankResult:
    return RerankResult(
        tuple(Scored(s.index, s.score, s.passage_id, s.text) for s in r.results),
        r.query_stats.token_count,
        r.query_stats.truncated,
        r.candidates_encoded,
        r.candidates_truncated,
        timings_from_proto(r.timings),
    )


def info_from_proto(r: pb.InfoResponse) -> Info:
    m = r.model
    model = ModelInfo(
        m.source,
        m.revision,
        m.architecture,
        m.dim,
        m.pooling,
        m.similarity,
        m.precision,
        m.provider,
        m.max_length,
        m.artifact_fingerprint,
    )
    index = None
    if r.HasField("index"):
        i = r.index
        index = IndexInfo(i.size, i.m, i.ef_construction, i.default_ef, i.read_only, i.sequence)
    return Info(model, index, r.server_version)


def upsert_result_from_proto(r: pb.UpsertResponse) -> UpsertResult:
    return UpsertResult(r.upserted, r.truncated, r.sequence, timings_from_proto(r.timings))


def delete_result_from_proto(r: pb.DeleteResponse) -> DeleteResult:
    return DeleteResult(r.deleted, tuple(r.not_found), r.sequence)


# --------------------------------------------------- ordered pipelining ----


def numbered_queries(queries: Iterable[str | Query]) -> tuple[list[Query], list[str]]:
    """Give every query its position as wire id (so answers can be put back in input
    order whatever ids the caller chose), and remember the id the caller sees."""
    wire: list[Query] = []
    caller_ids: list[str] = []
    for position, q in enumerate(queries):
        q = Query(q) if isinstance(q, str) else q
        caller_ids.append(q.id if q.id is not None else str(position))
        wire.append(Query(q.text, str(position), q.k, q.ef, q.return_text))
    return wire, caller_ids


def position_of(item: SearchResult | BertdotError) -> int:
    return int(item.id if isinstance(item, SearchResult) else item.query_id or "")


def with_caller_id(
    item: SearchResult | BertdotError, caller_ids: list[str]
) -> SearchResult | BertdotError:
    caller_id = caller_ids[position_of(item)]
    if isinstance(item, SearchResult):
        return replace(item, id=caller_id)
    item.query_id = caller_id
    return item
