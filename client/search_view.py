"""How `bertdot search` shows one result: a ranked table fitted to the terminal, or JSON."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict

from bertdot.client.types import SearchResult

MAX_ID_WIDTH = 24


def shorten(text: str, width: int) -> str:
    """One line of at most ``width`` characters, ending in an ellipsis when cut."""
    flat = " ".join(text.split())
    if width <= 0:
        return ""
    return flat if len(flat) <= width else flat[: max(width - 1, 0)].rstrip() + "…"


def render(result: SearchResult, *, show_text: bool = True, width: int | None = None) -> str:
    """Rank, score, id, then title and text shortened to the terminal width; then a footer."""
    width = width or shutil.get_terminal_size((100, 24)).columns
    lines = []
    if not result.hits:
        lines.append("no hits")
    else:
        rank_w = len(str(len(result.hits)))
        score_w = max(len(f"{h.score:.3f}") for h in result.hits)
        id_w = min(max(len(h.id) for h in result.hits), MAX_ID_WIDTH)
        room = width - (rank_w + score_w + id_w + 6)
        for rank, hit in enumerate(result.hits, start=1):
            body = hit.title
            if show_text and hit.text:
                body = f"{hit.title} — {hit.text}" if hit.title else hit.text
            lines.append(
                f"{rank:>{rank_w}}  {hit.score:>{score_w}.3f}  {shorten(hit.id, id_w):<{id_w}}"
                f"  {shorten(body, room)}".rstrip()
            )
    lines.append("")
    lines.append(footer(result))
    return "\n".join(lines)


def footer(result: SearchResult) -> str:
    """Token count, truncation and where the server's time went."""
    t = result.timings
    truncated = " (truncated to the model's max length)" if result.truncated else ""
    timing = (
        f"server {t.total_us / 1000:.2f} ms: queue {t.queue_us / 1000:.2f}, "
        f"tokenize {t.tokenize_us / 1000:.2f}, encode {t.encode_us / 1000:.2f}, "
        f"search {t.search_us / 1000:.2f}"
    )
    batch = f", batch of {t.batch_size}" if t.batch_size else ""
    return f"query: {result.token_count} tokens{truncated} · {timing}{batch}"


def to_json(result: SearchResult) -> str:
    data = asdict(result)
    for rank, hit in enumerate(data["hits"], start=1):
        hit["rank"] = rank
    return json.dumps(data, indent=2, ensure_ascii=False)
