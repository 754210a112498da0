"""Every command, given bad paths, bad files or bad flags, ends with a one-line error and a
non-zero exit status: never a Python traceback."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bertdot.cli.main import main
from bertdot.server.encoding.runtime import gpu_usable

# {art}: a good artifact, {ckpt}: a good checkpoint; the rest are made by `workspace`.
CASES = {
    "export: no such model": ("export /nonexistent --out {w}/x", "does not exist"),
    "export: not a checkpoint": ("export {w}/empty --out {w}/x", "no config.json"),
    "export: a file as model": ("export {w}/afile --out {w}/x", "is a file"),
    "export: unknown precision": ("export {ckpt} --out {w}/x --precisions bogus", "unknown precision"),
    "export: output is a file": ("export {ckpt} --out {w}/afile --precisions fp32", "exists"),
    "export: bad max length": ("export {ckpt} --out {w}/x --max-length -3", "--max-length"),
    "export: bad opset": ("export {ckpt} --out {w}/x --opset 3", "--opset"),
    "index build: no artifact": ("index build --model /nonexistent --corpus {w}/good.jsonl --out {w}/i", "not a bertdot artifact"),
    "index build: garbage manifest": ("index build --model {w}/badart --corpus {w}/good.jsonl --out {w}/i", "not readable JSON"),
    "index build: damaged model file": ("index build --model {w}/truncart --corpus {w}/good.jsonl --out {w}/i", "cannot load"),
    "index build: no corpus": ("index build --model {art} --corpus {w}/missing.jsonl --out {w}/i", "not found"),
    "index build: malformed corpus": ("index build --model {art} --corpus {w}/bad.jsonl --out {w}/i", "malformed JSON"),
    "index build: bad --m": ("index build --model {art} --corpus {w}/good.jsonl --out {w}/i --m 0", "--m"),
    "index check: no index": ("index check /nonexistent", "not a bertdot index"),
    "index check: garbage manifest": ("index check {w}/badidx", "not a valid index manifest"),
    "index check: bad --ef": ("index check {w}/empty --ef abc", "--ef"),
    "index snapshot: no index": ("index snapshot {w}/empty", "not a bertdot index"),
    "index repair: no index": ("index repair /nonexistent", "not a bertdot index"),
    "serve: no artifact": ("serve --model /nonexistent --port 0", "not a bertdot artifact"),
    "serve: damaged model file": ("serve --model {w}/truncart --port 0", "cannot load"),
    "serve: no index": ("serve --model {art} --index /nonexistent --port 0", "not a bertdot index"),
    "serve: garbage index manifest": ("serve --model {art} --index {w}/badidx --port 0", "manifest"),
    "serve: bad port": ("serve --model {art} --port -5", "--port"),
    "serve: port not a number": ("serve --model {art} --port abc", "--port"),
    "serve: missing certificate": ("serve --model {art} --port 0 --tls-cert {w}/c.pem --tls-key {w}/k.pem", "--tls-cert"),
    "serve: zero batch": ("serve --model {art} --port 0 --max-batch-size 0", "--max-batch-size"),
    "serve: zero queue": ("serve --model {art} --port 0 --max-queue 0", "--max-queue"),
    "serve: zero slice": ("serve --model {art} --port 0 --bulk-slice-tokens 0", "--bulk-slice-tokens"),
    "serve: negative threads": ("serve --model {art} --port 0 --threads -1", "--threads"),
    "serve: zero workers": ("serve --model {art} --port 0 --workers 0", "--workers"),
    "serve: tiny message limit": ("serve --model {art} --port 0 --max-message-bytes 0", "--max-message-bytes"),
    "serve: unknown precision": ("serve --model {art} --port 0 --precision fp64", "--precision"),
    "serve: unknown device": ("serve --model {art} --port 0 --device tpu", "--device"),
    "serve: cuda without a GPU": ("serve --model {art} --port 0 --device cuda", "device 'cuda'"),
    "index build: cuda without a GPU": ("index build --model {art} --corpus {w}/good.jsonl --out {w}/i --device cuda", "device 'cuda'"),
    "search: nobody listens": ("search hello --target 127.0.0.1:1 --timeout 2", "UNAVAILABLE"),
    "search: bad k": ("search hello --k 0", "--k"),
    "bench: nobody listens": ("bench --target 127.0.0.1:1 --duration 0.5 --warmup 0", "no request succeeded"),
    "bench: no queries file": ("bench --queries {w}/missing.txt", "--queries"),
    "bench: negative duration": ("bench --duration -1", "--duration"),
    "eval: no dataset": ("eval --dataset /nonexistent --model {art} --candidates {w}/run.trec", "no such folder"),
    "eval: a file as dataset": ("eval --dataset {w}/afile --model {art} --candidates {w}/run.trec", "not a file"),
    "eval: no candidates file": ("eval --dataset {w}/good-ds --model {art} --candidates {w}/none.trec", "none.trec"),
    "eval: malformed queries": ("eval --dataset {w}/ds --model {art} --candidates {w}/run.trec", "malformed JSON"),
    "eval: no index": ("eval --dataset {w}/ds --model {art}", "--index"),
    "demo: workdir is a file": ("demo --workdir {w}/afile --no-serve --model {ckpt}", "afile"),
    "demo: bad passages": ("demo --passages -1 --no-serve --model {ckpt} --workdir {w}/d", "--passages"),
    "demo: no such model": ("demo --model /nonexistent --no-serve --workdir {w}/d", "does not exist"),
}  # fmt: skip


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory, tiny_artifact: Path) -> Path:
    w = tmp_path_factory.mktemp("bad-input")
    (w / "empty").mkdir()
    (w / "afile").write_text("not a folder\n")
    (w / "good.jsonl").write_text('{"_id": "1", "text": "a passage"}\n')
    (w / "bad.jsonl").write_text("not json\n")
    shutil.copytree(tiny_artifact, w / "badart")
    (w / "badart" / "manifest.json").write_text("{garbage")
    shutil.copytree(tiny_artifact, w / "truncart")
    model = w / "truncart" / "encoder.fp32.onnx"
    model.write_bytes(model.read_bytes()[:1000])
    (w / "badidx").mkdir()
    (w / "badidx" / "manifest.json").write_text("{garbage")
    (w / "ds").mkdir()
    (w / "ds" / "queries.jsonl").write_text("nope\n")
    (w / "ds" / "corpus.jsonl").write_text('{"_id": "1", "text": "t"}\n')
    (w / "ds" / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\nq1\t1\t1\n")
    shutil.copytree(w / "ds", w / "good-ds")
    (w / "good-ds" / "queries.jsonl").write_text('{"_id": "q1", "text": "a query"}\n')
    (w / "run.trec").write_text("q1 Q0 1 1 1.0 bm25\n")
    return w


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_gets_one_error_line_and_a_failing_exit(
    case: str,
    workspace: Path,
    tiny_artifact: Path,
    tiny_distilbert: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import shlex

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(workspace)
    template, expected = CASES[case]
    if "--device cuda" in template and gpu_usable():
        pytest.skip("a GPU is usable here: --device cuda is good input")
    argv = shlex.split(template.format(w=workspace, art=tiny_artifact, ckpt=tiny_distilbert))
    try:
        status = main(argv)  # any exception but SystemExit fails the test with its traceback
    except SystemExit as exited:
        code = exited.code
        status = code if isinstance(code, int) else 1
        if isinstance(code, str):
            print(code, file=__import__("sys").stderr)
    out, err = capsys.readouterr()
    assert status != 0, out + err
    assert "Traceback" not in out + err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines, out
    assert lines[-1].startswith("bertdot"), err  # the error, on the last line, in one line
    assert expected in lines[-1], err
