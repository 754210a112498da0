"""Shared fixtures: tiny checkpoints and artifacts exported once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.models import save_tiny_bert, save_tiny_distilbert


@pytest.fixture(scope="session")
def tiny_distilbert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_distilbert(tmp_path_factory.mktemp("ckpt") / "tiny-distilbert")


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_bert(tmp_path_factory.mktemp("ckpt") / "tiny-bert")


@pytest.fixture(scope="session")
def tiny_artifact(tiny_distilbert: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """fp32 + fp16 + int8 artifact of the tiny DistilBERT (CLS pooling, dot product)."""
    from bertdot.export.pipeline import ExportOptions, export_artifact

    out = tmp_path_factory.mktemp("artifacts") / "tiny"
    export_artifact(
        ExportOptions(model=str(tiny_distilbert), out=out, precisions=("fp32", "fp16", "int8")),
        say=lambda _: None,
    )
    return out


@pytest.fixture(scope="session")
def tiny_bert_artifact(tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """fp32 artifact of the tiny BERT (it takes token_type_ids; mean pooling)."""
    from bertdot.export.pipeline import ExportOptions, export_artifact

    out = tmp_path_factory.mktemp("artifacts") / "tiny-bert"
    export_artifact(
        ExportOptions(model=str(tiny_bert), out=out, precisions=("fp32",), pooling="mean"),
        say=lambda _: None,
    )
    return out
