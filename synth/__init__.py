"""Synth: harvested chunks (never held-out pages) -> teacher (OpenAI-compatible) -> gates ->
grounded Alpaca question-answer pairs + provenance + a funnel report. Train reads them when
``synth.enabled``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bastion.decontam import eval_bank_files
from bastion.recipe import PathParts, Recipe
from bastion.run_folder import RunFolder, synth_enabled
from bastion.stage import Stage, StageOption


def _run(recipe: Recipe, folder: RunFolder, **options: Any) -> dict[str, Any]:
    from synth.pipeline import run_synth

    return run_synth(recipe, folder, **options)


def _check(data: dict[str, Any], recipe_path: Path) -> list[tuple[PathParts, str]]:
    from synth.config import check_synth

    return list(check_synth(data, recipe_path))


def _inputs(recipe: Recipe, folder: RunFolder) -> list[Path]:
    """Harvest's records, provenance and held-out pages; the eval banks it decontaminates against; a served GGUF."""
    s = recipe.data["synth"]
    paths = [folder.train_data, folder.sources, folder.heldout]
    if s["decontaminate"]:
        paths += eval_bank_files(recipe.eval, recipe.resolve_path)
    serve = s["teacher"]["serve"]
    if serve["engine"] == "llama_cpp" and serve["gguf"]:
        paths.append(recipe.resolve_path(serve["gguf"]))
    return paths


def _outputs(recipe: Recipe, folder: RunFolder) -> list[Path]:
    return [folder.synth_pairs, folder.synth_provenance, folder.synth_report_json, folder.synth_report_md]


STAGE = Stage(
    name="synth",
    help="Have a teacher model write grounded question-answer pairs from RECIPE's harvested chunks (synth.enabled).",
    run=_run,
    sections=("synth", "eval.banks", "eval.decontamination_ngram"),
    reads_from=("harvest",),
    inputs=_inputs,
    outputs=_outputs,
    enabled=synth_enabled,
    check=_check,
    options=(StageOption("--dry-run", "Print the plan (chunks, requests, teacher, launch command); ask nothing."),),
)
