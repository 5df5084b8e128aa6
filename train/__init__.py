"""Train: recipe + training records (harvest's, or synth's pairs) -> Axolotl config (validated by
Axolotl) -> ``axolotl train`` -> adapter."""

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
    overrides = data["train"].get("axolotl")
    if not overrides or not isinstance(overrides, dict):
        return []  # the schema reports a non-mapping; importing Axolotl's schema takes seconds
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
        StageOption(
            "--node-rank",
            "This node's rank, 0 to train.nodes - 1, in a multi-node run (default: SLURM_NODEID or NODE_RANK).",
            type=int,
            envvar=("SLURM_NODEID", "NODE_RANK"),
        ),
        StageOption(
            "--rendezvous",
            "HOST:PORT of node 0 in a multi-node run, or of the Ray head with train.launcher 'ray' "
            "(default: Slurm's first node, or MASTER_ADDR:MASTER_PORT).",
            type=str,
        ),
    ),
)
