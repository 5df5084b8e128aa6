"""A tiny, randomly initialised Llama 3.1 with the REAL Llama 3.1 tokenizer, for tests and the demo.

No weights can be downloaded, so Bastion builds its own stand-in for Llama 3.1 8B Instruct:
the architecture and special-token layout of the real model at a toy size (hidden size 256,
2 layers, untied embeddings as in the 8B model), and a tokenizer identical to Meta's, rebuilt from the Llama 3
vocabulary GGUF and the Llama 3.1 chat template that ship inside the llama-cpp-python sdist
(see :mod:`bastion.vendor`). With it every stage runs for real: training, evaluation and the
llama.cpp converter, which recognises the tokenizer as ``llama-bpe``.

The folder is built once per combination of library versions and cached
(``<cache>/tiny-llama-<key>``); see :func:`tiny_model_dir`.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.metadata
import json
import logging
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bastion import vendor
from bastion.atomic import write_json
from bastion.errors import MissingResourceError
from bastion.paths import cache_dir

log = logging.getLogger(__name__)

#: Bump when the files this module writes change, so that cached folders are rebuilt.
BUILDER_VERSION = "1"

#: The seed :func:`tiny_model_dir` builds with.
DEFAULT_SEED = 0

#: Name of the file that marks a finished build and records what it was built from.
MARKER = "bastion-tiny-model.json"

BOS = "<|begin_of_text|>"
EOS = "<|eot_id|>"  # end of turn: what an Instruct model emits after its answer
PAD = "<|finetune_right_pad_id|>"  # a reserved token Llama 3.1 names for padding
FIRST_SPECIAL_ID = 128000
VOCAB_SIZE = 128256

#: Llama 3's pre-tokenizer regex, exactly as in Meta's tokenizer.json.
LLAMA3_SPLIT_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

#: Special tokens whose names changed from Llama 3 (the vocabulary GGUF) to Llama 3.1.
_LLAMA31_RENAMED = {
    128004: "<|finetune_right_pad_id|>",
    128005: "<|reserved_special_token_2|>",
    128008: "<|eom_id|>",
    128010: "<|python_tag|>",
}

#: Special tokens both versions name the same (checked against the GGUF).
_LLAMA3_FIXED = {
    128000: "<|begin_of_text|>",
    128001: "<|end_of_text|>",
    128002: "<|reserved_special_token_0|>",
    128003: "<|reserved_special_token_1|>",
    128006: "<|start_header_id|>",
    128007: "<|end_header_id|>",
    128009: "<|eot_id|>",
}

#: Llama 3.1 Instruct's end-of-generation ids: <|end_of_text|>, <|eom_id|>, <|eot_id|>.
EOS_TOKEN_IDS = [128001, 128008, 128009]

#: The model's configuration: Llama 3.1 8B Instruct's, scaled down. ``max_position_embeddings``
#: and ``rope_scaling`` are Llama 3.1's own (131072 positions, llama3 RoPE scaling from 8192):
#: transformers 5 warns when the scaling's ``original_max_position_embeddings`` is not below
#: ``max_position_embeddings``, and the converter then writes the same ``rope_freqs`` tensor as
#: for the real model. RoPE costs no parameters, so the long context is free.
MODEL_CONFIG: dict[str, Any] = {
    "hidden_size": 256,
    "intermediate_size": 512,  # a multiple of 256, so that llama.cpp's K-quants apply
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,  # grouped-query attention, as in the 8B model (32 / 8)
    "head_dim": 64,
    "hidden_act": "silu",
    "rms_norm_eps": 1e-5,
    "vocab_size": VOCAB_SIZE,
    "max_position_embeddings": 131072,
    "rope_theta": 500000.0,
    "rope_scaling": {
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    },
    "attention_bias": False,
    "mlp_bias": False,
    "tie_word_embeddings": False,  # as Llama 3.1 8B: the LM head is a matrix of its own
    "initializer_range": 0.02,
    "bos_token_id": FIRST_SPECIAL_ID,
    "eos_token_id": EOS_TOKEN_IDS,
}

#: Meta's generation_config.json for Llama 3.1 8B Instruct (sampling on by default).
GENERATION_CONFIG: dict[str, Any] = {
    "bos_token_id": FIRST_SPECIAL_ID,
    "eos_token_id": EOS_TOKEN_IDS,
    "do_sample": True,
    "temperature": 0.6,
    "top_p": 0.9,
}


@dataclass(frozen=True)
class Llama3Vocab:
    """The Llama 3 vocabulary: ordinary tokens (ids 0..127999), merges, and 256 special tokens."""

    tokens: list[str]
    merges: list[tuple[str, str]]
    special: list[str]


# --------------------------------------------------------------------------------------------
# Vocabulary
# --------------------------------------------------------------------------------------------


def _llama31_special_name(token_id: int, llama3_name: str) -> str:
    """The Llama 3.1 name of special token ``token_id`` (the GGUF holds Llama 3's names)."""
    if token_id in _LLAMA31_RENAMED:
        return _LLAMA31_RENAMED[token_id]
    if token_id in _LLAMA3_FIXED:
        if llama3_name != _LLAMA3_FIXED[token_id]:
            raise MissingResourceError(
                f"unexpected Llama 3 vocabulary: token {token_id} is {llama3_name!r}, "
                f"expected {_LLAMA3_FIXED[token_id]!r}"
            )
        return llama3_name
    # Llama 3.1 renumbered the reserved tokens after inserting four named ones.
    return f"<|reserved_special_token_{token_id - 128008}|>"


def read_llama3_vocab(path: Path | None = None) -> Llama3Vocab:
    """Read the Llama 3 vocabulary GGUF and return it with Llama 3.1's special-token names."""
    path = path or vendor.llama3_vocab_gguf()
    if not path.is_file():
        raise MissingResourceError(f"the Llama 3 vocabulary GGUF is missing: {path}")
    with vendor.vendored_gguf() as gguf:
        reader = gguf.GGUFReader(path)
        fields = reader.fields

        def strings(key: str) -> list[str]:
            field = fields[key]
            return [bytes(field.parts[i]).decode("utf-8") for i in field.data]

        tokens = strings("tokenizer.ggml.tokens")
        merges = strings("tokenizer.ggml.merges")
        type_field = fields["tokenizer.ggml.token_type"]
        types = [int(type_field.parts[i][0]) for i in type_field.data]
        model = bytes(fields["tokenizer.ggml.model"].parts[-1]).decode()
        pre = bytes(fields["tokenizer.ggml.pre"].parts[-1]).decode()
    control = 3  # gguf.TokenType.CONTROL
    if (model, pre, len(tokens)) != ("gpt2", "llama-bpe", VOCAB_SIZE) or any(
        (t == control) != (i >= FIRST_SPECIAL_ID) for i, t in enumerate(types)
    ):
        raise MissingResourceError(
            f"{path} is not the Llama 3 vocabulary (model={model}, pre={pre}, {len(tokens)} tokens)"
        )
    pairs: list[tuple[str, str]] = []
    for merge in merges:
        left, right = merge.split(" ")
        pairs.append((left, right))
    special = [_llama31_special_name(i, tokens[i]) for i in range(FIRST_SPECIAL_ID, VOCAB_SIZE)]
    return Llama3Vocab(tokens=tokens[:FIRST_SPECIAL_ID], merges=pairs, special=special)


# --------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------


def _build_fast_tokenizer(vocab: Llama3Vocab) -> Any:
    """The ``tokenizers.Tokenizer`` of Llama 3.1, component by component as in Meta's file."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors

    bpe = models.BPE(
        vocab={tok: i for i, tok in enumerate(vocab.tokens)},
        merges=vocab.merges,
        fuse_unk=False,
        byte_fallback=False,
        ignore_merges=True,
    )
    tok = Tokenizer(bpe)
    tok.normalizer = None
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(LLAMA3_SPLIT_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
        ]
    )
    tok.post_processor = processors.Sequence(
        [
            processors.ByteLevel(add_prefix_space=True, trim_offsets=False, use_regex=True),
            processors.TemplateProcessing(
                single=f"{BOS} $A",
                pair=f"{BOS} $A {BOS}:1 $B:1",
                special_tokens=[(BOS, FIRST_SPECIAL_ID)],
            ),
        ]
    )
    tok.decoder = decoders.ByteLevel(add_prefix_space=True, trim_offsets=True, use_regex=True)
    tok.add_special_tokens(
        [
            AddedToken(name, special=True, normalized=False, lstrip=False, rstrip=False, single_word=False)
            for name in vocab.special
        ]
    )
    for offset, name in enumerate(vocab.special):
        if tok.token_to_id(name) != FIRST_SPECIAL_ID + offset:
            raise RuntimeError(f"special token {name} did not get id {FIRST_SPECIAL_ID + offset}")
    return tok


def _added_token_entry(name: str) -> dict[str, Any]:
    return {
        "content": name,
        "lstrip": False,
        "normalized": False,
        "rstrip": False,
        "single_word": False,
        "special": True,
    }


def build_tokenizer(out_dir: Path) -> None:
    """Write Llama 3.1 Instruct's fast tokenizer into ``out_dir``.

    Files: ``tokenizer.json``, ``tokenizer_config.json`` (``PreTrainedTokenizerFast``, Meta's
    chat template, pad token ``<|finetune_right_pad_id|>``) and ``special_tokens_map.json``.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    vocab = read_llama3_vocab()
    tok = _build_fast_tokenizer(vocab)
    tok.save(str(out_dir / "tokenizer.json"), pretty=False)
    if PAD not in vocab.special:
        raise RuntimeError(f"{PAD} is not a Llama 3.1 special token")
    config = {
        "added_tokens_decoder": {
            str(FIRST_SPECIAL_ID + i): _added_token_entry(name) for i, name in enumerate(vocab.special)
        },
        "bos_token": BOS,
        "chat_template": vendor.llama31_chat_template(),
        # Meta's file says true, which transformers 5 ignores for BPE (with a warning each load).
        "clean_up_tokenization_spaces": False,
        "eos_token": EOS,
        "pad_token": PAD,
        "model_input_names": ["input_ids", "attention_mask"],
        "model_max_length": 131072,
        # Not LlamaTokenizer: transformers 5 would rebuild that one SentencePiece-style.
        "tokenizer_class": "PreTrainedTokenizerFast",
    }
    write_json(out_dir / "tokenizer_config.json", config)
    special_map = {
        key: {k: v for k, v in _added_token_entry(name).items() if k != "special"}
        for key, name in (("bos_token", BOS), ("eos_token", EOS), ("pad_token", PAD))
    }
    write_json(out_dir / "special_tokens_map.json", special_map)


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------


def build_tiny_model(out_dir: Path, *, seed: int = DEFAULT_SEED) -> Path:
    """Write a random tiny ``LlamaForCausalLM`` (float32 safetensors) plus the tokenizer.

    The weights depend only on ``seed`` (and the torch version). Returns ``out_dir``.
    """
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    out_dir.mkdir(parents=True, exist_ok=True)
    config = LlamaConfig(**MODEL_CONFIG)
    config.architectures = ["LlamaForCausalLM"]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.float()  # float32 whatever torch's default dtype: the tests and the demo run on CPU
    model.generation_config = GenerationConfig(**GENERATION_CONFIG)
    model.save_pretrained(out_dir, safe_serialization=True)
    build_tokenizer(out_dir)
    return out_dir


# --------------------------------------------------------------------------------------------
# Cache
# --------------------------------------------------------------------------------------------


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def cache_key_inputs() -> dict[str, str]:
    """What a cached tiny model depends on: library versions, the sdist, this builder, its config, the seed."""
    return {
        "builder": BUILDER_VERSION,
        "config": hashlib.sha256(json.dumps(MODEL_CONFIG, sort_keys=True).encode()).hexdigest()[:12],
        "seed": str(DEFAULT_SEED),
        "transformers": _version("transformers"),
        "tokenizers": _version("tokenizers"),
        "torch": _version("torch"),
        "llama-cpp-python-sdist": vendor.llama_cpp_python_version(),
    }


def cache_key() -> str:
    """A short hash of :func:`cache_key_inputs`."""
    blob = json.dumps(cache_key_inputs(), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def _make_readable(folder: Path) -> None:
    """Give the build the usual modes (temporary files and folders are created private)."""
    folder.chmod(0o755)
    for path in folder.iterdir():
        path.chmod(0o644)


def tiny_model_dir() -> Path:
    """The cached tiny model folder, built on first use (20-30 s on 2 cores) and then reused.

    The model is built in a temporary sibling folder and renamed into place, so a reader never
    sees half a model; when two processes race, the first rename wins and the other build is
    discarded.
    """
    inputs = cache_key_inputs()
    root = cache_dir()
    target = root / f"tiny-llama-{cache_key()}"
    if (target / MARKER).is_file():
        return target
    log.info("building the tiny Llama 3.1 test model into %s", target)
    staging = Path(tempfile.mkdtemp(prefix=".tiny-llama-build-", dir=root))
    try:
        build_tiny_model(staging, seed=DEFAULT_SEED)
        write_json(staging / MARKER, inputs)
        _make_readable(staging)
        if target.exists() and not (target / MARKER).is_file():
            # A folder left by something else (never by this function): move it out of the way.
            stale = Path(tempfile.mkdtemp(prefix=".tiny-llama-stale-", dir=root))
            with contextlib.suppress(OSError):
                os.rename(target, stale / "old")
            shutil.rmtree(stale, ignore_errors=True)
        try:
            os.rename(staging, target)
        except OSError:
            if not (target / MARKER).is_file():
                raise
            log.info("another process built %s first; keeping it", target)
        else:
            log.info("tiny model ready: %s", target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sys.stdout.write(f"{tiny_model_dir()}\n")
