"""Export: merge -> GGUF -> quantise -> verify -> Ollama Modelfile and model card."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bastion.recipe import Recipe
from bastion.run_folder import RunFolder
from bastion.stage import Stage


def _run(recipe: Recipe, folder: RunFolder, **options: Any) -> dict[str, Any]:
    from export.pipeline import run_export

    return run_export(recipe, folder, **options)


def _inputs(recipe: Recipe, folder: RunFolder) -> list[Path]:
    # train.jsonl / heldout.jsonl: the texts the verification's perplexity is measured on
    return [folder.adapter, folder.train_data, folder.heldout]


def _outputs(recipe: Recipe, folder: RunFolder) -> list[Path]:
    kinds = [recipe.export["outtype"], *recipe.export["quantizations"]]
    return [
        folder.merged,
        *(folder.gguf(kind) for kind in dict.fromkeys(kinds)),
        folder.modelfile,
        folder.model_card,
        folder.verification,
        folder.sha256sums,
    ]


STAGE = Stage(
    name="export",
    help="Merge the adapter, convert to GGUF, quantise, verify and write an Ollama Modelfile.",
    run=_run,
    sections=("export",),
    reads_from=("harvest", "train"),
    inputs=_inputs,
    outputs=_outputs,
)
