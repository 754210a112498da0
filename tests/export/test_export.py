"""Export: tiny real checkpoints → artifact → ONNX Runtime vectors equal PyTorch's."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bertdot.cli.main import main
from bertdot.export.errors import ExportError, ParityError
from bertdot.export.pipeline import ExportOptions, export_artifact, parse_precisions
from bertdot.server.encoding.artifact import load_manifest
from bertdot.server.encoding.encoder import Encoder

QUIET = {"say": lambda _: None}


def torch_pooled(model_dir: Path, texts: list[str], pooling: str, max_length: int) -> np.ndarray:
    """The reference, computed here independently of the export code: HF tokenizer + model."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModel.from_pretrained(str(model_dir)).eval()
    rows = []
    with torch.inference_mode():
        for text in texts:
            inputs = tokenizer([text], truncation=True, max_length=max_length, return_tensors="pt")
            hidden = model(**inputs).last_hidden_state[0]
            if pooling == "cls":
                rows.append(hidden[0].numpy())
            else:
                rows.append(hidden.mean(dim=0).numpy())
    return np.stack(rows)


def words(n_tokens: int) -> str:
    """A text of exactly `n_tokens` tokens including [CLS] and [SEP]."""
    vocabulary = ["retrieval", "dense", "query", "passage", "vector", "index", "search"]
    return " ".join(vocabulary[i % len(vocabulary)] for i in range(n_tokens - 2))


@pytest.mark.parametrize("batch_size", [1, 7])
def test_fp32_and_fp16_vectors_match_pytorch(
    tiny_artifact: Path, tiny_distilbert: Path, batch_size: int
) -> None:
    texts = [words(3), words(40), words(3), words(17), words(40), words(5), words(3)]
    reference = torch_pooled(tiny_distilbert, texts, "cls", 512)
    for precision, atol in (("fp32", 1e-4), ("fp16", 2e-2)):
        encoder = Encoder(tiny_artifact, device="cpu", precision=precision)
        encoded = encoder.encode(texts, batch_size=batch_size)
        assert encoded.vectors.shape == (7, 32)
        np.testing.assert_allclose(encoded.vectors, reference, atol=atol)
        assert encoded.token_counts.tolist() == [3, 40, 3, 17, 40, 5, 3]
        assert not encoded.truncated.any()


def test_manifest_records_contract_and_parity(tiny_artifact: Path) -> None:
    data = json.loads((tiny_artifact / "manifest.json").read_text())
    for key in (
        "schema_version",
        "source",
        "architecture",
        "pooling",
        "similarity",
        "dim",
        "max_length",
        "opset",
        "files",
        "parity",
    ):
        assert key in data, key
    manifest = load_manifest(tiny_artifact)
    assert (manifest.architecture, manifest.pooling, manifest.similarity) == (
        "distilbert",
        "cls",
        "dot",
    )
    assert manifest.dim == 32 and manifest.max_length == 512
    assert set(manifest.files) == {"fp32", "fp16", "int8"}
    assert manifest.parity["fp32"].min_cosine >= 0.99999
    assert manifest.parity["fp16"].min_cosine >= 0.999
    assert manifest.parity["int8"].texts == 8
    assert manifest.source["revision"]
    # tokenizer.json was built from vocab.txt alone, lower-casing as the uncased model needs.
    assert (tiny_artifact / "tokenizer.json").is_file()
    encoder = Encoder(tiny_artifact, device="cpu")
    upper, lower = encoder.tokenize(["Dense RETRIEVAL", "dense retrieval"])
    assert upper.ids.tolist() == lower.ids.tolist()


def test_mean_pooling_and_bert_with_token_type_ids(tiny_bert: Path, tmp_path: Path) -> None:
    out = tmp_path / "bert-mean"
    export_artifact(
        ExportOptions(model=str(tiny_bert), out=out, precisions=("fp32",), pooling="mean"),
        **QUIET,
    )
    manifest = load_manifest(out)
    assert manifest.pooling == "mean" and "token_type_ids" in manifest.inputs
    texts = [words(3), words(40)]
    encoded = Encoder(out, device="cpu").encode(texts, batch_size=2)
    np.testing.assert_allclose(
        encoded.vectors, torch_pooled(tiny_bert, texts, "mean", 512), atol=1e-4
    )
    cls = torch_pooled(tiny_bert, texts, "cls", 512)
    assert not np.allclose(encoded.vectors, cls, atol=1e-3)


def test_distilbert_saved_with_a_bert_tokenizer_exports_and_serves_as_a_reference(
    tiny_distilbert: Path, tmp_path: Path
) -> None:
    """A common way DistilBERT checkpoints are saved: tokenizer_config.json names
    BertTokenizer, whose outputs include token_type_ids, which DistilBERT's forward refuses.
    Export, its parity check and eval's reference must feed the model only what it takes."""
    import shutil

    from transformers import BertTokenizer

    from bertdot.export.reference import ModelSpec, ReferenceEncoder
    from tests.support.models import VOCAB

    checkpoint = tmp_path / "distilbert-bert-tokenizer"
    shutil.copytree(tiny_distilbert, checkpoint)
    BertTokenizer(str(VOCAB), do_lower_case=True).save_pretrained(str(checkpoint))
    config = json.loads((checkpoint / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "BertTokenizer"
    out = tmp_path / "art"
    manifest = export_artifact(
        ExportOptions(model=str(checkpoint), out=out, precisions=("fp32",)), **QUIET
    )
    assert manifest.parity["fp32"].min_cosine >= 0.99999
    assert "token_type_ids" not in manifest.inputs
    spec = ModelSpec(str(checkpoint), "cls", "dot", 512)
    reference = ReferenceEncoder.load(spec, device="cpu").encode([words(3), words(30)])
    served = Encoder(out, device="cpu").encode([words(3), words(30)]).vectors
    np.testing.assert_allclose(served, reference, atol=1e-4)


def test_truncation_is_reported(tiny_distilbert: Path, tmp_path: Path) -> None:
    out = tmp_path / "short"
    export_artifact(
        ExportOptions(model=str(tiny_distilbert), out=out, precisions=("fp32",), max_length=16),
        **QUIET,
    )
    encoder = Encoder(out, device="cpu")
    encoded = encoder.encode([words(40), words(16), words(5)])
    assert encoded.token_counts.tolist() == [16, 16, 5]
    assert encoded.truncated.tolist() == [True, False, False]
    # The truncated vector is the vector of the first 16 tokens, as PyTorch computes it.
    reference = torch_pooled(tiny_distilbert, [words(40)], "cls", 16)
    np.testing.assert_allclose(encoded.vectors[:1], reference, atol=1e-4)


def test_parity_failure_names_precision_and_figure(tiny_distilbert: Path, tmp_path: Path) -> None:
    out = tmp_path / "refused"
    with pytest.raises(ParityError) as caught:
        export_artifact(
            ExportOptions(
                model=str(tiny_distilbert),
                out=out,
                precisions=("fp32", "int8"),
                min_cosine=1.5,  # unreachable: every precision must be refused
            ),
            **QUIET,
        )
    assert caught.value.precision == "fp32"
    assert "fp32 parity check failed: min cosine" in str(caught.value)
    assert not out.exists()
    assert not list(tmp_path.glob(".refused.partial-*"))


def test_parse_precisions() -> None:
    assert parse_precisions("fp16") == ("fp32", "fp16")
    assert parse_precisions("int8,fp32") == ("fp32", "int8")
    with pytest.raises(ExportError, match="unknown precision bf16"):
        parse_precisions("fp32,bf16")


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(args)
    return code, capsys.readouterr().err


def test_cli_missing_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run_cli(["export", str(tmp_path / "nope"), "--out", str(tmp_path / "a")], capsys)
    assert code == 2
    assert "does not exist" in err and len(err.strip().splitlines()) == 1


def test_cli_non_encoder_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from transformers import GPT2Config, GPT2Model

    GPT2Model(GPT2Config(n_embd=16, n_layer=1, n_head=2)).save_pretrained(tmp_path / "gpt2")
    code, err = run_cli(["export", str(tmp_path / "gpt2"), "--out", str(tmp_path / "a")], capsys)
    assert code == 2
    assert "'gpt2' is not a supported encoder" in err
    assert not (tmp_path / "a").exists()


def test_cli_unwritable_output(
    tiny_distilbert: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    code, err = run_cli(["export", str(tiny_distilbert), "--out", str(blocker / "art")], capsys)
    assert code == 2
    assert "cannot write the artifact" in err


def test_cli_unknown_precision(
    tiny_distilbert: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "a"
    args = ["export", str(tiny_distilbert), "--out", str(out), "--precisions", "fp8"]
    code, err = run_cli(args, capsys)
    assert code == 2 and "unknown precision fp8" in err
    assert not out.exists()


def test_cli_refuses_to_overwrite(
    tiny_artifact: Path, tiny_distilbert: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["export", str(tiny_distilbert), "--out", str(tiny_artifact)]
    code, err = run_cli(args, capsys)
    assert code == 2 and "exists and is not empty" in err
    assert load_manifest(tiny_artifact).files  # the existing artifact is untouched


def test_missing_extra_names_the_extra() -> None:
    from bertdot.cli.extras import MissingExtraError, require_extra

    with pytest.raises(MissingExtraError, match=r"pip install 'bertdot\[export\]'"):
        require_extra("export", "a_module_that_is_not_installed")


@pytest.mark.slow
def test_real_minilm_matches_sentence_transformers(tmp_path: Path) -> None:
    """The real all-MiniLM-L6-v2 checkpoint: defaults come from its sentence-transformers
    config (mean pooling, normalised → cosine, 256 tokens), and the served vectors equal
    what sentence-transformers itself computes."""
    from sentence_transformers import SentenceTransformer

    from tests.support.models import MINILM_DIR

    out = tmp_path / "minilm"
    manifest = export_artifact(
        ExportOptions(model=str(MINILM_DIR), out=out, precisions=("fp32", "fp16")), **QUIET
    )
    assert (manifest.pooling, manifest.similarity, manifest.max_length) == ("mean", "cosine", 256)
    assert manifest.dim == 384
    texts = ["how do I bake bread", "Sourdough needs a starter, flour, water and salt.", "A"]
    expected = SentenceTransformer(str(MINILM_DIR), device="cpu").encode(texts)
    for precision, atol in (("fp32", 1e-5), ("fp16", 2e-3)):
        got = Encoder(out, device="cpu", precision=precision).encode(texts).vectors
        np.testing.assert_allclose(got, expected, atol=atol)
