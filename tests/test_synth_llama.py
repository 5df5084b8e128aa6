"""Synth against a real teacher: llama-cpp-python's server on the tiny model's GGUF, served by the
stage itself on loopback (teacher.serve.engine: llama_cpp). The requests, the schema-constrained
replies (llama-cpp-python takes only its json_object form: the client switches) and the funnel work
for real; the tiny model writes nonsense, so grounding rejects it, the report says why, and the stage
fails clearly, or trains on extractive records when the recipe says so, never on nonsense."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from synth_helpers import harvest_into, make_run

from bastion.errors import ToolError
from bastion.runner import run_stage, stage_named

pytestmark = pytest.mark.slow

SYNTH = stage_named("synth")


@pytest.fixture(scope="module")
def gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model as an f16 GGUF (about a minute, once per module)."""
    from bastion.tiny_model import tiny_model_dir
    from export.convert import convert_to_gguf

    tmp = tmp_path_factory.mktemp("tiny-gguf")
    return convert_to_gguf(
        tiny_model_dir(), tmp / "tiny-f16.gguf", outtype="f16", metadata={}, log_path=tmp / "convert.log"
    )


@pytest.fixture(scope="module")
def harvested(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return harvest_into(tmp_path_factory.mktemp("synth-llama-harvest"))


def served(gguf: Path, extra: str = "") -> str:
    return (
        "  enabled: true\n"
        "  max_chunks: 3\n"
        "  pairs_per_chunk: 2\n"
        "  parse_retries: 1\n"
        "  teacher:\n"
        "    max_concurrency: 2\n"
        "    timeout_seconds: 120\n"
        "    max_tokens: 96\n"
        "    serve:\n"
        "      engine: llama_cpp\n"
        f"      gguf: {gguf}\n"
        "      n_ctx: 4096\n"
        "      startup_timeout_seconds: 120\n" + extra
    )


def test_the_tiny_model_as_teacher_is_rejected_by_reason(gguf: Path, harvested: Path, tmp_path: Path) -> None:
    recipe, folder, _ = make_run(harvested, tmp_path / "strict", served(gguf))
    with pytest.raises(ToolError, match="kept 0 pairs") as err:
        run_stage(SYNTH, recipe, folder)
    assert "Nothing was passed to training" in str(err.value)
    report = json.loads((folder.failed_dir("synth") / "synth" / "report.json").read_text())
    counts, rejected = report["funnel"]["counts"], report["funnel"]["rejected"]
    assert counts["requested"] == 6 and counts["kept"] == 0
    assert sum(sum(r.values()) for r in rejected.values()) == 6  # every request rejected, each with its reason
    usage = report["cost"]["teacher"]["teacher"]
    assert usage["format_switches"] == 1 and usage["completions"] >= 6  # json_schema refused, json_object used
    assert report["teacher"]["engine"] == "llama_cpp" and report["cost"]["completion_tokens"] > 0
    assert not folder.synth_pairs.exists()
    print("real-server funnel:", json.dumps(counts), json.dumps(rejected))  # noqa: T201


def test_fallback_to_extractive_records(gguf: Path, harvested: Path, tmp_path: Path) -> None:
    recipe, folder, _ = make_run(harvested, tmp_path / "fallback", served(gguf, "  fallback_to_extractive: true\n"))
    details = run_stage(SYNTH, recipe, folder)
    assert details["fallback_to_extractive"] and details["pairs"] == 0 and details["records"] > 0
    prov = [json.loads(x) for x in folder.synth_provenance.read_text().splitlines()]
    assert {p["kind"] for p in prov} == {"extractive"}
