"""The model card (Hugging Face README format) and SHA256SUMS of the exported files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bastion.manifest import file_sha256
from bastion.recipe import Recipe
from bastion.run_folder import RunFolder


def _json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def _pct(value: Any) -> str:
    return "-" if value is None else f"{100 * float(value):.1f}"


def render_card(recipe: Recipe, folder: RunFolder, files: list[Path], verification: dict[str, Any]) -> str:
    """README.md for the export folder."""
    quality = _json(folder.quality_json)
    train = folder.stage_entry("train")
    report = _json(folder.eval_report_json)
    t = recipe.train
    sources = "\n".join(
        f"- `{s['name']}` ({s['kind']}): " + ", ".join(s.get("start_urls") or [s.get("path") or ""])
        for s in recipe.harvest["sources"]
    )
    per_source = quality.get("records", {}).get("per_source", {})
    dedup = quality.get("dedup", {})
    eval_rows = []
    for task, metrics in (report.get("summary") or {}).items():
        for metric, row in metrics.items():
            if metric == "bits_per_byte":  # held-out domain text: a rate, not a percentage
                continue
            ci = "-" if row.get("ci_low") is None else f"[{_pct(row['ci_low'])}, {_pct(row['ci_high'])}]"
            eval_rows.append(
                f"| {task} | {metric} | {_pct(row.get('base'))} | {_pct(row.get('tuned'))} | "
                f"{_pct(row.get('diff'))} | {ci} | {row.get('verdict')} |"
            )
    head = "| task | metric | base | tuned | diff | 95% CI | verdict |\n|---|---|---:|---:|---:|---|---|\n"
    eval_table = head + "\n".join(eval_rows) if eval_rows else "_No evaluation has been run for this export._"
    for task, d in (report.get("domain") or {}).items():
        b = d["bits_per_byte"]
        if b.get("base") is not None:
            eval_table += (
                f"\n\nHeld-out domain text ({task}: {d['documents']} pages never trained on): "
                f"{b['base']:.4f} -> {b['tuned']:.4f} bits per byte, tuned - base {b['diff']:+.4f} "
                f"(95% CI [{b['ci_low']:+.4f}, {b['ci_high']:+.4f}], {b['verdict']})."
            )
    sizes = "\n".join(f"| `{p.name}` | {p.stat().st_size / 2**20:.1f} MiB |" for p in files if p.suffix == ".gguf")
    ppl = verification.get("perplexity", {})
    ppl_rows = "\n".join(f"| {name} | {v['perplexity']:.3f} | {v['ratio_to_f16']:.4f} |" for name, v in ppl.items())
    front = {
        "base_model": recipe.base_model["id"],
        "library_name": "gguf",
        "license": "other",
        "tags": ["bastion", "gguf", "llama.cpp", "ollama", "cloud-security", "lora"],
        "language": ["en"],
    }
    front_yaml = "\n".join(f"{k}: {json.dumps(v)}" for k, v in front.items())
    return f"""---
{front_yaml}
---

# {recipe.name}

{recipe.description or "A domain-expert model built with Bastion."}

Built by [Bastion](https://github.com/bastion-llm/bastion) from the recipe `{recipe.path.name}`
(sha256 `{recipe.sha256}`).

## Base model

`{recipe.base_model["id"]}` (revision `{recipe.base_model["revision"]}`). Licence: {recipe.base_model["license"]}.
This model is a derivative of the base model and is subject to the base model's licence and acceptable-use policy.

## Training data

{quality.get("records", {}).get("kept", "?")} instruction records harvested from:

{sources}

Records per source: {json.dumps(per_source)}. Pages fetched: {quality.get("pages", {}).get("fetched", "?")};
exact and near duplicates removed: {dedup.get("exact", 0)} / {dedup.get("near", 0)}.

## Training

{t["adapter"].upper()} through Axolotl: r {t["lora"]["r"]}, alpha {t["lora"]["alpha"]}, dropout {t["lora"]["dropout"]},
targets {t["lora"]["target_modules"]}, {t["quantization"]["bits"]}-bit {t["quantization"]["quant_type"]} base,
sequence length {t["sequence_len"]}, learning rate {t["learning_rate"]} ({t["lr_scheduler"]}), seed {t["seed"]}.
Steps: {train.get("steps", "?")}; final train loss {train.get("final_train_loss")},
eval loss {train.get("final_eval_loss")}.
Prompt format: the base model's chat template with the system prompt below (the same at inference).

System prompt:

> {recipe.system_prompt}

## Evaluation (lm-evaluation-harness, base vs tuned, same prompts)

{eval_table}

## Files

| file | size |
|---|---:|
{sizes}

Verification: f16 vs merged model, teacher-forced token agreement
{verification.get("f16", {}).get("token_agreement", "?")}, max logit difference
{verification.get("f16", {}).get("max_logit_diff", "?")}; prompt equals the training format:
{verification.get("prompt_matches_training")}; stops at `<|eot_id|>`: {verification.get("stops_at_eot", {}).get("ok")}.

| GGUF | perplexity ({verification.get("perplexity_tokens", "?")} held-out tokens) | ratio to f16 |
|---|---:|---:|
{ppl_rows}

## Use

```bash
ollama create {recipe.export["ollama"]["model_name"] or recipe.name} -f Modelfile
ollama run {recipe.export["ollama"]["model_name"] or recipe.name}
```

or with llama.cpp / llama-cpp-python on any GGUF above (the chat template is embedded).

## Intended use and limits

An assistant for the domain of the harvested documentation. It can be wrong or out of date: check its
advice against the current official documentation before acting on it, and do not use it as the only
control for security decisions. It inherits the biases and limits of the base model.
"""


def write_sha256sums(out: Path, files: list[Path]) -> Path:
    """``out`` (SHA256SUMS) in the format `sha256sum -c` reads, paths relative to its folder."""
    lines = [f"{file_sha256(p)}  {p.relative_to(out.parent)}" for p in sorted(files)]
    from bastion.atomic import write_text

    write_text(out, "\n".join(lines) + "\n")
    return out
