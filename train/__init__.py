"""Train: recipe + training records (harvest's, or synth's pairs) -> Axolotl config (validated by Axolotl) -> ``axolotl train`` -> adapter."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bastion.recipe import PathParts, Recipe
from bastion.run_folder import RunFolder
from bastion.stage import Stage, StageOption


def _run(recipe: Recipe, folder: RunFolder, **options: Any) -> dict[str, Any]:
    from train.pipeline import run_train

    return run_train(recipe, folder, **options)


def _check(data: dict[str, Any], recipe_path: Path) -> list[tuple[PathParts, str]]:
    """Keys of ``train.axolotl`` that Axolotl does not know (it would drop them silently)."""
    overrides = data["train"].get("axolotl") or {}
    if not overrides:
        return []  # importing Axolotl's schema takes seconds: only when there is something to check
    from train.axolotl_config import override_key_problems

    return override_key_problems(overrides)


def _inputs(recipe: Recipe, folder: RunFolder) -> list[Path]:
    return [folder.training_records(recipe)]  # synth's pairs when synth is enabled, else harvest's records


def _outputs(recipe: Recipe, folder: RunFolder) -> list[Path]:
    return [folder.adapter]


STAGE = Stage(
    name="train",
    help="Fine-tune RECIPE's base model with Axolotl (QLoRA/LoRA) on the harvested data.",
    run=_run,
    sections=("train",),
    reads_from=("harvest", "synth"),
    inputs=_inputs,
    outputs=_outputs,
    check=_check,
    options=(
        StageOption("--dry-run", "Print the rendered Axolotl config and launch command; run nothing."),
        StageOption("--resume", "Continue from the last checkpoint in the run's train/output folder."),
    ),
)
