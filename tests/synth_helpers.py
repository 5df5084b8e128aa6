"""Shared set-up of the synth tests: a harvested tiny-corpus run, and recipes that differ only in synth."""

from __future__ import annotations

import shutil
from pathlib import Path

from conftest import REPO

import synth
from bastion.recipe import Recipe, load_recipe
from bastion.run_folder import RunFolder
from bastion.runner import run_stage, stage_named

NAME = "synth-test"


def recipe_text(synth_yaml: str = "") -> str:
    text = (
        (REPO / "recipes" / "tiny-cpu.yaml")
        .read_text()
        .replace("synth:\n  enabled: false\n", "")  # the section each caller writes
        .replace("name: tiny-cpu", f"name: {NAME}")
        .replace("path: corpus/cloudsec-mini", f"path: {REPO / 'recipes' / 'corpus' / 'cloudsec-mini'}")
    )
    return text + ("\nsynth:\n" + synth_yaml if synth_yaml else "")


def harvest_into(tmp: Path) -> Path:
    """Harvest the demo corpus once; returns the runs folder holding the run."""
    path = tmp / "harvest.yaml"
    path.write_text(recipe_text())
    recipe = load_recipe(path)
    folder = RunFolder.for_recipe(recipe, base=tmp / "runs")
    run_stage(stage_named("harvest"), recipe, folder)
    return tmp / "runs"


def scripted_synth(url: str | list[str], *, extra: str = "", chunks: int | None = 30, pairs: int = 3) -> str:
    """A synth section against scripted teachers (fast retries, short timeouts)."""
    urls = url if isinstance(url, list) else [url]
    listed = "\n".join(f"      - {u}" for u in urls)
    limit = "null" if chunks is None else str(chunks)
    return (
        "  enabled: true\n"
        f"  max_chunks: {limit}\n"
        f"  pairs_per_chunk: {pairs}\n"
        "  teacher:\n"
        f"    base_url:\n{listed}\n"
        "    model: scripted-teacher\n"
        "    max_concurrency: 4\n"
        "    timeout_seconds: 0.5\n"
        "    max_retries: 2\n"
        "    backoff_seconds: 0.01\n"
        "    max_backoff_seconds: 1.0\n" + extra
    )


def make_run(harvested: Path, tmp: Path, synth_yaml: str) -> tuple[Recipe, RunFolder, Path]:
    """A copy of the harvested run and a recipe with ``synth_yaml`` as its synth section."""
    runs = tmp / "runs"
    if not runs.exists():
        shutil.copytree(harvested, runs)
    path = tmp / "recipe.yaml"
    path.write_text(recipe_text(synth_yaml))
    recipe = load_recipe(path, checks=[c for c in [synth.STAGE.check] if c])
    return recipe, RunFolder.for_recipe(recipe, base=runs), path
