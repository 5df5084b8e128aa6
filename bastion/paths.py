"""Where Bastion keeps things: the repository, recipes, schemas, caches and run folders."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
RECIPES_DIR = REPO_ROOT / "recipes"
SCHEMAS_DIR = REPO_ROOT / "schemas"


def cache_dir() -> Path:
    """The cache folder (``$BASTION_CACHE`` or ``~/.cache/bastion``), created on demand."""
    root = Path(os.environ.get("BASTION_CACHE") or Path.home() / ".cache" / "bastion")
    root.mkdir(parents=True, exist_ok=True)
    return root


def runs_dir() -> Path:
    """The folder holding one run folder per recipe (``$BASTION_RUNS`` or ``./runs``)."""
    return Path(os.environ.get("BASTION_RUNS") or Path.cwd() / "runs")
