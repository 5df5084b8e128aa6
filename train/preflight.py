"""Preflight for training: fail fast, clearly, before any GPU time is spent."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import jsonschema

from bastion.errors import BadInputError, BastionError, MissingResourceError
from bastion.jsonl import read_jsonl
from bastion.paths import SCHEMAS_DIR
from bastion.recipe import Recipe
from train.launchers import NodePlan

log = logging.getLogger(__name__)

GIB = 1024**3


def load_records(path: Path) -> list[dict[str, Any]]:
    """Read and validate train.jsonl (Alpaca records); errors name the file and the line."""
    if not path.is_file():
        raise MissingResourceError(
            f"training data {path} not found: run `bastion harvest RECIPE` first (or put Alpaca JSONL records there)"
        )
    validator = jsonschema.Draft202012Validator(json.loads((SCHEMAS_DIR / "alpaca.schema.json").read_text()))
    records = []
    for number, record in read_jsonl(path):
        errors = sorted(e.message for e in validator.iter_errors(record))
        if errors:
            raise BadInputError(
                f"{path}:{number}: not an Alpaca record (instruction, input, output): {'; '.join(errors)}"
            )
        records.append(record)
    if not records:
        raise BadInputError(f"{path}: no records; the harvest produced nothing to train on")
    return records


def check_packages(recipe: Recipe) -> list[str]:
    """Packages the recipe needs that are not importable."""
    t = recipe.train
    need = []
    if t["quantization"]["bits"] in (4, 8):
        need.append(("bitsandbytes", "train.quantization.bits", "pip install bitsandbytes"))
    if t["flash_attention"] and t["device"] != "cpu":
        need.append(("flash_attn", "train.flash_attention", "pip install -e '.[gpu]' (flash-attn)"))
    if t["distributed"].startswith("deepspeed"):
        need.append(("deepspeed", "train.distributed", "pip install -e '.[gpu]' (deepspeed)"))
    if t["launcher"] == "ray":
        need.append(("ray", "train.launcher", "pip install 'ray[train]' (one version on the driver and the cluster)"))
    if t["tracking"]["backend"] in ("wandb", "mlflow"):
        need.append((t["tracking"]["backend"], "train.tracking.backend", f"pip install {t['tracking']['backend']}"))
    return [
        f"{where} needs the Python package '{pkg}', which is not installed: {fix}"
        for pkg, where, fix in need
        if importlib.util.find_spec(pkg) is None
    ]


def check_gated(recipe: Recipe, base_model: str) -> str | None:
    """An actionable message when a gated hub model is asked for without a token."""
    if not recipe.base_model["gated"] or Path(base_model).is_dir():
        return None
    if os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN") or _cached(base_model):
        return None
    return (
        f"base_model.id '{base_model}' is gated on the Hugging Face hub: accept its licence on the model "
        "page with your account, create a read token (Settings > Access Tokens), then `export HF_TOKEN=...` "
        "and run again (the token is read from the environment only and never written to the run folder)"
    )


def _cached(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        hit = try_to_load_from_cache(repo_id, "config.json")
        return isinstance(hit, str)
    except Exception:  # noqa: BLE001 - any failure means "not cached"
        return False


def estimate_gpu_memory(recipe: Recipe, model_config: dict[str, Any]) -> float:
    """A rough estimate (bytes, per GPU) of training memory: weights, adapter + optimiser, activations."""
    t = recipe.train
    hidden = int(model_config.get("hidden_size", 4096))
    layers = int(model_config.get("num_hidden_layers", 32))
    inter = int(model_config.get("intermediate_size", 4 * hidden))
    vocab = int(model_config.get("vocab_size", 32000))
    heads = int(model_config.get("num_attention_heads", 32))
    kv = int(model_config.get("num_key_value_heads", heads))
    head_dim = hidden // heads
    per_layer = hidden * hidden * 2 + 2 * hidden * kv * head_dim + 3 * hidden * inter
    embed = vocab * hidden * (1 if model_config.get("tie_word_embeddings") else 2)
    params = layers * per_layer + embed
    bits = t["quantization"]["bits"]
    weight_bytes = layers * per_layer * (0.5625 if bits == 4 else 1.0 if bits == 8 else 2.0) + embed * 2
    r = t["lora"]["r"]
    lora_params = layers * r * (4 * hidden + 2 * (hidden + kv * head_dim) + 3 * (hidden + inter))
    adapter_bytes = lora_params * (4 + 4 + 8)  # fp32 weight, gradient, Adam moments
    tokens = t["micro_batch_size"] * t["sequence_len"]
    act_per_layer = tokens * hidden * (2 if t["gradient_checkpointing"] else 34)
    logits = tokens * vocab * 4 * 2  # fp32 logits and their gradient
    shards = recipe.train["num_gpus"] or 1
    weights = weight_bytes / shards if t["distributed"] in ("deepspeed_zero3", "fsdp") else weight_bytes
    return float(weights + adapter_bytes + layers * act_per_layer + logits + 1.0 * GIB + params * 0)


def check_gpu(recipe: Recipe, model_config: dict[str, Any]) -> list[str]:
    """A CUDA recipe needs a GPU with enough memory."""
    if recipe.train["device"] == "cpu":
        return []
    import torch

    if not torch.cuda.is_available():
        if recipe.train["device"] == "auto" or recipe.train["launcher"] == "ray":
            return []  # a Ray driver needs no GPU: the cluster's workers train
        return [
            f"train.device is 'cuda' in {recipe.path} but no CUDA GPU is visible to PyTorch "
            f"(torch {torch.__version__}); run on a GPU machine (see README, 'The GPU path' or the Docker "
            "image), or use a CPU recipe such as recipes/tiny-cpu.yaml"
        ]
    need = estimate_gpu_memory(recipe, model_config)
    free, total = torch.cuda.mem_get_info(0)
    if need > total:
        return [
            f"training needs about {need / GIB:.1f} GiB per GPU (estimate) but GPU 0 has {total / GIB:.1f} GiB; "
            "lower train.micro_batch_size or train.sequence_len, keep gradient_checkpointing on, or use more "
            "GPUs with train.distributed"
        ]
    if need > free:
        log.warning("training needs about %.1f GiB but only %.1f GiB of GPU 0 is free now", need / GIB, free / GIB)
    return []


def multinode_notes(recipe: Recipe, plan: NodePlan, output_dir: Path, data: Path) -> list[str]:
    """What a run on several processes or machines needs, stated before it starts."""
    if plan.world_size == 1:
        return []
    notes = [
        f"{plan.nodes} node(s) x {plan.procs_per_node} process(es) = {plan.world_size} training processes "
        f"({plan.launcher}); each process trains on its own share of every batch (data parallel)"
    ]
    if recipe.train["device"] == "cpu":
        notes.append("on CPU the processes talk over gloo (torch.distributed): a test of the path, not for speed")
    if plan.launcher == "ray":
        notes += [
            "Ray: this machine is the driver and needs no GPU; the Ray cluster needs "
            f"{plan.world_size} GPUs (one per worker: ray_num_workers {plan.world_size}, resources_per_worker GPU 1), "
            "started with `ray start --head` on one machine and `ray start --address HEAD:PORT` on the others",
            f"Ray: output_dir {output_dir} is Ray's storage_path and must be storage every worker shares "
            "(NFS, Lustre, a mounted bucket); the workers read the recipe's training data and base model at the "
            f"same paths ({data})",
        ]
        return notes
    if plan.multi_node:
        known = plan.node_rank is not None
        where = f"this node: rank {plan.node_rank}" if known else "this node's rank is not known yet"
        endpoint = plan.endpoint + (f" (from {plan.source})" if plan.source else "")
        notes += [
            f"{where}; rendezvous at {endpoint}: node 0 must be reachable there from every node",
            f"every node needs the same recipe, the same Bastion and Axolotl versions and the same training data at "
            f"{data} (a harvest on node 0 and shared storage, or a copy)",
            f"checkpoints go to {output_dir}, which must be on storage all nodes share (NFS, Lustre): every "
            "node's processes save there and node 0 collects the adapter from it",
        ]
    return notes


def check_disk(folder: Path, need_bytes: float) -> list[str]:
    """Free disk space for checkpoints in the run folder."""
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if free < need_bytes:
        return [f"{folder} has {free / GIB:.1f} GiB free but checkpoints need about {need_bytes / GIB:.1f} GiB"]
    return []


def raise_problems(problems: list[str], error: type[BastionError] = MissingResourceError) -> None:
    """Raise one error listing every preflight problem."""
    if problems:
        raise error("preflight failed:\n  - " + "\n  - ".join(problems))
