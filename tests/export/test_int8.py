"""int8: the quantisation recipe, its quality gate in the manifest, and the CPU default."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from bertdot.export import calibration
from bertdot.export.errors import ExportError
from bertdot.export.pipeline import INT8_GATE, ExportOptions, export_artifact
from bertdot.export.reference import ModelSpec, ReferenceEncoder
from bertdot.server.encoding.artifact import load_manifest
from bertdot.server.encoding.encoder import Encoder
from bertdot.server.encoding.runtime import open_session
from tests.support.models import MINILM_DIR

QUIET = {"say": lambda _: None}


def test_manifest_records_the_int8_gate_measured_on_texts_calibration_never_saw(
    tiny_artifact: Path,
) -> None:
    manifest = load_manifest(tiny_artifact)
    gate = manifest.gates["int8"]
    held_out = len(calibration.split_holdout(calibration.builtin_texts())[1])
    assert gate.texts == 8 + held_out  # the probe texts and the held-out half
    assert gate.required == INT8_GATE
    assert gate.passed == (gate.min_cosine >= INT8_GATE)
    assert gate.min_cosine <= gate.median_cosine <= 1.0
    recipe = gate.recipe
    assert recipe["weight_type"] == "uint8" and recipe["calibration_texts"] == 256
    # The tiny model has two layers: both second FFN MatMuls stay fp32, the rest is int8.
    assert len(recipe["kept_fp32"]) == 2 and recipe["quantized_nodes"] > 0
    assert recipe["smoothed_nodes"] > 0


def _with_gate(artifact: Path, out: Path, passed: bool) -> Path:
    shutil.copytree(artifact, out)
    path = out / "manifest.json"
    data = json.loads(path.read_text())
    data["gates"]["int8"]["passed"] = passed
    path.write_text(json.dumps(data))
    return out


def test_the_cpu_serves_int8_by_default_only_when_its_gate_passed(
    tiny_artifact: Path, tmp_path: Path
) -> None:
    passed = _with_gate(tiny_artifact, tmp_path / "passed", True)
    choice = open_session(passed, load_manifest(passed), device="cpu")
    assert choice.precision == "int8" and "passed its quality gate" in choice.reason
    assert choice.path.name == "encoder.int8.onnx"

    failed = _with_gate(tiny_artifact, tmp_path / "failed", False)
    choice = open_session(failed, load_manifest(failed), device="cpu")
    assert choice.precision == "fp32" and "not passed its quality gate" in choice.reason
    # Asked for explicitly, int8 is served whatever its gate says.
    choice = open_session(failed, load_manifest(failed), device="cpu", precision="int8")
    assert choice.precision == "int8"
    # An artifact without int8 (or written before gates existed) keeps fp32.
    plain = tmp_path / "plain"
    shutil.copytree(tiny_artifact, plain)
    data = json.loads((plain / "manifest.json").read_text())
    del data["gates"]
    (plain / "manifest.json").write_text(json.dumps(data))
    assert open_session(plain, load_manifest(plain), device="cpu").precision == "fp32"


def test_calibration_texts_from_a_corpus_or_lines(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(
        '{"_id": "1", "title": "Banana", "text": "A yellow fruit."}\n{"_id": "2", "text": "x"}\n'
    )
    assert calibration.read_texts(corpus) == ["Banana A yellow fruit.", "x"]
    lines = tmp_path / "texts.txt"
    lines.write_text("what is a banana\n\n  \nbananas are berries\n")
    assert calibration.read_texts(lines) == ["what is a banana", "bananas are berries"]
    many = tmp_path / "many.txt"
    many.write_text("\n".join(f"text {i}" for i in range(1000)))
    sample = calibration.read_texts(many, count=100)
    assert len(set(sample)) == 100 and sample == calibration.read_texts(many, count=100)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"title": "no text"}\n')
    with pytest.raises(ExportError, match=r'bad.jsonl:1: expected a JSON object with "text"'):
        calibration.read_texts(bad)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    with pytest.raises(ExportError, match="holds no calibration texts"):
        calibration.read_texts(empty)
    with pytest.raises(ExportError, match="cannot read calibration texts"):
        calibration.read_texts(tmp_path / "missing.txt")
    # The export refuses a bad calibration file, or one without int8, before any work.
    with pytest.raises(ExportError, match="cannot read calibration texts"):
        options = ExportOptions(
            model="no-such-model", out=tmp_path / "a", precisions=("fp32", "int8"),
            calibration=tmp_path / "missing.txt",
        )  # fmt: skip
        export_artifact(options, **QUIET)
    with pytest.raises(ExportError, match="add int8 to --precisions"):
        export_artifact(
            ExportOptions(model="no-such-model", out=tmp_path / "b", calibration=lines), **QUIET
        )


def test_int8_of_the_real_minilm_calibrated_on_its_corpus_passes_its_gate(
    tmp_path: Path,
) -> None:
    """The recipe on a trained model (whose LayerNorm outliers broke plain dynamic int8:
    min cosine 0.990), calibrated on the corpus it will index, as the README says: the gate
    passes, and int8 vectors of texts outside the calibration set rank passages as PyTorch
    fp32 does."""
    from bertdot.server.indexing.builtin_corpus import passages

    corpus = tmp_path / "corpus.jsonl"
    with corpus.open("w", encoding="utf-8") as handle:
        for record in passages():
            handle.write(json.dumps(record) + "\n")
    out = tmp_path / "minilm"
    options = ExportOptions(
        model=str(MINILM_DIR), out=out, precisions=("fp32", "int8"), calibration=corpus
    )
    manifest = export_artifact(options, **QUIET)
    gate = manifest.gates["int8"]
    assert gate.passed and gate.min_cosine >= INT8_GATE, gate
    encoder = Encoder(out, device="cpu")
    assert encoder.precision == "int8"  # the CPU default, as the gate passed
    queries = ["how do I sort a list", "what is the boiling point of water", "cheap flights"]
    passages = [
        "sorted() returns a new sorted list from the items in an iterable.",
        "Water boils at 100 degrees Celsius at sea level.",
        "Compare airfares and book low-cost flights to hundreds of destinations.",
        "The mitochondria is the powerhouse of the cell.",
    ]
    spec = ModelSpec(str(MINILM_DIR), "mean", "cosine", manifest.max_length)
    reference = ReferenceEncoder.load(spec, device="cpu")
    expected = reference.encode(queries) @ reference.encode(passages).T
    served = encoder.encode(queries).vectors @ encoder.encode(passages).vectors.T
    assert (served.argmax(axis=1) == expected.argmax(axis=1)).all()
    np.testing.assert_allclose(served, expected, atol=0.03)
