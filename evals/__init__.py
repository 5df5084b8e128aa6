"""Evals: lm-eval custom security tasks, the base-vs-tuned runner and report, and the GGUF's evaluation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bastion.recipe import PathParts, Recipe
from bastion.run_folder import RunFolder, default_gguf_kind
from bastion.stage import Stage

TASKS_DIR = Path(__file__).resolve().parent / "tasks"


def _run(recipe: Recipe, folder: RunFolder, **options: Any) -> dict[str, Any]:
    from evals.runner import run_eval

    return run_eval(recipe, folder, **options)


def _run_gguf(recipe: Recipe, folder: RunFolder, **options: Any) -> dict[str, Any]:
    from evals.runner import run_gguf_eval

    return run_gguf_eval(recipe, folder, **options)


def _check(data: dict[str, Any], recipe_path: Path) -> list[tuple[PathParts, str]]:
    from evals.recipe_checks import check_recipe

    return check_recipe(data, recipe_path)


def _task_files(recipe: Recipe) -> list[Path]:
    """Bastion's task folder, the recipe's own task folders and its banks (their content is hashed)."""
    paths = [TASKS_DIR, *(recipe.resolve_path(p) for p in recipe.eval["task_paths"])]
    return paths + [recipe.resolve_path(p) for p in recipe.eval["banks"].values() if p]


def _inputs(recipe: Recipe, folder: RunFolder) -> list[Path]:
    # the training records: questions overlapping them are excluded (decontamination)
    return [folder.adapter, folder.training_records(recipe), *_task_files(recipe)]


def _outputs(recipe: Recipe, folder: RunFolder) -> list[Path]:
    return [
        folder.eval_report_json,
        folder.eval_report_md,
        folder.eval_plot,
        folder.eval_run("base"),
        folder.eval_run("tuned"),
    ]


def _gguf_inputs(recipe: Recipe, folder: RunFolder) -> list[Path]:
    return [
        folder.gguf(default_gguf_kind(recipe)),
        folder.eval_run("tuned"),
        folder.training_records(recipe),
        *_task_files(recipe),
    ]


def _gguf_outputs(recipe: Recipe, folder: RunFolder) -> list[Path]:
    return [folder.gguf_eval_dir]


def _gguf_enabled(recipe: Recipe) -> bool:
    return bool(recipe.eval["gguf"])


STAGE = Stage(
    name="eval",
    help="Evaluate the base and the tuned model with lm-evaluation-harness and report the difference.",
    run=_run,
    sections=("eval",),
    reads_from=("harvest", "synth", "train"),
    inputs=_inputs,
    outputs=_outputs,
    check=_check,
)

GGUF_STAGE = Stage(
    name="eval-gguf",
    help="Run RECIPE's eval tasks on the exported GGUF (eval.gguf) and compare it with the tuned model.",
    run=_run_gguf,
    sections=("eval", "export"),
    reads_from=("eval", "export"),
    inputs=_gguf_inputs,
    outputs=_gguf_outputs,
    enabled=_gguf_enabled,
)
