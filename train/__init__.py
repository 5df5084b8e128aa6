"""Train: recipe + harvested records -> Axolotl config (validated by Axolotl) -> ``axolotl train`` -> adapter."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bastion.recipe import Recipe
from bastion.run_folder import RunFolder
from bastion.stage import Stage, StageOption


def _run(recipe: Recipe, folder: RunFolder, **options: Any) -> dict[str, Any]:
    from train.pipeline import run_train

    return run_train(recipe, folder, **options)


def _inputs(recipe: Recipe, folder: RunFolder) -> list[Path]:
    return [folder.train_data]


def _outputs(recipe: Recipe, folder: RunFolder) -> list[Path]:
    return [folder.adapter]


STAGE = Stage(
    name="train",
    help="Fine-tune RECIPE's base model with Axolotl (QLoRA/LoRA) on the harvested data.",
    run=_run,
    sections=("train",),
    reads_from=("harvest",),
    inputs=_inputs,
    outputs=_outputs,
    options=(
        StageOption("--dry-run", "Print the rendered Axolotl config and launch command; run nothing."),
        StageOption("--resume", "Continue from the last checkpoint in the run's train/output folder."),
    ),
)
