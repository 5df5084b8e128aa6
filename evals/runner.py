"""The eval stage: lm-evaluation-harness on the base model and on base + adapter, same settings,
then a paired comparison per task and per category.

The base weights are loaded once: the base run uses them as they are, then peft wraps the same
model with the adapter for the tuned run. The TaskManager (task index) is built once too.
"""

from __future__ import annotations

import json
import logging
import shlex
from pathlib import Path
from typing import Any

from bastion.atomic import write_json, write_jsonl
from bastion.errors import MissingResourceError
from bastion.manifest import RunFolder
from bastion.models import base_model_path
from bastion.recipe import Recipe

log = logging.getLogger(__name__)

TASKS_DIR = Path(__file__).resolve().parent / "tasks"
#: per-sample metrics read from lm-eval's logged samples, and whether they are 0/1
SAMPLE_METRICS = {"acc": True, "key_point_coverage": False, "rouge_l": False, "exact_match": True}


def eval_device(recipe: Recipe) -> str:
    """``eval.device``, with 'auto' following ``train.device``."""
    device = recipe.eval["device"]
    if device == "auto":
        device = "cpu" if recipe.train["device"] == "cpu" else "cuda"
    return device


def lm_eval_settings(recipe: Recipe) -> dict[str, Any]:
    """The settings both runs share (identical prompts: chat template + the recipe's system prompt)."""
    e = recipe.eval
    return {
        "tasks": list(e["tasks"]),
        "num_fewshot": e["num_fewshot"],
        "limit": e["limit"],
        "batch_size": e["batch_size"],
        "apply_chat_template": True,
        "fewshot_as_multiturn": e["num_fewshot"] > 0,
        "system_instruction": recipe.system_prompt,
        "gen_kwargs": {"max_gen_toks": e["max_gen_tokens"]},
        "random_seed": e["seed"],
        "numpy_random_seed": e["seed"],
        "torch_random_seed": e["seed"],
        "fewshot_random_seed": e["seed"],
        "log_samples": True,
    }


def _bank_metadata(recipe: Recipe) -> dict[str, str]:
    banks = recipe.eval["banks"]
    return {f"{kind}_bank": str(recipe.resolve_path(path)) for kind, path in banks.items() if path}


def include_paths(recipe: Recipe) -> list[str]:
    """Bastion's task folder plus the recipe's own (bring your own benchmark)."""
    paths = [str(TASKS_DIR)]
    for extra in recipe.eval["task_paths"]:
        folder = recipe.resolve_path(extra)
        if not folder.is_dir():
            raise MissingResourceError(f"{recipe.path}: eval.task_paths: folder {folder} does not exist")
        paths.append(str(folder))
    return paths


def make_task_manager(recipe: Recipe) -> Any:
    """One TaskManager for both runs; lm-eval's own task index is only built when a task needs it."""
    from lm_eval.tasks import TaskManager

    ours = TaskManager(include_path=include_paths(recipe), include_defaults=False, metadata=_bank_metadata(recipe))
    if all(task in ours.all_tasks for task in recipe.eval["tasks"]):
        return ours
    return TaskManager(include_path=include_paths(recipe), metadata=_bank_metadata(recipe))


def reproduce_command(recipe: Recipe, base: str, adapter: Path | None, out: Path) -> str:
    """The plain `lm_eval` command line that runs the same evaluation."""
    s = lm_eval_settings(recipe)
    model_args = f"pretrained={base}" + (f",peft={adapter}" if adapter else "")
    parts = [
        "lm_eval",
        "--model",
        "hf",
        "--model_args",
        model_args,
        "--tasks",
        ",".join(s["tasks"]),
        "--include_path",
        ",".join(include_paths(recipe)),
        "--num_fewshot",
        str(s["num_fewshot"]),
        "--batch_size",
        str(s["batch_size"]),
        "--device",
        eval_device(recipe),
        "--apply_chat_template",
        "--system_instruction",
        s["system_instruction"],
        "--gen_kwargs",
        f"max_gen_toks={recipe.eval['max_gen_tokens']}",
        "--seed",
        str(recipe.eval["seed"]),
        "--log_samples",
        "--output_path",
        str(out),
    ]
    if s["limit"] is not None:
        parts += ["--limit", str(s["limit"])]
    if _bank_metadata(recipe):
        parts += ["--metadata", json.dumps(_bank_metadata(recipe))]
    return shlex.join(parts)


def evaluate_model(lm: Any, recipe: Recipe, task_manager: Any) -> dict[str, Any]:
    """One lm-eval run with the shared settings."""
    from lm_eval import simple_evaluate

    s = lm_eval_settings(recipe)
    result: dict[str, Any] = simple_evaluate(model=lm, task_manager=task_manager, **s)
    return result


def save_run(result: dict[str, Any], out: Path) -> dict[str, list[dict[str, Any]]]:
    """Write lm-eval's results JSON and per-sample logs; return the samples by task."""
    out.mkdir(parents=True, exist_ok=True)
    samples = result.pop("samples", {}) or {}
    write_json(out / "results.json", json.loads(json.dumps(result, default=str)))
    for task, rows in samples.items():
        write_jsonl(out / f"samples_{task}.jsonl", json.loads(json.dumps(rows, default=str)))
    return samples


def per_question(samples: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, dict[str, Any]]]:
    """task -> question id -> {category, metrics...} from lm-eval's logged samples."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for task, rows in samples.items():
        table = out.setdefault(task, {})
        for row in rows:
            doc = row.get("doc", {})
            qid = str(doc.get("id", row.get("doc_id")))
            metrics = {m: float(row[m]) for m in SAMPLE_METRICS if m in row and row[m] is not None}
            table[qid] = {"category": doc.get("category", "all"), "doc": doc, **metrics}
    return out


def evaluate_gguf(recipe: Recipe, folder: RunFolder, task_manager: Any, eval_dir: Path) -> dict[str, Any]:
    """The same tasks on the exported GGUF (the Modelfile's quantisation) through llama-cpp-python's server."""
    from evals.gguf_lm import ChatGGUFLM, gguf_server
    from export.runtime import find_gguf

    gguf = find_gguf(recipe, folder)
    merged = folder.root / "export" / "merged"
    log.info("eval: GGUF %s through llama-cpp-python's server", gguf.name)
    with gguf_server(gguf) as base_url:
        lm = ChatGGUFLM(base_url=base_url, tokenizer_path=str(merged), max_gen_toks=recipe.eval["max_gen_tokens"])
        return save_run(evaluate_model(lm, recipe, task_manager), eval_dir / "gguf")


def run_eval(recipe: Recipe, folder: RunFolder, **_: Any) -> dict[str, Any]:
    """Stage entry point."""
    from evals.compare import build_report

    adapter = folder.root / "train" / "adapter"
    if not (adapter / "adapter_config.json").is_file():
        raise MissingResourceError(f"no adapter in {adapter}: run `bastion train {recipe.path.name}` first")
    eval_dir = folder.stage_dir("eval")
    base = base_model_path(recipe)
    device = eval_device(recipe)

    import torch
    from lm_eval.models.huggingface import HFLM
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    task_manager = make_task_manager(recipe)
    tokenizer = AutoTokenizer.from_pretrained(base, revision=recipe.base_model["revision"])
    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    model = AutoModelForCausalLM.from_pretrained(base, revision=recipe.base_model["revision"], dtype=dtype)
    model.to(device)  # type: ignore[arg-type]  # transformers' stub types .to() for dtypes only
    model.eval()
    runs: dict[str, dict[str, Any]] = {}
    commands: dict[str, str] = {}
    if recipe.eval["compare_base"]:
        log.info("eval: base model %s", base)
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=recipe.eval["batch_size"], device=device)
        runs["base"] = save_run(evaluate_model(lm, recipe, task_manager), eval_dir / "base")
        commands["base"] = reproduce_command(recipe, base, None, eval_dir / "base")
    log.info("eval: tuned model (base + adapter %s)", adapter)
    tuned = PeftModel.from_pretrained(model, str(adapter))
    tuned.eval()
    # HFLM accepts any loaded model object (a PeftModel here), though its hint names PreTrainedModel
    lm = HFLM(pretrained=tuned, tokenizer=tokenizer, batch_size=recipe.eval["batch_size"], device=device)  # type: ignore[arg-type]
    runs["tuned"] = save_run(evaluate_model(lm, recipe, task_manager), eval_dir / "tuned")
    commands["tuned"] = reproduce_command(recipe, base, adapter, eval_dir / "tuned")
    if recipe.eval["gguf"]:
        runs["gguf"] = evaluate_gguf(recipe, folder, task_manager, eval_dir)
        commands["gguf"] = (
            "(Python API) evals.gguf_lm.ChatGGUFLM against llama-cpp-python's server on the exported GGUF"
        )
    report = build_report(recipe, folder, {k: per_question(v) for k, v in runs.items()}, commands, eval_dir)
    log.info("eval: report in %s", eval_dir / "report.md")
    return {"report": str(eval_dir / "report.md"), "summary": report["summary"]}
