"""The export stage: merge -> f16 GGUF -> quantised GGUFs -> verification -> Modelfile, card, SHA256SUMS."""

from __future__ import annotations

import gc
import logging
import os
import time
from pathlib import Path
from typing import Any

from bastion.atomic import write_json, write_text
from bastion.errors import ToolError
from bastion.gguf_model import open_gguf
from bastion.jsonl import read_jsonl
from bastion.models import base_model_path
from bastion.recipe import Recipe
from bastion.run_folder import RunFolder
from export import verify
from export.card import render_card, write_sha256sums
from export.convert import ConverterProcess, quantize
from export.merge import load_merged, save_merged

log = logging.getLogger(__name__)


def run_export(recipe: Recipe, folder: RunFolder, **_: Any) -> dict[str, Any]:
    """Stage entry point.

    llama.cpp's converter starts in a child process at once and imports its libraries while this
    process merges the adapter; while it converts, the merged model computes the reference answers
    the verification compares the f16 GGUF with.
    """
    base = base_model_path(recipe)
    adapter = folder.require_adapter(base)
    out = folder.export_dir
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    with ConverterProcess(folder.convert_log, base_model=base) as converter:
        t0 = time.monotonic()
        dtype = "bfloat16" if recipe.export["outtype"] == "bf16" else "float16"
        model, tokenizer = load_merged(base, adapter, revision=recipe.base_model["revision"], dtype=dtype)
        merged = save_merged(model, tokenizer, folder.merged)
        timings["merge"] = time.monotonic() - t0
        t0 = time.monotonic()
        first_path = folder.gguf(recipe.export["outtype"])
        converter.start(merged, first_path, outtype=recipe.export["outtype"], metadata=gguf_metadata(recipe))
        reference = verify.hf_reference(
            model,
            tokenizer,
            recipe.system_prompt,
            recipe.export["smoke_prompts"],
            perplexity_texts(folder, tokenizer, recipe.system_prompt),
            threads=max(1, (os.cpu_count() or 2) - 1),  # the converter has a core of its own
        )
        del model
        gc.collect()
        timings["reference_answers"] = time.monotonic() - t0
        first = converter.wait()
        timings["convert"] = time.monotonic() - t0
    t0 = time.monotonic()
    quants = {
        q: quantize(first, folder.gguf(q), q, log_path=folder.quantize_log) for q in recipe.export["quantizations"]
    }
    timings["quantize"] = time.monotonic() - t0
    t0 = time.monotonic()
    verification = verify_export(recipe, reference, first, quants)
    timings["verify"] = time.monotonic() - t0
    verification["timings_seconds"] = {k: round(v, 2) for k, v in timings.items()}
    write_json(folder.verification, verification)
    files = [first, *quants.values()]
    if recipe.export["ollama"]["enabled"]:
        files.append(write_modelfile(recipe, folder, quants, first))
    write_text(folder.model_card, render_card(recipe, folder, files, verification))
    files += [folder.model_card, folder.verification]
    write_sha256sums(folder.sha256sums, files)
    if not verification["passed"]:
        raise ToolError(
            f"export verification failed: {'; '.join(verification['failures'])} (details in {folder.verification})"
        )
    log.info("export: %s", summary_line(verification))
    return {
        "files": [p.name for p in files],
        "verification": {k: verification[k] for k in ("passed", "f16", "perplexity", "stops_at_eot")},
    }


def gguf_metadata(recipe: Recipe) -> dict[str, object]:
    """Metadata written into the GGUF (general.* keys the converter accepts)."""
    return {
        "general.name": recipe.name,
        "general.finetune": recipe.name,
        "general.description": f"{recipe.description} Built by Bastion from recipe {recipe.path.name} "
        f"(sha256 {recipe.sha256}).".strip(),
        "general.source_url": recipe.base_model["id"],
        "general.tags": ["bastion", recipe.name],
    }


def write_modelfile(recipe: Recipe, folder: RunFolder, quants: dict[str, Path], first: Path) -> Path:
    """The Ollama Modelfile next to the GGUFs."""
    from export.modelfile import render_modelfile

    chosen = recipe.export["ollama"]["quantization"]
    target = quants.get(chosen) if chosen else (next(iter(quants.values()), None))
    target = target or first
    path = folder.modelfile
    write_text(
        path,
        render_modelfile(
            target.name,
            recipe.system_prompt,
            recipe.export["ollama"]["num_ctx"],
            recipe.export["ollama"]["temperature"],
        ),
    )
    return path


def verify_export(recipe: Recipe, reference: verify.Reference, first: Path, quants: dict[str, Path]) -> dict[str, Any]:
    """Everything export/verify.py checks, with pass/fail against the recipe's thresholds."""
    budget = recipe.export["perplexity_tokens"]
    n_ctx = verify.context_needed(reference, budget)
    llm = open_gguf(first, n_ctx=n_ctx)
    agreements = verify.compare_f16(llm, reference)
    metadata = dict(llm.metadata)
    texts = reference.held_out
    ppl = {first.name: verify.perplexity(llm, texts, budget)}
    result: dict[str, Any] = {
        "f16_file": first.name,
        "f16": {
            "token_agreement": round(min(a.teacher_forced for a in agreements), 4),
            "free_running_prefix_agreement": round(min(a.free_prefix for a in agreements), 4),
            "max_logit_diff": round(max(a.max_logit_diff for a in agreements), 5),
            "logit_tolerance": verify.LOGIT_TOLERANCE,
            "per_prompt": [a.__dict__ for a in agreements],
        },
        "prompt_matches_training": verify.prompt_matches_training(llm, recipe.system_prompt, reference),
        "stops_at_eot": verify.stops_at_eot(llm),
        "metadata": {
            k: metadata.get(k)
            for k in (
                "general.name",
                "general.description",
                "tokenizer.ggml.pre",
                "tokenizer.ggml.eos_token_id",
                "tokenizer.ggml.bos_token_id",
            )
        },
        "has_chat_template": bool(metadata.get("tokenizer.chat_template")),
    }
    del llm
    for name, path in quants.items():
        qllm = open_gguf(path, n_ctx=n_ctx)
        ppl[path.name] = verify.perplexity(qllm, texts, budget)
        result.setdefault("quant_file_types", {})[name] = _model_desc(qllm)
        del qllm
    base_ppl = ppl[first.name]
    result["perplexity"] = {
        n: {
            "perplexity": round(v, 4),
            "ratio_to_f16": round(v / base_ppl, 4),
            "size_mib": round((first.parent / n).stat().st_size / 2**20, 2),
        }
        for n, v in ppl.items()
    }
    result["held_out_texts"] = len(texts)
    result["perplexity_tokens"] = budget
    failures = []
    if result["f16"]["token_agreement"] < recipe.export["min_token_agreement"]:
        failures.append(
            f"token agreement {result['f16']['token_agreement']} < "
            f"export.min_token_agreement {recipe.export['min_token_agreement']}"
        )
    if result["f16"]["max_logit_diff"] > verify.LOGIT_TOLERANCE:
        failures.append(f"max logit difference {result['f16']['max_logit_diff']} > {verify.LOGIT_TOLERANCE}")
    if not result["prompt_matches_training"]:
        failures.append("the GGUF's chat template does not give the training prompt")
    if not result["stops_at_eot"]["ok"]:
        failures.append(f"generation does not stop at <|eot_id|>: {result['stops_at_eot']}")
    if not result["has_chat_template"]:
        failures.append("the GGUF carries no chat template")
    result["failures"] = failures
    result["passed"] = not failures
    return result


def _model_desc(llm: Any) -> str:
    """llama.cpp's description of a loaded model, e.g. 'llama ?B Q4_K - Medium'."""
    import ctypes

    import llama_cpp

    buf = ctypes.create_string_buffer(256)
    llama_cpp.llama_model_desc(llm.model, buf, ctypes.sizeof(buf))
    return buf.value.decode()


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [row for _, row in read_jsonl(path)] if path.is_file() else []


def perplexity_texts(folder: RunFolder, tokenizer: Any, system_prompt: str) -> list[str]:
    """What the quantisations' perplexity is measured on: the held-out pages, else (with
    harvest.heldout.fraction 0) a slice of the training records."""
    pages = _jsonl(folder.heldout)
    if pages:
        return verify.held_out_texts(pages, tokenizer)
    log.warning("export: no held-out pages (harvest.heldout.fraction is 0); perplexity on training records")
    return verify.record_texts(_jsonl(folder.train_data), tokenizer, system_prompt)


def summary_line(v: dict[str, Any]) -> str:
    """One line for the log and the demo."""
    ppl = ", ".join(f"{n} ppl x{p['ratio_to_f16']}" for n, p in v["perplexity"].items())
    return (
        f"verification {'passed' if v['passed'] else 'FAILED'}: token agreement {v['f16']['token_agreement']}, "
        f"max logit diff {v['f16']['max_logit_diff']}, prompt = training format: {v['prompt_matches_training']}, "
        f"stops at <|eot_id|>: {v['stops_at_eot']['ok']}; {ppl}"
    )
