"""Merge a LoRA/QLoRA adapter into the 16-bit base weights with peft and save safetensors.

For QLoRA the adapter is merged onto the UNQUANTISED base (loaded in 16/32-bit), never onto the
4-bit one, so no quantisation error is baked into the merged weights.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

from bastion.errors import BadInputError

log = logging.getLogger(__name__)


def load_merged(base: str, adapter: Path, *, revision: str = "main", dtype: str = "float16") -> tuple[Any, Any]:
    """The base model (unquantised, in ``dtype``) with the adapter merged in by peft, and its tokenizer."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch_dtype = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}[dtype]
    log.info("export: merging %s into %s (%s)", adapter, base, dtype)
    model = AutoModelForCausalLM.from_pretrained(base, revision=revision, dtype=torch_dtype)
    try:
        merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    except (ValueError, RuntimeError, OSError) as exc:
        raise BadInputError(f"adapter {adapter} does not fit base model {base}: {exc}") from None
    merged.eval()
    return merged, AutoTokenizer.from_pretrained(base, revision=revision)


def save_merged(model: Any, tokenizer: Any, out: Path) -> Path:
    """Save a merged model as safetensors with its tokenizer and chat template to ``out`` (atomically)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        staging.chmod(0o755)
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return out
