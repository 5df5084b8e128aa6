"""The run folder's checks: adapters are checked before any model runs, failed outputs move aside,
fingerprints ignore caches."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from bastion.errors import BadInputError, MissingResourceError
from bastion.manifest import fingerprint
from bastion.run_folder import RunFolder, safetensors_problem


def adapter_folder(tmp_path: Path, base: str = "meta-llama/Llama-3.1-8B-Instruct") -> RunFolder:
    folder = RunFolder(tmp_path / "runs" / "demo", "demo.yaml")
    folder.adapter.mkdir(parents=True)
    save_file({"lora_A": torch.zeros(8, 64), "lora_B": torch.ones(64, 8)}, folder.adapter / "adapter_model.safetensors")
    (folder.adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": base, "r": 8}))
    return folder


def test_a_complete_adapter_for_the_recipes_base_passes(tmp_path: Path) -> None:
    folder = adapter_folder(tmp_path)
    assert folder.require_adapter("meta-llama/Llama-3.1-8B-Instruct") == folder.adapter


def test_a_truncated_adapter_is_refused_naming_the_file_and_the_command(tmp_path: Path) -> None:
    folder = adapter_folder(tmp_path)
    weights = folder.adapter / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-200])
    with pytest.raises(BadInputError, match=r"adapter_model.safetensors: truncated: .*`bastion train demo.yaml`"):
        folder.require_adapter()
    weights.write_bytes(b"<html>502 Bad Gateway</html>")
    assert "not a safetensors file" in str(safetensors_problem(weights))


def test_an_adapter_of_another_base_model_is_refused(tmp_path: Path) -> None:
    folder = adapter_folder(tmp_path, base="Qwen/Qwen2.5-7B-Instruct")
    with pytest.raises(
        BadInputError, match=r"trained on 'Qwen/Qwen2.5-7B-Instruct'.*recipe's base model is 'meta-llama"
    ):
        folder.require_adapter("meta-llama/Llama-3.1-8B-Instruct")


def test_a_missing_adapter_names_the_command_that_makes_it(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path / "runs" / "demo", "demo.yaml")
    with pytest.raises(MissingResourceError, match=r"no adapter in .*: run `bastion train demo.yaml` first"):
        folder.require_adapter()


def test_move_aside_keeps_the_layout_and_replaces_an_older_failure(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path / "runs" / "demo")
    folder.data_dir.mkdir(parents=True)
    folder.train_data.write_text("partial\n")
    moved = folder.move_aside("harvest", [folder.train_data, folder.heldout])
    assert moved == folder.failed_dir("harvest") and not folder.train_data.exists()
    assert (moved / "data" / "train.jsonl").read_text() == "partial\n"
    folder.train_data.write_text("second\n")
    folder.move_aside("harvest", [folder.train_data])
    assert (moved / "data" / "train.jsonl").read_text() == "second\n"
    assert folder.move_aside("harvest", [folder.heldout]) is None  # nothing to move


def test_folder_fingerprints_follow_content_and_ignore_caches(tmp_path: Path) -> None:
    (tmp_path / "task.yaml").write_text("task: x\n")
    before = fingerprint(tmp_path)
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / "utils.cpython-311.pyc").write_bytes(b"\0")
    assert fingerprint(tmp_path) == before
    (tmp_path / "task.yaml").write_text("task: y\n")
    assert fingerprint(tmp_path) != before
    assert fingerprint(tmp_path / "absent") == "missing"
