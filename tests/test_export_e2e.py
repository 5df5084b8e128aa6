"""Export end to end from a trained tiny adapter: merge, f16 GGUF, q4_k_m (real Q4_K) and q8_0,
verification, Modelfile, card, SHA256SUMS; then `bastion serve` answers an OpenAI-style request."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import REPO

from bastion.errors import BadInputError, MissingResourceError
from bastion.recipe import load_recipe
from bastion.run_folder import RunFolder
from bastion.runner import run_stage, stage_named
from export.convert import quantize, read_gguf_metadata
from export.modelfile import parse_modelfile

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunFolder, Path]:
    tmp = tmp_path_factory.mktemp("export")
    text = (
        (REPO / "recipes" / "tiny-cpu.yaml")
        .read_text()
        .replace("name: tiny-cpu", "name: export-e2e")
        .replace("path: corpus/cloudsec-mini", f"path: {REPO / 'recipes' / 'corpus' / 'cloudsec-mini'}")
    )
    path = tmp / "recipe.yaml"
    path.write_text(text)
    recipe = load_recipe(path)
    folder = RunFolder.for_recipe(recipe, base=tmp / "runs")
    for stage in ("harvest", "train", "export"):
        run_stage(stage_named(stage), recipe, folder)
    return folder, path


def test_ggufs_with_real_quantised_tensors(exported: tuple[RunFolder, Path]) -> None:
    folder, _ = exported
    out = folder.export_dir
    f16 = read_gguf_metadata(out / "export-e2e-f16.gguf")
    q4 = read_gguf_metadata(out / "export-e2e-q4_k_m.gguf")
    q8 = read_gguf_metadata(out / "export-e2e-q8_0.gguf")
    assert "F16" in f16["tensor_types"] and "Q4_K" in q4["tensor_types"] and "Q8_0" in q8["tensor_types"]
    assert f16["tokenizer.ggml.eos_token_id"] == 128009 and f16["tokenizer.ggml.pre"] == "llama-bpe"
    assert "<|start_header_id|>" in str(f16["tokenizer.chat_template"])
    recipe_hash = folder.read_manifest()["recipe"]["sha256"]
    assert f16["general.name"] == "export-e2e" and recipe_hash in str(f16["general.description"])
    sizes = [(out / f"export-e2e-{k}.gguf").stat().st_size for k in ("f16", "q8_0", "q4_k_m")]
    assert sizes == sorted(sizes, reverse=True)


def test_verification_figures(exported: tuple[RunFolder, Path]) -> None:
    folder, _ = exported
    v = json.loads(folder.verification.read_text())
    assert v["passed"] and v["failures"] == []
    assert v["f16"]["token_agreement"] >= 0.9 and v["f16"]["max_logit_diff"] <= v["f16"]["logit_tolerance"]
    assert v["prompt_matches_training"] is True
    assert v["stops_at_eot"]["ok"] and v["stops_at_eot"]["finish_reason"] == "stop"
    ratios = {name: p["ratio_to_f16"] for name, p in v["perplexity"].items()}
    assert ratios["export-e2e-f16.gguf"] == 1.0
    assert 0.95 < ratios["export-e2e-q8_0.gguf"] < 1.05 and 0.9 < ratios["export-e2e-q4_k_m.gguf"] < 1.2
    assert v["quant_file_types"]["q4_k_m"].endswith("Q4_K - Medium")
    # perplexity is measured on the harvest's held-out pages, never on training records
    pages = folder.heldout.read_text().splitlines()
    assert v["perplexity_tokens"] == 512 and v["held_out_texts"] == len(pages) >= 1
    timings = v["timings_seconds"]
    assert {"merge", "reference_answers", "convert", "quantize", "verify"} <= set(timings)
    steps = timings["merge"] + timings["convert"] + timings["quantize"] + timings["verify"]
    assert 0 < steps <= folder.read_manifest()["stages"]["export"]["seconds"] + 0.05  # no step counted twice
    log = folder.convert_log.read_text()
    assert "converter ready" in log and "Model successfully exported" in log
    assert not list((folder.export_dir).glob(".*"))  # no temporary file left behind


def test_converter_failure_is_a_clear_error(tmp_path: Path) -> None:
    from bastion.errors import BastionError
    from export.convert import convert_to_gguf

    not_a_model = tmp_path / "not-a-model"
    not_a_model.mkdir()
    (not_a_model / "config.json").write_text('{"architectures": ["NoSuchForCausalLM"]}')
    with pytest.raises(BastionError, match=r"converter failed on .*not-a-model \(exit 1; log .*convert.log\)"):
        convert_to_gguf(
            not_a_model,
            tmp_path / "out" / "x.gguf",
            outtype="f16",
            metadata={},
            log_path=tmp_path / "out" / "convert.log",
        )
    assert "NoSuchForCausalLM" in (tmp_path / "out" / "convert.log").read_text()
    assert not list((tmp_path / "out").glob("*.gguf")) and not list((tmp_path / "out").glob(".*"))


def test_unused_converter_process_exits(tmp_path: Path) -> None:
    """A converter started ahead of an export that then fails (say, a bad adapter) stops with it."""
    from export.convert import ConverterProcess

    start = time.monotonic()
    with ConverterProcess(tmp_path / "convert.log") as converter:
        pid = converter._proc.pid
    assert converter._proc.returncode is not None and time.monotonic() - start < 5
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_modelfile_card_and_checksums(exported: tuple[RunFolder, Path]) -> None:
    folder, _ = exported
    out = folder.export_dir
    modelfile = parse_modelfile((out / "Modelfile").read_text())
    assert modelfile["FROM"] == "./export-e2e-q4_k_m.gguf"
    assert modelfile["SYSTEM"] == load_recipe(exported[1]).system_prompt
    card = (out / "README.md").read_text()
    assert card.startswith("---\nbase_model:") and "## Evaluation" in card and "Intended use and limits" in card
    assert "licence" in card.lower()
    check = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=out, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    listed = {line.split()[1] for line in (out / "SHA256SUMS").read_text().splitlines()}
    assert {"export-e2e-f16.gguf", "export-e2e-q4_k_m.gguf", "export-e2e-q8_0.gguf", "Modelfile", "README.md"} <= listed


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_answers_an_openai_chat_request(exported: tuple[RunFolder, Path]) -> None:
    folder, recipe_path = exported
    port = _free_port()
    env = {**os.environ, "BASTION_RUNS": str(folder.root.parent)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "bastion", "serve", str(recipe_path), "--port", str(port)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 90
        body = json.dumps(
            {
                "model": "export-e2e",
                "max_tokens": 8,
                "temperature": 0,
                "messages": [{"role": "user", "content": "What is least privilege?"}],
            }
        ).encode()
        reply = None
        while time.monotonic() < deadline and reply is None:
            try:
                request = urllib.request.Request(
                    f"http://127.0.0.1:{port}/v1/chat/completions",
                    data=body,
                    headers={"Content-Type": "application/json"},
                )
                with urllib.request.urlopen(request, timeout=30) as response:
                    reply = json.loads(response.read())
            except OSError:
                assert proc.poll() is None, "the server exited"
                time.sleep(0.5)
        assert reply is not None, "no answer from bastion serve"
        assert reply["object"] == "chat.completion" and reply["choices"][0]["message"]["role"] == "assistant"
        assert reply["usage"]["completion_tokens"] >= 1
        proc.terminate()  # SIGTERM, as a service manager stops it
        assert proc.wait(timeout=60) == 0
        left = subprocess.run(["pgrep", "-f", f"llama_cpp.server.*--port {port}"], capture_output=True, text=True)
        assert left.stdout.strip() == "", "bastion serve left its llama.cpp server running"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        subprocess.run(["pkill", "-f", f"llama_cpp.server.*--port {port}"], check=False)


def test_serve_refuses_a_gguf_that_does_not_match_its_checksum(
    exported: tuple[RunFolder, Path], tmp_path: Path
) -> None:
    folder, recipe_path = exported
    copy = RunFolder(tmp_path / "runs" / folder.root.name)
    shutil.copytree(folder.export_dir, copy.export_dir, ignore=shutil.ignore_patterns("merged"))
    gguf = copy.gguf("q4_k_m")
    data = bytearray(gguf.read_bytes())
    data[-100] ^= 0xFF  # one flipped byte in the tensor data
    gguf.write_bytes(bytes(data))
    env = {**os.environ, "BASTION_RUNS": str(copy.root.parent)}
    proc = subprocess.run(
        [sys.executable, "-m", "bastion", "serve", str(recipe_path)], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 2, proc.stderr
    assert "does not match its checksum" in proc.stderr and "bastion export" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_adapter_is_a_clear_error(tmp_path: Path) -> None:
    recipe = load_recipe("tiny-cpu.yaml")
    folder = RunFolder.for_recipe(recipe, base=tmp_path)
    with pytest.raises(MissingResourceError, match="harvest has not run yet: run `bastion harvest tiny-cpu.yaml`"):
        run_stage(stage_named("export"), recipe, folder)
    with pytest.raises(MissingResourceError, match=r"no adapter in \S+ .*: run `bastion train tiny-cpu.yaml` first"):
        folder.require_adapter()


def test_corrupt_gguf_is_refused(exported: tuple[RunFolder, Path], tmp_path: Path) -> None:
    bad = RunFolder(tmp_path / "runs" / "broken", "broken.yaml")
    bad.export_dir.mkdir(parents=True)
    bad.gguf("q4_k_m").write_bytes(b"<html>not a model</html>" * 100)
    with pytest.raises(BadInputError, match=r"is not a GGUF file.*`bastion export broken.yaml --force`"):
        bad.require_gguf("q4_k_m")
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes((exported[0].gguf("q8_0")).read_bytes()[:4096])
    with pytest.raises(BadInputError, match="not a readable GGUF"):
        read_gguf_metadata(truncated)


def test_unknown_quantisation_is_refused(exported: tuple[RunFolder, Path], tmp_path: Path) -> None:
    src = exported[0].gguf("f16")
    with pytest.raises(BadInputError, match="unknown quantisation 'q3_xyz'"):
        quantize(src, tmp_path / "x.gguf", "q3_xyz", log_path=tmp_path / "quantize.log")
    text = exported[1].read_text().replace("quantizations: [q4_k_m, q8_0]", "quantizations: [q4_k_m, q9_9]")
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    from bastion.recipe import RecipeError

    with pytest.raises(RecipeError, match=r"export.quantizations\[1\]"):
        load_recipe(bad)
