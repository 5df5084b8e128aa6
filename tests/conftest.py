"""Shared test settings: offline, no tracking, runs under a temporary folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
