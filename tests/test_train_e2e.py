"""Train end to end on CPU: harvested data -> real Axolotl QLoRA on the tiny model -> a peft adapter."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from conftest import REPO

from bastion.recipe import load_recipe
from bastion.run_folder import RunFolder
from bastion.runner import run_stage, stage_named

TINY = load_recipe("tiny-cpu.yaml")  # the settings the e2e recipe copies

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunFolder, dict]:
    tmp = tmp_path_factory.mktemp("train")
    text = (REPO / "recipes" / "tiny-cpu.yaml").read_text()
    text = text.replace("name: tiny-cpu", "name: train-e2e").replace(
        "path: corpus/cloudsec-mini", f"path: {REPO / 'recipes' / 'corpus' / 'cloudsec-mini'}"
    )
    path = tmp / "recipe.yaml"
    path.write_text(text)
    recipe = load_recipe(path)
    folder = RunFolder.for_recipe(recipe, base=tmp / "runs")
    run_stage(stage_named("harvest"), recipe, folder)
    details = run_stage(stage_named("train"), recipe, folder)
    return folder, details


def test_losses_are_finite_and_recorded(trained: tuple[RunFolder, dict]) -> None:
    folder, details = trained
    assert details["steps"] == TINY.train["max_steps"]
    for key in ("first_train_loss", "final_train_loss", "final_eval_loss"):
        assert math.isfinite(details[key]) and 0 < details[key] < 20, key
    entry = folder.stage_entry("train")
    assert entry["status"] == "ok" and entry["data_sha256"] == details["data_sha256"]
    assert entry["tokens_per_second"] > 0 and entry["seconds_to_first_step"] > 0 and entry["peak_rss_gib"] > 0
    assert entry["versions"]["axolotl"] == "0.19.0"
    log = folder.train_log.read_text()
    assert "'loss'" in log


def test_config_and_chat_data_are_kept(trained: tuple[RunFolder, dict]) -> None:
    folder, _ = trained
    assert "adapter: qlora" in folder.axolotl_config.read_text()
    first = json.loads(folder.train_messages.read_text().splitlines()[0])
    assert [m["role"] for m in first["messages"]] == ["system", "user", "assistant"]
    assert json.loads(folder.train_lengths.read_text())["too_long"] == 0


def test_adapter_loads_with_peft_onto_the_tiny_model(trained: tuple[RunFolder, dict]) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from bastion.tiny_model import tiny_model_dir

    folder, _ = trained
    adapter = folder.adapter
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["r"] == TINY.train["lora"]["r"] and config["lora_alpha"] == TINY.train["lora"]["alpha"]
    assert set(config["modules_to_save"]) == {"embed_tokens", "lm_head"}  # the recipe's axolotl override
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir())
    model = PeftModel.from_pretrained(base, adapter)
    ids = torch.tensor([[128000, 9906, 1917]])
    with torch.no_grad():
        logits = model(ids).logits
    assert logits.shape == (1, 3, 128256) and torch.isfinite(logits).all()
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_b and any(p.abs().sum() > 0 for p in lora_b)  # training moved the adapter off its zero init


def test_resume_points_at_the_last_checkpoint(trained: tuple[RunFolder, dict]) -> None:
    from train.pipeline import latest_checkpoint, launch_command

    folder, _ = trained
    checkpoint = latest_checkpoint(folder.train_output)
    assert checkpoint is not None and checkpoint.name == f"checkpoint-{TINY.train['max_steps']}"
    cmd = launch_command(load_recipe(folder.read_manifest()["recipe"]["path"]), folder, resume_from=checkpoint)
    assert cmd[cmd.index("--resume-from-checkpoint") + 1] == str(checkpoint)


def test_sigint_stops_training_cleanly(trained: tuple[RunFolder, dict], tmp_path: Path) -> None:
    import os
    import shutil
    import signal
    import subprocess
    import sys
    import time

    folder, _ = trained
    runs = tmp_path / "runs"
    # the harvest's outputs and its manifest record: train starts from a finished harvest
    shutil.copytree(folder.data_dir, runs / "train-e2e" / folder.data_dir.name)
    shutil.copy(folder.manifest_path, runs / "train-e2e" / folder.manifest_path.name)
    recipe_path = folder.read_manifest()["recipe"]["path"]
    env = {**os.environ, "BASTION_RUNS": str(runs), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "bastion", "--log-json", "train", recipe_path],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert proc.stdout is not None
    seen = b""
    deadline = time.monotonic() + 300
    stepping = False  # interrupt in the middle of training, once the first step's loss is logged
    while time.monotonic() < deadline and not stepping:
        line = proc.stdout.readline()
        if not line:
            break
        seen += line
        stepping = b"axolotl: " in line and b"loss " in line
    assert stepping, seen[-2000:]
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    text = (seen + out).decode()
    assert proc.returncode == 130
    assert "training interrupted" in text and "Traceback" not in text.split("axolotl")[0]
    assert f"bastion train {recipe_path} --resume" in text  # the real recipe, not a placeholder
    manifest = json.loads((runs / "train-e2e" / "manifest.json").read_text())
    assert manifest["stages"]["train"]["status"] == "interrupted"
    leftover = subprocess.run(["pgrep", "-f", f"axolotl_launch {runs}"], capture_output=True, text=True)
    assert leftover.stdout.strip() == ""  # no orphaned trainer


def test_resume_of_a_finished_run_keeps_max_steps_and_the_first_loss(trained: tuple[RunFolder, dict]) -> None:
    folder, details = trained
    recipe = load_recipe(folder.read_manifest()["recipe"]["path"])
    log_size = folder.train_log.stat().st_size
    again = run_stage(stage_named("train"), recipe, folder, resume=True)
    assert again["steps"] == recipe.train["max_steps"]  # no step past max_steps
    assert folder.train_log.stat().st_size == log_size  # nothing was launched
    assert again["first_train_loss"] == pytest.approx(details["first_train_loss"])  # the run's, not a segment's
    assert folder.stage_entry("train")["status"] == "ok"
