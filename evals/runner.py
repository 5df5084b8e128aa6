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
from bastion.models import base_model_path
from bastion.recipe import Recipe
from bastion.run_folder import RunFolder, default_gguf_kind
from evals import TASKS_DIR

log = logging.getLogger(__name__)

#: per-sample metrics read from lm-eval's logged samples, and whether they are 0/1
SAMPLE_METRICS = {"acc": True, "key_point_coverage": False, "rouge_l": False, "exact_match": True}
#: the domain-perplexity task over the harvest's held-out pages (evals/tasks/heldout)
HELDOUT_TASK = "heldout_domain"
#: its per-page values in lm-eval's samples: metric -> [log-likelihood, words or bytes]
ROLLING_METRICS = ("bits_per_byte", "word_perplexity")


def eval_device(recipe: Recipe) -> str:
    """``eval.device``, with 'auto' following ``train.device``."""
    device = recipe.eval["device"]
    if device == "auto":
        device = "cpu" if recipe.train["device"] == "cpu" else "cuda"
    return device


def uses_heldout(recipe: Recipe, folder: RunFolder) -> bool:
    """True when the recipe asks for domain perplexity and the harvest held pages out."""
    return bool(recipe.eval["heldout"]) and folder.heldout.is_file() and folder.heldout.stat().st_size > 0


def eval_tasks(recipe: Recipe, folder: RunFolder) -> list[str]:
    """The recipe's tasks, plus the held-out domain text when there is some."""
    tasks = list(recipe.eval["tasks"])
    if uses_heldout(recipe, folder) and HELDOUT_TASK not in tasks:
        tasks.append(HELDOUT_TASK)
    return tasks


def lm_eval_settings(recipe: Recipe, folder: RunFolder) -> dict[str, Any]:
    """The settings both runs share (identical prompts: chat template + the recipe's system prompt)."""
    e = recipe.eval
    return {
        "tasks": eval_tasks(recipe, folder),
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


def task_metadata(recipe: Recipe, folder: RunFolder) -> dict[str, str]:
    """lm-eval ``--metadata``: the recipe's own banks and the held-out pages' file."""
    banks = recipe.eval["banks"]
    metadata = {f"{kind}_bank": str(recipe.resolve_path(path)) for kind, path in banks.items() if path}
    if uses_heldout(recipe, folder):
        metadata["heldout_pages"] = str(folder.heldout)
    return metadata


def include_paths(recipe: Recipe) -> list[str]:
    """Bastion's task folder plus the recipe's own (bring your own benchmark)."""
    paths = [str(TASKS_DIR)]
    for extra in recipe.eval["task_paths"]:
        folder = recipe.resolve_path(extra)
        if not folder.is_dir():
            raise MissingResourceError(f"{recipe.path}: eval.task_paths: folder {folder} does not exist")
        paths.append(str(folder))
    return paths


def make_task_manager(recipe: Recipe, folder: RunFolder) -> Any:
    """One TaskManager for both runs; lm-eval's own task index is only built when a task needs it."""
    from lm_eval.tasks import TaskManager

    metadata = task_metadata(recipe, folder)
    ours = TaskManager(include_path=include_paths(recipe), include_defaults=False, metadata=metadata)
    if all(task in ours.all_tasks for task in eval_tasks(recipe, folder)):
        return ours
    return TaskManager(include_path=include_paths(recipe), metadata=metadata)


def vllm_model_args(recipe: Recipe, base: str, adapter: Path | None) -> dict[str, Any]:
    """lm-eval's ``vllm`` model arguments: tensor and data parallel from the recipe, the adapter as
    ``lora_local_path`` with a ``max_lora_rank`` that holds the recipe's LoRA rank (vLLM's default is 16)."""
    from bastion.vllm import max_lora_rank

    e = recipe.eval
    args: dict[str, Any] = {
        "pretrained": base,
        "revision": recipe.base_model["revision"],
        "trust_remote_code": recipe.base_model["trust_remote_code"],
        "dtype": "auto",
        "tensor_parallel_size": e["tensor_parallel_size"],
        "data_parallel_size": e["data_parallel_size"],
        "gpu_memory_utilization": e["gpu_memory_utilization"],
        "max_model_len": recipe.train["sequence_len"],
        "max_gen_toks": e["max_gen_tokens"],
        "seed": e["seed"],
    }
    if adapter is not None:
        args |= {"lora_local_path": str(adapter), "max_lora_rank": max_lora_rank(recipe.train["lora"]["r"])}
    return args


def reproduce_command(recipe: Recipe, folder: RunFolder, base: str, adapter: Path | None, out: Path) -> str:
    """The plain `lm_eval` command line that runs the same evaluation."""
    s = lm_eval_settings(recipe, folder)
    model_args = f"pretrained={base}" + (f",peft={adapter}" if adapter else "")
    if recipe.eval["backend"] == "vllm":
        model_args = ",".join(f"{k}={v}" for k, v in vllm_model_args(recipe, base, adapter).items() if v is not None)
    parts = [
        "lm_eval",
        "--model",
        recipe.eval["backend"],
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
    if task_metadata(recipe, folder):
        parts += ["--metadata", json.dumps(task_metadata(recipe, folder))]
    return shlex.join(parts)


def evaluate_model(
    lm: Any, recipe: Recipe, folder: RunFolder, task_manager: Any, tasks: list[str] | None = None
) -> dict[str, Any]:
    """One lm-eval run with the shared settings (``tasks``: a subset of them)."""
    from lm_eval import simple_evaluate

    quiet_git_hash()
    s = lm_eval_settings(recipe, folder)
    if tasks is not None:
        s["tasks"] = [t for t in s["tasks"] if t in tasks]
    result: dict[str, Any] = simple_evaluate(model=lm, task_manager=task_manager, **s)
    return result


def quiet_git_hash() -> None:
    """lm-eval records ``git describe`` of the current directory and lets git print "fatal: not a git
    repository" outside a checkout; have it record Bastion's own commit instead, quietly."""
    import lm_eval.evaluator

    from bastion.manifest import git_commit

    lm_eval.evaluator.get_git_commit_hash = git_commit


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
            metrics: dict[str, Any] = {m: float(row[m]) for m in SAMPLE_METRICS if m in row and row[m] is not None}
            # rolling log-likelihood: [log-likelihood, units] per page
            metrics |= {m: [float(v) for v in row[m]] for m in ROLLING_METRICS if isinstance(row.get(m), list | tuple)}
            table[qid] = {"category": doc.get("category", "all"), "doc": doc, **metrics}
    return out


def run_eval(recipe: Recipe, folder: RunFolder, **_: Any) -> dict[str, Any]:
    """Stage entry point: the base model, then the same weights with the adapter, then the report."""
    from evals.compare import build_report

    base = base_model_path(recipe)
    adapter = folder.require_adapter(base)
    folder.eval_dir.mkdir(parents=True, exist_ok=True)
    device = eval_device(recipe)
    if recipe.eval["backend"] == "vllm":
        return _run_eval_vllm(recipe, folder, base, adapter)

    import torch
    from lm_eval.models.huggingface import HFLM
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    task_manager = make_task_manager(recipe, folder)
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
        runs["base"] = save_run(evaluate_model(lm, recipe, folder, task_manager), folder.eval_run("base"))
        commands["base"] = reproduce_command(recipe, folder, base, None, folder.eval_run("base"))
    log.info("eval: tuned model (base + adapter %s)", adapter)
    tuned = PeftModel.from_pretrained(model, str(adapter))
    tuned.eval()
    # HFLM accepts any loaded model object (a PeftModel here), though its hint names PreTrainedModel
    lm = HFLM(pretrained=tuned, tokenizer=tokenizer, batch_size=recipe.eval["batch_size"], device=device)  # type: ignore[arg-type]
    runs["tuned"] = save_run(evaluate_model(lm, recipe, folder, task_manager), folder.eval_run("tuned"))
    commands["tuned"] = reproduce_command(recipe, folder, base, adapter, folder.eval_run("tuned"))
    report = build_report(recipe, folder, {k: per_question(v) for k, v in runs.items()}, commands)
    log.info("eval: report in %s", folder.eval_report_md)
    return {"report": str(folder.eval_report_md), "summary": report["summary"]}


def _run_eval_vllm(recipe: Recipe, folder: RunFolder, base: str, adapter: Path) -> dict[str, Any]:
    """The same runs through lm-eval's ``vllm`` model: one engine with LoRA enabled serves both, the base run
    without the adapter's request and the tuned run with it."""
    import importlib.util

    from bastion.vllm import VLLM_VERSION
    from evals.compare import build_report

    if importlib.util.find_spec("vllm") is None:
        raise MissingResourceError(
            f"eval.backend is 'vllm' in {recipe.path} but vllm is not installed: on a CUDA machine "
            f"`pip install vllm=={VLLM_VERSION}`, or set eval.backend: hf"
        )
    from lm_eval.models.vllm_causallms import VLLM

    task_manager = make_task_manager(recipe, folder)
    lm = VLLM(batch_size="auto", **vllm_model_args(recipe, base, adapter))
    with_adapter = lm.lora_request  # lm-eval sends it with every request when lora_local_path is set
    runs: dict[str, dict[str, Any]] = {}
    commands: dict[str, str] = {}
    for name, request, path in (("base", None, None), ("tuned", with_adapter, adapter)):
        if name == "base" and not recipe.eval["compare_base"]:
            continue
        log.info("eval: %s model through vLLM (%s)", name, base if path is None else f"base + adapter {path}")
        lm.lora_request = request
        runs[name] = save_run(evaluate_model(lm, recipe, folder, task_manager), folder.eval_run(name))
        commands[name] = reproduce_command(recipe, folder, base, path, folder.eval_run(name))
    report = build_report(recipe, folder, {k: per_question(v) for k, v in runs.items()}, commands)
    log.info("eval: report in %s", folder.eval_report_md)
    return {"report": str(folder.eval_report_md), "summary": report["summary"], "backend": "vllm"}


def load_samples(run_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """The per-sample logs ``save_run`` wrote, by task."""
    prefix = "samples_"
    return {
        path.stem[len(prefix) :]: [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
        for path in sorted(run_dir.glob(f"{prefix}*.jsonl"))
    }


def run_gguf_eval(recipe: Recipe, folder: RunFolder, **_: Any) -> dict[str, Any]:
    """Stage entry point: the eval tasks on the exported GGUF through llama-cpp-python's server, compared
    question by question with the tuned HF model's answers from the eval stage."""
    from bastion.llama_server import loopback_server
    from evals.compare import build_gguf_report
    from evals.gguf_lm import ChatGGUFLM

    gguf = folder.require_gguf(default_gguf_kind(recipe))
    merged = folder.require_merged()
    tuned = load_samples(folder.eval_run("tuned"))
    if not tuned:
        raise MissingResourceError(
            f"no tuned-model samples in {folder.eval_run('tuned')}: run `bastion eval {folder.recipe_arg}` first"
        )
    folder.gguf_eval_dir.mkdir(parents=True, exist_ok=True)
    task_manager = make_task_manager(recipe, folder)
    log.info("eval-gguf: %s through llama-cpp-python's server", gguf.name)
    extra = ["--logits_all", "True", "--n_threads", "2"]
    with loopback_server(gguf, extra=extra) as base_url:
        lm = ChatGGUFLM(
            base_url=base_url, tokenizer_path=str(merged), max_gen_toks=recipe.eval["max_gen_tokens"], gguf_path=gguf
        )
        tasks = recipe.eval["gguf_tasks"]
        samples = save_run(evaluate_model(lm, recipe, folder, task_manager, tasks), folder.gguf_eval_dir)
    report = build_gguf_report(recipe, folder, gguf, per_question(tuned), per_question(samples))
    log.info("eval-gguf: report in %s", folder.gguf_eval_report_md)
    return {"gguf": gguf.name, "report": str(folder.gguf_eval_report_md), "summary": report["summary"]}
