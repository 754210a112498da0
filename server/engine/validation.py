"""Request limits and the checks that turn bad input into InvalidArgument naming the field."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bertdot.server.errors import InvalidArgument

DEFAULT_K = 10
# Ids are keys, not documents: long enough for URLs and composite keys, short enough that a
# page of not_found ids stays small.
MAX_ID_CHARS = 512


@dataclass(frozen=True)
class Limits:
    max_k: int = 1000
    max_ef: int = 4096
    # Far beyond any real query (the model reads at most 512 tokens) yet small enough
    # that tokenizing it costs well under a millisecond.
    max_query_chars: int = 8192
    max_text_chars: int = 100_000
    max_texts: int = 256
    max_candidates: int = 2000


def check_text(field: str, text: str, max_chars: int) -> str:
    if not text or not text.strip():
        raise InvalidArgument(f"{field}: must not be empty")
    if len(text) > max_chars:
        raise InvalidArgument(f"{field}: {len(text)} characters exceeds the limit of {max_chars}")
    return text


def check_k(k: int, limits: Limits, field: str = "k") -> int:
    k = k or DEFAULT_K
    if not 1 <= k <= limits.max_k:
        raise InvalidArgument(f"{field}: {k} is out of range 1..{limits.max_k}")
    return k


def check_ef(ef: int | None, k: int, limits: Limits) -> int | None:
    """None keeps the index default; a given ef is raised to at least k (HNSW needs ef ≥ k)."""
    if ef is None:
        return None
    if not 1 <= ef <= limits.max_ef:
        raise InvalidArgument(f"ef: {ef} is out of range 1..{limits.max_ef}")
    return max(ef, k)


def check_count(field: str, items: Sequence[object], limit: int) -> None:
    if not items:
        raise InvalidArgument(f"{field}: must not be empty")
    if len(items) > limit:
        raise InvalidArgument(f"{field}: {len(items)} items exceeds the limit of {limit}")


def check_id(field: str, pid: str) -> None:
    if not pid or not pid.strip():
        raise InvalidArgument(f"{field}: must not be empty")
    if len(pid) > MAX_ID_CHARS:
        raise InvalidArgument(f"{field}: {len(pid)} characters exceeds the limit of {MAX_ID_CHARS}")
