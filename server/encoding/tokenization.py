"""Tokenization with the Rust `tokenizers` library from an artifact's `tokenizer.json`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer


@dataclass(frozen=True)
class TokenizedText:
    """One text's token ids after truncation, and whether truncation cut it."""

    ids: np.ndarray  # int64, no padding
    truncated: bool

    @property
    def length(self) -> int:
        return int(self.ids.shape[0])


@dataclass(frozen=True)
class Batch:
    """Model inputs for a batch, padded to its longest member (not to max length)."""

    input_ids: np.ndarray
    attention_mask: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.input_ids.shape[0]), int(self.input_ids.shape[1]))

    def feeds(self, input_names: Sequence[str]) -> dict[str, np.ndarray]:
        """The model's inputs by name; a BERT's `token_type_ids` are all zeros (one segment)."""
        feeds = {"input_ids": self.input_ids, "attention_mask": self.attention_mask}
        if "token_type_ids" in input_names:
            feeds["token_type_ids"] = np.zeros_like(self.input_ids)
        return feeds


class TextTokenizer:
    """Wraps `tokenizers.Tokenizer`: truncation at max length, reported per text; no padding.

    Shipped tokenizer files may pad every input to a fixed length (MiniLM's pads to 128);
    padding is switched off here and done per batch instead, so short queries stay short.
    """

    def __init__(self, path: str | Path, max_length: int) -> None:
        self._tokenizer = Tokenizer.from_file(str(path))
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(max_length)
        self.max_length = max_length
        pad_id = self._tokenizer.token_to_id("[PAD]")
        self.pad_id = 0 if pad_id is None else pad_id

    def tokenize(self, texts: Sequence[str]) -> list[TokenizedText]:
        if len(texts) == 1:
            encodings = [self._tokenizer.encode(texts[0])]
        else:
            encodings = self._tokenizer.encode_batch(list(texts))
        return [
            TokenizedText(np.asarray(e.ids, dtype=np.int64), truncated=bool(e.overflowing))
            for e in encodings
        ]

    def pad(self, items: Sequence[TokenizedText]) -> Batch:
        longest = max(item.length for item in items)
        input_ids = np.full((len(items), longest), self.pad_id, dtype=np.int64)
        attention_mask = np.zeros((len(items), longest), dtype=np.int64)
        for row, item in enumerate(items):
            input_ids[row, : item.length] = item.ids
            attention_mask[row, : item.length] = 1
        return Batch(input_ids, attention_mask)


def split_by_tokens(
    items: list[TokenizedText], max_tokens: int, max_rows: int | None = None
) -> list[list[int]]:
    """Row groups, in length order, whose padded size (rows × longest) fits `max_tokens`
    (and at most `max_rows` rows). A single text longer than the budget still gets a group
    of its own."""
    order = sorted(range(len(items)), key=lambda i: items[i].length)
    groups: list[list[int]] = []
    current: list[int] = []
    for index in order:
        longest = items[index].length  # ascending order: the newest member is the longest
        full = max_rows is not None and len(current) >= max_rows
        if current and (full or (len(current) + 1) * longest > max_tokens):
            groups.append(current)
            current = []
        current.append(index)
    if current:
        groups.append(current)
    return groups
