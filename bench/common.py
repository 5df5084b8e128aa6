"""Shared set-up for the stage benchmarks: an offline environment and a prepared tiny-recipe run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BASTION = [sys.executable, "-m", "bastion"]


def bench_env(tmp: str | Path) -> dict[str, str]:
    """Environment for benchmark subprocesses: offline, no tracking, runs under ``tmp``."""
    return {
        **os.environ,
        "BASTION_RUNS": str(Path(tmp) / "runs"),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "AXOLOTL_DO_NOT_TRACK": "1",
        "WANDB_MODE": "disabled",
        "PYTHONUNBUFFERED": "1",
    }


def prepare(env: dict[str, str], stages: tuple[str, ...], recipe: str = "tiny-cpu.yaml") -> None:
    """Run the given stages once (untimed set-up)."""
    for stage in stages:
        subprocess.run(
            [*BASTION, stage, recipe],
            env=env,
            cwd=REPO,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
