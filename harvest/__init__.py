"""Harvest: crawl -> extract -> gate -> dedup -> instruct -> Alpaca JSONL + quality report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bastion.recipe import Recipe, source_path_violations
from bastion.run_folder import RunFolder
from bastion.stage import Stage


def _run(recipe: Recipe, folder: RunFolder, **options: Any) -> dict[str, Any]:
    from harvest.pipeline import run_harvest

    return run_harvest(recipe, folder, **options)


def _inputs(recipe: Recipe, folder: RunFolder) -> list[Path]:
    """The folders or files of local and served sources (web pages are not hashed)."""
    return [
        recipe.resolve_path(source["path"])
        for source in recipe.harvest["sources"]
        if source["kind"] in ("local", "served") and source.get("path")
    ]


def _outputs(recipe: Recipe, folder: RunFolder) -> list[Path]:
    return [folder.train_data, folder.sources, folder.heldout, folder.quality_json, folder.quality_md]


STAGE = Stage(
    name="harvest",
    help="Crawl and read RECIPE's sources into Alpaca JSONL plus a data-quality report.",
    run=_run,
    sections=("harvest", "train.sequence_len"),  # sequence_len bounds a record's length
    inputs=_inputs,
    outputs=_outputs,
    check=source_path_violations,
)
