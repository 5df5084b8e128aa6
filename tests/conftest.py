"""Shared test settings: offline, no tracking, runs under a temporary folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bastion.recipe import Recipe
from bastion.run_folder import RunFolder

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("AXOLOTL_DO_NOT_TRACK", "1")
os.environ.setdefault("WANDB_MODE", "disabled")

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def runs_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point BASTION_RUNS at a temporary folder."""
    runs = tmp_path / "runs"
    monkeypatch.setenv("BASTION_RUNS", str(runs))
    return runs


def record_done(stage_name: str, recipe: Recipe, folder: RunFolder) -> None:
    """Record ``stage_name`` as finished successfully on what the run folder holds now, as the runner
    would after running it (for tests that put a stage's outputs in place by hand)."""
    from bastion.runner import inputs_hash, outputs_fingerprints, stage_named, upstream_runs

    stage = stage_named(stage_name)
    folder.stage_started(stage.name, inputs_hash(stage, recipe, folder))
    details = {
        "inputs_hash": inputs_hash(stage, recipe, folder),
        "upstream": upstream_runs(stage, folder),
        "outputs": outputs_fingerprints(stage, recipe, folder),
    }
    folder.stage_finished(stage.name, "ok", 0.0, details)
