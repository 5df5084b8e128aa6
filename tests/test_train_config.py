"""Rendering the recipe into an Axolotl config, validated by Axolotl's own schema; one prompt format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import REPO

from bastion.chat_format import record_messages, render_ids
from bastion.errors import BadInputError
from bastion.recipe import load_recipe
from bastion.run_folder import RunFolder
from train.axolotl_config import axolotl_tokenize, render_config, validate_axolotl_config

FLAGSHIP_BASE = "meta-llama/Llama-3.1-8B-Instruct"


def paths(tmp_path: Path) -> RunFolder:
    return RunFolder(tmp_path)


def recipe_with(tmp_path: Path, train_extra: str, base: str = "llama31-8b.yaml") -> Path:
    text = (REPO / "recipes" / base).read_text().replace("  axolotl: {}\n", "")
    path = tmp_path / "r.yaml"
    path.write_text(text.replace("\ntrain:\n", "\ntrain:\n" + train_extra, 1))
    return path


def test_flagship_renders_qlora_defaults_and_validates(tmp_path: Path) -> None:
    recipe = load_recipe("llama31-8b.yaml")
    cfg = render_config(recipe, FLAGSHIP_BASE, paths(tmp_path))
    validated = validate_axolotl_config(cfg, recipe)
    expected = {
        "adapter": "qlora",
        "load_in_4bit": True,
        "lora_r": 32,
        "lora_alpha": 64,
        "lora_dropout": 0.05,
        "lora_target_linear": True,
        "sample_packing": True,
        "sequence_len": 4096,
        "attn_implementation": "flash_attention_2",
        "gradient_checkpointing": True,
        "lr_scheduler": "cosine",
        "warmup_ratio": 0.03,
        "val_set_size": 0.05,
        "eval_steps": 50,
        "save_steps": 100,
        "seed": 42,
        "bf16": True,
        "chat_template": "tokenizer_default",
    }
    assert {k: cfg[k] for k in expected} == expected
    assert cfg["bnb_config_kwargs"] == {"bnb_4bit_quant_type": "nf4", "bnb_4bit_use_double_quant": True}
    ds = cfg["datasets"][0]
    assert (ds["type"], ds["roles_to_train"], ds["train_on_eos"]) == ("chat_template", ["assistant"], "turn")
    assert validated.lora_r == 32 and validated.sample_packing is True


@pytest.mark.parametrize("mode", ["deepspeed_zero2", "deepspeed_zero3", "fsdp"])
def test_each_distributed_mode_renders_a_valid_config(tmp_path: Path, mode: str) -> None:
    recipe = load_recipe("llama31-8b.yaml")
    recipe.train.update(distributed=mode, num_gpus=2)
    cfg = render_config(recipe, FLAGSHIP_BASE, paths(tmp_path))
    validated = validate_axolotl_config(cfg, recipe)
    if mode.startswith("deepspeed"):
        ds = json.loads(Path(cfg["deepspeed"]).read_text())
        assert ds["zero_optimization"]["stage"] == int(mode[-1])
        assert "fsdp_version" not in cfg
    else:
        assert cfg["fsdp_version"] == 2 and "deepspeed" not in cfg
        assert validated.fsdp_config.transformer_layer_cls_to_wrap == "LlamaDecoderLayer"


def test_single_gpu_is_the_default(tmp_path: Path) -> None:
    from train.pipeline import launch_command

    cmd = launch_command(load_recipe("llama31-8b.yaml"), RunFolder(tmp_path))
    assert "accelerate.commands.launch" not in cmd and cmd[1:3] == ["-m", "train.axolotl_launch"]
    recipe = load_recipe("llama31-8b.yaml")
    recipe.train.update(distributed="fsdp", num_gpus=4)
    cmd = launch_command(recipe, RunFolder(tmp_path))
    assert cmd[1:5] == ["-m", "accelerate.commands.launch", "--num_processes", "4"]


def test_unknown_override_key_is_refused_with_did_you_mean(tmp_path: Path) -> None:
    recipe = load_recipe(recipe_with(tmp_path, "  axolotl:\n    lerning_rate: 0.001\n    save_total_limit: 2\n"))
    with pytest.raises(BadInputError) as info:
        render_config(recipe, FLAGSHIP_BASE, paths(tmp_path))
    assert "train.axolotl.lerning_rate" in str(info.value) and "did you mean 'learning_rate'" in str(info.value)
    assert "save_total_limit" not in str(info.value)


def test_known_override_is_applied(tmp_path: Path) -> None:
    recipe = load_recipe(recipe_with(tmp_path, "  axolotl:\n    save_total_limit: 7\n    lora_dropout: 0.1\n"))
    cfg = render_config(recipe, FLAGSHIP_BASE, paths(tmp_path))
    assert cfg["save_total_limit"] == 7 and cfg["lora_dropout"] == 0.1
    validate_axolotl_config(cfg, recipe)


def test_override_that_axolotl_rejects_is_reported(tmp_path: Path) -> None:
    recipe = load_recipe(recipe_with(tmp_path, "  axolotl:\n    micro_batch_size: two\n"))
    with pytest.raises(BadInputError, match="micro_batch_size"):
        validate_axolotl_config(render_config(recipe, FLAGSHIP_BASE, paths(tmp_path)), recipe)


def test_tracking_uses_axolotl_settings(tmp_path: Path) -> None:
    recipe = load_recipe("llama31-8b.yaml")
    assert "wandb_project" not in render_config(recipe, FLAGSHIP_BASE, paths(tmp_path))  # off by default
    recipe.train["tracking"].update(backend="wandb", project="cloudsec")
    cfg = render_config(recipe, FLAGSHIP_BASE, paths(tmp_path))
    assert cfg["wandb_project"] == "cloudsec" and cfg["wandb_name"] == recipe.name
    recipe.train["tracking"].update(backend="mlflow", tracking_uri="http://127.0.0.1:5000")
    cfg = render_config(recipe, FLAGSHIP_BASE, paths(tmp_path))
    assert cfg["mlflow_experiment_name"] == "cloudsec" and "wandb_project" not in cfg
    assert cfg["mlflow_tracking_uri"] == "http://127.0.0.1:5000"


def test_cpu_recipe_gets_cpu_safe_settings(tmp_path: Path) -> None:
    from bastion.tiny_model import tiny_model_dir

    recipe = load_recipe("tiny-cpu.yaml")
    cfg = render_config(recipe, str(tiny_model_dir()), paths(tmp_path))
    assert (cfg["bf16"], cfg["fp16"], cfg["tf32"]) == (False, False, False)
    assert cfg["attn_implementation"] == "sdpa"
    assert not any(cfg[k] for k in ("lora_mlp_kernel", "lora_qkv_kernel", "lora_o_kernel"))
    validate_axolotl_config(cfg, recipe)


@pytest.mark.slow
def test_trainer_tokenization_equals_the_chat_template(tmp_path: Path) -> None:
    """A record as Axolotl's trainer tokenizes it == apply_chat_template, token for token; loss only on
    the answer, which ends with <|eot_id|>."""
    from transformers import AutoTokenizer

    from bastion.tiny_model import tiny_model_dir

    recipe = load_recipe("tiny-cpu.yaml")
    base = str(tiny_model_dir())
    record = {
        "instruction": "Explain how IAM permission boundaries limit privilege escalation.",
        "input": "",
        "output": "A permission boundary caps the permissions an identity-based policy can grant.",
    }
    messages = record_messages(record, recipe.system_prompt)
    p = paths(tmp_path)
    p.train_messages.parent.mkdir(parents=True, exist_ok=True)
    p.train_messages.write_text(json.dumps({"messages": messages}) + "\n")
    cfg = render_config(recipe, base, p)
    out = axolotl_tokenize(cfg, {"messages": messages})
    tok = AutoTokenizer.from_pretrained(base)
    reference = render_ids(tok, messages)
    assert out["input_ids"] == reference
    assert tok.decode(reference).startswith("<|begin_of_text|><|start_header_id|>system<|end_header_id|>")
    trained = [i for i, label in zip(out["input_ids"], out["labels"], strict=True) if label != -100]
    eot = tok.convert_tokens_to_ids("<|eot_id|>")
    assert trained == tok.encode(record["output"], add_special_tokens=False) + [eot]
    assert out["input_ids"][-1] == eot
    prompt = render_ids(tok, messages[:2], generation_prompt=True)
    assert out["input_ids"][: len(prompt)] == prompt
    assert all(label == -100 for label in out["labels"][: len(prompt)])
    assert "Below is an instruction" not in tok.decode(out["input_ids"])
