"""The tiny Llama 3.1 test model: real tokenizer, real chat template, a model that runs.

The first run builds the model into the real cache (about 20 s); later runs reuse it.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bastion import tiny_model, vendor  # noqa: E402

#: Exactly what Meta's Llama 3.1 template renders for a system + user turn with a generation prompt.
EXPECTED_CHAT = (
    "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
    "Cutting Knowledge Date: December 2023\n"
    "Today Date: 26 Jul 2024\n\n"
    "You are a cloud security architect.<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\n"
    "What does least privilege mean for IAM roles?<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\n"
)
MESSAGES = [
    {"role": "system", "content": "You are a cloud security architect."},
    {"role": "user", "content": "What does least privilege mean for IAM roles?"},
]


@pytest.fixture(scope="module")
def model_dir() -> Path:
    return tiny_model.tiny_model_dir()


@pytest.fixture(scope="module")
def tokenizer(model_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


def _llama_cpp_test_vectors() -> list[tuple[str, list[int]]]:
    """llama.cpp's tokenizer test vectors for the Llama 3 vocabulary (ids without BOS)."""
    gguf = vendor.llama3_vocab_gguf()
    inp, out = Path(f"{gguf}.inp"), Path(f"{gguf}.out")
    assert inp.is_file() and out.is_file(), (
        f"{inp.name}/.out missing: the cache predates their extraction; delete {gguf.parent.parent}"
    )
    texts = inp.read_text(encoding="utf-8").split("\n__ggml_vocab_test__\n")
    if texts and texts[-1] == "":
        texts.pop()
    ids = [[int(x) for x in line.split()] for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(texts) == len(ids) > 40
    return list(zip(texts, ids, strict=True))


@pytest.mark.slow
def test_hello_world(tokenizer: Any) -> None:
    assert tokenizer("Hello world").input_ids == [128000, 9906, 1917]


@pytest.mark.slow
def test_matches_llama_cpp_test_vectors(tokenizer: Any) -> None:
    mismatches = []
    for text, expected in _llama_cpp_test_vectors():
        got = tokenizer(text, add_special_tokens=False).input_ids
        if got != expected:
            mismatches.append((text, got, expected))
        assert tokenizer.decode(got) == text
    assert mismatches == []


@pytest.mark.slow
def test_converter_pre_tokenizer_hash_is_llama_bpe(tokenizer: Any) -> None:
    """The hash llama.cpp's converter computes must be the one it maps to ``llama-bpe``."""
    base = (vendor.llama_cpp_dir() / "conversion" / "base.py").read_text(encoding="utf-8")
    chktxt = next(
        node.value.value
        for node in ast.walk(ast.parse(base))
        if isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "chktxt" for t in node.targets)
        and isinstance(node.value, ast.Constant)
    )
    match = re.search(r'chkhsh == "([0-9a-f]{64})":\s*\n(?:\s*#[^\n]*\n)*\s*res = "llama-bpe"', base)
    assert match, "llama-bpe hash not found in the converter"
    chkhsh = hashlib.sha256(str(tokenizer.encode(chktxt)).encode()).hexdigest()
    assert chkhsh == match.group(1)


@pytest.mark.slow
def test_special_tokens_and_config(tokenizer: Any, model_dir: Path) -> None:
    assert (tokenizer.bos_token, tokenizer.bos_token_id) == ("<|begin_of_text|>", 128000)
    assert (tokenizer.eos_token, tokenizer.eos_token_id) == ("<|eot_id|>", 128009)
    assert (tokenizer.pad_token, tokenizer.pad_token_id) == ("<|finetune_right_pad_id|>", 128004)
    assert len(tokenizer) == 128256
    assert tokenizer.convert_ids_to_tokens([128001, 128008, 128010, 128011, 128255]) == [
        "<|end_of_text|>",
        "<|eom_id|>",
        "<|python_tag|>",
        "<|reserved_special_token_3|>",
        "<|reserved_special_token_247|>",
    ]
    # special tokens in text are matched as single tokens
    assert tokenizer("<|eot_id|>x", add_special_tokens=False).input_ids == [128009, 87]

    tok_config = json.loads((model_dir / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert tok_config["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert tok_config["chat_template"] == vendor.llama31_chat_template()
    assert tok_config["model_max_length"] == 131072
    tok_json = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))
    assert tok_json["model"]["type"] == "BPE" and tok_json["model"]["ignore_merges"] is True
    assert [p["type"] for p in tok_json["pre_tokenizer"]["pretokenizers"]] == ["Split", "ByteLevel"]
    assert len(tok_json["added_tokens"]) == 256

    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert (config["hidden_size"], config["num_hidden_layers"], config["vocab_size"]) == (256, 2, 128256)
    assert config["tie_word_embeddings"] is False  # as Llama 3.1 8B
    assert config["bos_token_id"] == 128000
    assert config["eos_token_id"] == [128001, 128008, 128009]
    gen = json.loads((model_dir / "generation_config.json").read_text(encoding="utf-8"))
    assert gen["eos_token_id"] == [128001, 128008, 128009]


@pytest.mark.slow
def test_chat_template_renders_llama31_format(tokenizer: Any) -> None:
    text = tokenizer.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    assert text == EXPECTED_CHAT
    ids = tokenizer(text, add_special_tokens=False).input_ids
    assert ids.count(128000) == 1 and ids[0] == 128000


@pytest.mark.slow
def test_model_forward_and_generate(model_dir: Path, tokenizer: Any) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    assert model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr()  # untied, as the 8B
    batch = tokenizer(["Hello world", "Zero trust"], return_tensors="pt", padding=True)
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape[0] == 2 and logits.shape[-1] == 128256
    assert torch.isfinite(logits).all()

    prompt = tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**prompt, max_new_tokens=4, do_sample=False)
    n = prompt["input_ids"].shape[1]
    assert out.shape[0] == 1 and n < out.shape[1] <= n + 4
    assert torch.equal(out[0, :n], prompt["input_ids"][0])


@pytest.mark.slow
def test_build_is_cached_and_deterministic(model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert tiny_model.tiny_model_dir() == model_dir
    assert (model_dir / tiny_model.MARKER).is_file()
    # Rebuild only the weights (the tokenizer is checked above): same seed, same bytes.
    monkeypatch.setattr(tiny_model, "build_tokenizer", lambda out_dir: None)
    tiny_model.build_tiny_model(tmp_path / "again", seed=tiny_model.DEFAULT_SEED)
    fresh = (tmp_path / "again" / "model.safetensors").read_bytes()
    assert hashlib.sha256(fresh).digest() == hashlib.sha256((model_dir / "model.safetensors").read_bytes()).digest()


def test_key_changes_with_builder_version(monkeypatch: pytest.MonkeyPatch) -> None:
    before = tiny_model.cache_key()
    monkeypatch.setattr(tiny_model, "BUILDER_VERSION", tiny_model.BUILDER_VERSION + "-next")
    assert tiny_model.cache_key() != before


def test_race_keeps_the_first_finished_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """If another process renames its build into place first, ours is discarded and theirs kept."""
    monkeypatch.setenv("BASTION_CACHE", str(tmp_path))
    target = tmp_path / f"tiny-llama-{tiny_model.cache_key()}"

    def fake_build(out_dir: Path, *, seed: int = 0) -> Path:
        (out_dir / "config.json").write_text("mine")
        target.mkdir()  # the other process wins while we build
        (target / "config.json").write_text("theirs")
        (target / tiny_model.MARKER).write_text("{}")
        return out_dir

    monkeypatch.setattr(tiny_model, "build_tiny_model", fake_build)
    assert tiny_model.tiny_model_dir() == target
    assert (target / "config.json").read_text() == "theirs"
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]
