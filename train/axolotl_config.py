"""Render a recipe into an Axolotl config and validate it with Axolotl's own schema.

Axolotl silently drops keys it does not know (its pydantic config ignores extras), so every key of the recipe's
``train.axolotl`` overrides is checked against Axolotl's pydantic models first, with a
did-you-mean, and the rendered config is then validated by ``axolotl.utils.config.validate_config``
before any GPU time is spent.
"""

from __future__ import annotations

import copy
import difflib
import logging
import os
from pathlib import Path
from typing import Any

from bastion.errors import BadInputError
from bastion.recipe import Recipe
from bastion.run_folder import RunFolder

log = logging.getLogger(__name__)

DEEPSPEED_DIR = Path(__file__).resolve().parent / "deepspeed"
LAYER_CLASS = {
    "llama": "LlamaDecoderLayer",
    "mistral": "MistralDecoderLayer",
    "qwen2": "Qwen2DecoderLayer",
    "gemma": "GemmaDecoderLayer",
    "gemma2": "Gemma2DecoderLayer",
    "phi3": "Phi3DecoderLayer",
}


def render_config(
    recipe: Recipe, base_model: str, folder: RunFolder, *, model_type: str = "llama", eot_token: str | None = None
) -> dict[str, Any]:
    """The Axolotl config for ``recipe`` (overrides from ``train.axolotl`` applied last)."""
    t = recipe.train
    cpu = t["device"] == "cpu"
    cfg: dict[str, Any] = {
        "base_model": base_model,
        "revision_of_model": recipe.base_model["revision"],
        "model_type": "AutoModelForCausalLM",
        "tokenizer_type": "AutoTokenizer",
        "trust_remote_code": recipe.base_model["trust_remote_code"],
        "adapter": t["adapter"],
        "load_in_4bit": t["quantization"]["bits"] == 4,
        "load_in_8bit": t["quantization"]["bits"] == 8,
        "lora_r": t["lora"]["r"],
        "lora_alpha": t["lora"]["alpha"],
        "lora_dropout": t["lora"]["dropout"],
        # the one prompt format: the base model's own chat template, loss on the answer + end of turn
        "chat_template": "tokenizer_default",
        "chat_template_kwargs": _chat_kwargs(),
        "datasets": [
            {
                "path": str(folder.train_messages),
                "ds_type": "json",
                "type": "chat_template",
                "field_messages": "messages",
                "message_property_mappings": {"role": "role", "content": "content"},
                "roles_to_train": ["assistant"],
                "train_on_eos": "turn",
            }
        ],
        "dataset_prepared_path": str(folder.train_prepared),
        "output_dir": str(folder.train_output),
        "val_set_size": t["val_set_size"],
        "sequence_len": t["sequence_len"],
        "sample_packing": t["sample_packing"],
        "pad_to_sequence_len": t["sample_packing"],
        "micro_batch_size": t["micro_batch_size"],
        "gradient_accumulation_steps": t["gradient_accumulation_steps"],
        "num_epochs": t["num_epochs"],
        "optimizer": t["optimizer"],
        "lr_scheduler": t["lr_scheduler"],
        "learning_rate": t["learning_rate"],
        "warmup_ratio": t["warmup_ratio"],
        "weight_decay": t["weight_decay"],
        "max_grad_norm": t["max_grad_norm"],
        "seed": t["seed"],
        "bf16": t["precision"] == "bf16",
        "fp16": t["precision"] == "fp16",
        "tf32": not cpu,
        "attn_implementation": "flash_attention_2" if t["flash_attention"] else "sdpa",
        "gradient_checkpointing": t["gradient_checkpointing"],
        "logging_steps": t["logging_steps"],
        "save_steps": t["save_steps"],
        "save_total_limit": 3,
    }
    if t["max_steps"] is not None:
        cfg["max_steps"] = t["max_steps"]
    if t["gradient_checkpointing"]:
        cfg["gradient_checkpointing_kwargs"] = {"use_reentrant": False}
    if t["val_set_size"] > 0:
        cfg["eval_steps"] = t["eval_steps"]
    if t["adapter"] == "qlora":
        q = t["quantization"]
        cfg["bnb_config_kwargs"] = {
            "bnb_4bit_quant_type": q["quant_type"],
            "bnb_4bit_use_double_quant": q["double_quant"],
        }
    target = t["lora"]["target_modules"]
    if target == "all-linear":
        cfg["lora_target_linear"] = True
    else:
        cfg["lora_target_modules"] = list(target)
    if cpu:
        # Axolotl auto-enables Triton LoRA kernels that assert CUDA
        cfg.update(lora_mlp_kernel=False, lora_qkv_kernel=False, lora_o_kernel=False)
    if eot_token:
        cfg["eot_tokens"] = [eot_token]
    cfg.update(_distributed(t["distributed"], model_type))
    if t["launcher"] == "ray":
        from train.launchers import node_plan, ray_settings

        cfg.update(ray_settings(node_plan(recipe, environ={})))
    cfg.update(_tracking(recipe))
    overrides = t["axolotl"]
    check_override_keys(overrides, recipe)
    return _deep_merge(cfg, overrides)


def _chat_kwargs() -> dict[str, str]:
    from bastion.chat_format import CHAT_TEMPLATE_KWARGS

    return dict(CHAT_TEMPLATE_KWARGS)


def _distributed(mode: str, model_type: str) -> dict[str, Any]:
    if mode in ("deepspeed_zero2", "deepspeed_zero3"):
        return {"deepspeed": str(DEEPSPEED_DIR / f"zero{mode[-1]}.json")}
    if mode == "fsdp":
        return {
            "fsdp_version": 2,
            "fsdp_config": {
                "offload_params": False,
                "state_dict_type": "FULL_STATE_DICT",
                "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
                "transformer_layer_cls_to_wrap": LAYER_CLASS.get(model_type, "LlamaDecoderLayer"),
                "reshard_after_forward": True,
                "cpu_ram_efficient_loading": False,  # Axolotl refuses it with QLoRA under FSDP2
                "activation_checkpointing": True,
            },
        }
    return {}


def _tracking(recipe: Recipe) -> dict[str, Any]:
    tr = recipe.train["tracking"]
    name = tr["run_name"] or recipe.name
    if tr["backend"] == "wandb":
        return {"wandb_project": tr["project"], "wandb_name": name}
    if tr["backend"] == "mlflow":
        out = {"mlflow_experiment_name": tr["project"] or recipe.name, "mlflow_run_name": name}
        if tr["tracking_uri"]:
            out["mlflow_tracking_uri"] = tr["tracking_uri"]
        return out
    return {}


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _known_keys(model: Any) -> set[str]:
    keys: set[str] = set()
    for name, field in model.model_fields.items():
        keys.add(name)
        if field.alias:
            keys.add(field.alias)
        alias = field.validation_alias
        if isinstance(alias, str):
            keys.add(alias)
        elif alias is not None:
            keys.update(c for c in getattr(alias, "choices", []) if isinstance(c, str))
    return keys


def known_axolotl_keys() -> dict[str, set[str]]:
    """Keys Axolotl's schema knows: top level, dataset entries, fsdp_config.

    Importing Axolotl's schema takes seconds, so the keys are kept in the cache folder per Axolotl
    version (``scripts/setup.sh`` fills it); ``bastion validate`` then answers at once.
    """
    import importlib.metadata
    import json

    from bastion.atomic import write_json
    from bastion.paths import cache_dir

    cached = cache_dir() / f"axolotl-keys-{importlib.metadata.version('axolotl')}.json"
    if cached.is_file():
        return {name: set(keys) for name, keys in json.loads(cached.read_text(encoding="utf-8")).items()}
    from axolotl.utils.schemas.config import AxolotlInputConfig
    from axolotl.utils.schemas.datasets import SFTDataset
    from axolotl.utils.schemas.fsdp import FSDPConfig

    keys = {
        "top": _known_keys(AxolotlInputConfig),
        "datasets": _known_keys(SFTDataset),
        "fsdp_config": _known_keys(FSDPConfig),
    }
    write_json(cached, {name: sorted(values) for name, values in keys.items()})
    return keys


def override_key_problems(overrides: dict[str, Any]) -> list[tuple[tuple[str | int, ...], str]]:
    """``(path, message)`` for each key of ``train.axolotl`` that Axolotl's schema does not know."""
    if not overrides:
        return []
    known = known_axolotl_keys()
    problems: list[tuple[tuple[str | int, ...], str]] = []

    def check(keys: Any, allowed: set[str], where: tuple[str | int, ...]) -> None:
        for key in keys:
            if key not in allowed:
                hint = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
                guess = f"; did you mean '{hint[0]}'?" if hint else ""
                problems.append(((*where, key), f"unknown Axolotl key (Axolotl would drop it silently){guess}"))

    check(overrides, known["top"], ("train", "axolotl"))
    for i, entry in enumerate(overrides.get("datasets") or []):
        if isinstance(entry, dict):
            check(entry, known["datasets"], ("train", "axolotl", "datasets", i))
    if isinstance(overrides.get("fsdp_config"), dict):
        check(overrides["fsdp_config"], known["fsdp_config"], ("train", "axolotl", "fsdp_config"))
    return problems


def check_override_keys(overrides: dict[str, Any], recipe: Recipe) -> None:
    """Refuse any key in ``train.axolotl`` that Axolotl's schema does not know."""
    problems = [f"{'.'.join(map(str, path))}: {message}" for path, message in override_key_problems(overrides)]
    if problems:
        raise BadInputError(
            f"{recipe.path}: " + "\n  ".join(["train.axolotl has keys Axolotl does not know:", *problems])
        )


def capabilities(device: str, num_gpus: int | None, distributed: str) -> dict[str, Any]:
    """Capabilities of the visible GPU, or those a GPU recipe expects when validating on a machine without one."""
    try:
        import torch

        if torch.cuda.is_available():
            major, minor = torch.cuda.get_device_capability()
            return {
                "bf16": torch.cuda.is_bf16_supported(),
                "fp8": False,
                "tf32": major >= 8,
                "n_gpu": torch.cuda.device_count(),
                "compute_capability": f"sm_{major}{minor}",
            }
    except ImportError:
        pass
    if device == "cpu":
        return {"bf16": False, "fp8": False, "tf32": False, "n_gpu": 1, "compute_capability": None}
    gpus = num_gpus or (2 if distributed != "none" else 1)
    return {"bf16": True, "fp8": False, "tf32": True, "n_gpu": gpus, "compute_capability": "sm_90"}


def validate_axolotl_config(cfg: dict[str, Any], recipe: Recipe) -> Any:
    """Validate with Axolotl's own config model; BadInputError listing Axolotl's messages."""
    t = recipe.train
    return validate_with_axolotl(cfg, capabilities(t["device"], t["num_gpus"], t["distributed"]), str(recipe.path))


def validate_with_axolotl(cfg: dict[str, Any], caps: dict[str, Any], origin: str) -> Any:
    """``axolotl.utils.config.validate_config`` on a copy of ``cfg``; BadInputError with Axolotl's messages."""
    os.environ.setdefault("AXOLOTL_DO_NOT_TRACK", "1")
    import torch
    from axolotl.utils.config import validate_config
    from axolotl.utils.dict import DictDefault
    from pydantic import ValidationError

    if "deepspeed" in cfg and "fsdp_version" in cfg:
        raise BadInputError(f"{origin}: train: DeepSpeed and FSDP are both set; choose one (train.distributed)")
    ds = cfg.get("deepspeed")
    if isinstance(ds, str) and not Path(ds).is_file():
        raise BadInputError(f"{origin}: train.axolotl.deepspeed: file {ds} does not exist")
    try:
        return validate_config(
            DictDefault(copy.deepcopy(cfg)),
            capabilities=dict(caps),
            env_capabilities={"torch_version": torch.__version__.split("+")[0]},
        )
    except (ValidationError, ValueError) as exc:
        raise BadInputError(
            f"{origin}: the rendered Axolotl config is invalid for Axolotl {_axolotl_version()}:\n{exc}"
        ) from None


def _axolotl_version() -> str:
    import importlib.metadata

    return importlib.metadata.version("axolotl")


def axolotl_tokenize(cfg: dict[str, Any], row: dict[str, Any]) -> dict[str, list[int]]:
    """Tokenize one dataset row exactly as Axolotl's trainer does (its chat_template prompt strategy).

    Returns ``input_ids`` and ``labels`` (-100 where no loss is taken). Used to prove that the
    training text equals ``tokenizer.apply_chat_template`` for the same messages.
    """
    from axolotl.loaders import load_tokenizer
    from axolotl.prompt_strategies import load as load_strategy
    from axolotl.utils.config import normalize_cfg_datasets, normalize_config, validate_config
    from axolotl.utils.dict import DictDefault

    validated = validate_config(
        DictDefault(copy.deepcopy(cfg)),
        capabilities=capabilities("cpu", None, "none"),
        env_capabilities={"torch_version": "2.13.0"},
    )
    normalize_config(validated)
    normalize_cfg_datasets(validated)
    tokenizer = load_tokenizer(validated)
    strategy = load_strategy("chat_template", tokenizer, validated, validated.datasets[0])
    out = strategy.tokenize_prompt(row)
    return {"input_ids": list(out["input_ids"]), "labels": list(out["labels"])}
