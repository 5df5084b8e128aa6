"""Resolve a recipe's base model to something transformers can load, and load its tokenizer."""

from __future__ import annotations

import logging
import os
from functools import lru_cache
from typing import Any

from bastion.errors import MissingResourceError
from bastion.recipe import Recipe

log = logging.getLogger(__name__)

TINY_MODEL_ID = "bastion:tiny-llama"


def base_model_path(recipe: Recipe) -> str:
    """A local folder or hub id for the recipe's base model (the tiny model is built on demand)."""
    model_id = str(recipe.base_model["id"])
    if model_id == TINY_MODEL_ID:
        from bastion.tiny_model import tiny_model_dir

        return str(tiny_model_dir())
    local = recipe.resolve_path(model_id)
    return str(local) if local.is_dir() else model_id


@lru_cache(maxsize=4)
def _load_tokenizer(path: str, revision: str) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path, revision=revision)


def load_tokenizer(recipe: Recipe) -> Any:
    """The base model's tokenizer; a clear message when it is gated or cannot be reached."""
    path = base_model_path(recipe)
    try:
        return _load_tokenizer(path, recipe.base_model["revision"])
    except OSError as exc:
        hint = ""
        if recipe.base_model.get("gated") and not os.environ.get("HF_TOKEN"):
            hint = (
                " The model is gated: accept its licence on the Hugging Face hub, then "
                "`export HF_TOKEN=...` (a read token) and run again."
            )
        elif os.environ.get("HF_HUB_OFFLINE") == "1":
            hint = " HF_HUB_OFFLINE=1 is set and the model is not in the local cache."
        raise MissingResourceError(
            f"cannot load the tokenizer of base model '{path}' (base_model.id in {recipe.path}): {exc}.{hint}"
        ) from None
