"""`just gpu-check` on a machine without CUDA: a clear table of skipped steps and exit 0; its GPU recipe stays valid."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

from bastion.recipe import load_recipe

SCRIPT = REPO / "scripts" / "gpu_check.py"


def gpu_check_module():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # its dataclass looks its module up
    spec.loader.exec_module(module)
    return module


def test_without_cuda_every_step_is_skipped_and_it_exits_0() -> None:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # no device, also on a GPU machine
    done = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=120, cwd=REPO, env=env)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "GPU: none (no CUDA device visible)" in out
    module = gpu_check_module()
    for step in module.STEPS:
        line = next(x for x in out.splitlines() if x.startswith(step))
        assert "skipped" in line and "no CUDA device: skipped" in line
    assert "versions: torch " in out and "vllm " in out and "llama_cpp_python " in out
    assert out.rstrip().endswith("gpu-check: no CUDA device: skipped (nothing ran on a GPU; run it on a CUDA machine)")


@pytest.mark.parametrize(("flash", "vllm"), [(True, True), (False, False)])
def test_its_gpu_recipe_is_valid(tmp_path: Path, flash: bool, vllm: bool) -> None:
    recipe = load_recipe(gpu_check_module().gpu_recipe(tmp_path, flash=flash, vllm=vllm))
    t = recipe.train
    assert (t["device"], t["precision"], t["optimizer"], t["flash_attention"]) == (
        "cuda",
        "bf16",
        "paged_adamw_8bit",
        flash,
    )
    assert recipe.eval["backend"] == ("vllm" if vllm else "hf") and recipe.eval["device"] == "cuda"


def test_just_lists_the_verb() -> None:
    assert "gpu-check *args:" in (REPO / "Justfile").read_text()
