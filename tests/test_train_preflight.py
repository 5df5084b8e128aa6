"""Preflight: missing data, over-long data, a CUDA recipe without a GPU, a gated model without a token."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import REPO, record_done

from bastion.errors import BadInputError, MissingResourceError
from bastion.recipe import load_recipe
from bastion.run_folder import RunFolder
from bastion.runner import run_stage, stage_named

RECORD = {
    "instruction": "Explain how security groups differ from network ACLs.",
    "input": "",
    "output": "Security groups are stateful and attach to interfaces; network ACLs are stateless. " * 3,
}


def tiny_recipe(tmp_path: Path, **train: object) -> Path:
    text = (REPO / "recipes" / "tiny-cpu.yaml").read_text().replace("name: tiny-cpu", "name: preflight")
    for key, value in train.items():
        text = text.replace("\ntrain:\n", f"\ntrain:\n  {key}: {value}\n", 1)
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


def with_data(tmp_path: Path, recipe_path: Path, records: list[dict] | str) -> RunFolder:
    """A run folder whose harvest (and synth, when the recipe enables it) wrote ``records``, recorded as
    successful runs of those stages."""
    recipe = load_recipe(recipe_path)
    folder = RunFolder.for_recipe(recipe, base=tmp_path / "runs")
    text = records if isinstance(records, str) else "".join(json.dumps(r) + "\n" for r in records)
    for path in {folder.train_data, folder.training_records(recipe)}:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    record_done("harvest", recipe, folder)
    if folder.training_records(recipe) != folder.train_data:
        record_done("synth", recipe, folder)
    return folder


def train(recipe_path: Path, folder: RunFolder, **options: object) -> dict:
    return run_stage(stage_named("train"), load_recipe(recipe_path), folder, **options)


def test_missing_data_says_to_harvest_first(tmp_path: Path) -> None:
    path = tiny_recipe(tmp_path)
    folder = RunFolder.for_recipe(load_recipe(path), base=tmp_path / "runs")
    with pytest.raises(
        MissingResourceError, match=r"harvest has not run yet: run `bastion harvest \S*recipe.yaml` first"
    ):
        train(path, folder)
    assert folder.stage_entry("train") == {}  # refused before it started


def test_invalid_record_names_file_and_line(tmp_path: Path) -> None:
    path = tiny_recipe(tmp_path)
    folder = with_data(tmp_path, path, json.dumps(RECORD) + "\n" + json.dumps({"instruction": "x" * 20}) + "\n")
    with pytest.raises(BadInputError, match=r"train.jsonl:2: not an Alpaca record.*'input' is a required"):
        train(path, folder)


@pytest.mark.slow
def test_all_records_too_long_fails_before_training(tmp_path: Path) -> None:
    path = tiny_recipe(tmp_path)
    text = path.read_text().replace("sequence_len: 512", "sequence_len: 64")
    path.write_text(text)
    folder = with_data(tmp_path, path, [RECORD] * 4)
    with pytest.raises(BadInputError) as info:
        train(path, folder)
    message = str(info.value)
    assert "all 4 samples are longer than sequence_len = 64" in message and "num_samples=0" in message
    lengths = json.loads(folder.train_lengths.read_text())
    assert lengths["too_long"] == 4 and lengths["max_tokens"] > 64
    assert not folder.adapter.exists()


def test_cuda_recipe_without_gpu_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the same message on GPU machines too
    path = tiny_recipe(tmp_path)
    text = path.read_text().replace("  device: cpu\n", "  device: cuda\n").replace("precision: fp32", "precision: bf16")
    text = text.replace("optimizer: adamw_torch", "optimizer: paged_adamw_8bit")
    path.write_text(text)
    folder = with_data(tmp_path, path, [RECORD])
    with pytest.raises(MissingResourceError, match="train.device is 'cuda'.*no CUDA GPU is visible"):
        train(path, folder)


def test_gated_model_without_token_is_actionable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    path = REPO / "recipes" / "llama31-8b.yaml"
    folder = with_data(tmp_path, path, [RECORD])
    with pytest.raises(MissingResourceError) as info:
        train(path, folder)
    assert "gated" in str(info.value) and "export HF_TOKEN" in str(info.value)


def test_dry_run_prints_config_and_command_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tiny_recipe(tmp_path)
    folder = with_data(tmp_path, path, [RECORD])
    train(path, folder, dry_run=True)
    out = capsys.readouterr().out
    assert "adapter: qlora" in out and "chat_template: tokenizer_default" in out
    assert "-m train.axolotl_launch" in out
    assert not folder.axolotl_config.exists()
    assert "train" not in json.loads(folder.manifest_path.read_text())["stages"]
