"""The train stage: recipe + harvested data -> validated Axolotl config -> ``axolotl train`` -> adapter."""

from __future__ import annotations

import ast
import hashlib
import json
import logging
import os
import re
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import yaml

from bastion.atomic import write_jsonl, write_text
from bastion.chat_format import record_messages
from bastion.errors import BadInputError, MissingResourceError, ToolError
from bastion.manifest import file_sha256, package_versions
from bastion.models import base_model_path
from bastion.recipe import Recipe
from bastion.run_folder import ADAPTER_FILES, RunFolder
from train.axolotl_config import render_config
from train.axolotl_launch import ERROR_PREFIX
from train.launchers import (
    NodePlan,
    dry_run_text,
    launcher_module_args,
    node_command,
    node_plan,
    procs_per_node,
    require_placement,
)
from train.preflight import (
    GIB,
    check_disk,
    check_gated,
    check_gpu,
    check_packages,
    load_records,
    multinode_notes,
    raise_problems,
)

log = logging.getLogger(__name__)

_METRICS = re.compile(r"\{'(?:loss|eval_loss|train_runtime)'.*?\}")


@dataclass
class TrainLog:
    """What the trainer's output told us."""

    losses: list[float] = field(default_factory=list)
    eval_losses: list[float] = field(default_factory=list)
    summary: dict[str, float] = field(default_factory=dict)
    first_step_seconds: float | None = None
    tokens_total: float | None = None
    errors: list[str] = field(default_factory=list)


def run_train(
    recipe: Recipe,
    folder: RunFolder,
    *,
    dry_run: bool = False,
    resume: bool = False,
    node_rank: int | None = None,
    rendezvous: str | None = None,
    **_: Any,
) -> dict[str, Any]:
    """Stage entry point: preflight, render and write the config, launch the trainer, collect the adapter.

    With ``train.nodes`` > 1 every node runs this with its own rank; node 0 collects the adapter.
    """
    plan = node_plan(recipe, node_rank=node_rank, rendezvous=rendezvous)
    if dry_run:
        return dry_run_train(recipe, folder, plan, resume=resume)
    require_placement(plan, folder.recipe_arg)
    train_dir = folder.train_dir
    train_dir.mkdir(parents=True, exist_ok=True)
    data = folder.require_training_records(recipe)
    records = load_records(data)
    base = base_model_path(recipe)
    gated = check_gated(recipe, base)
    if gated:
        raise MissingResourceError(gated)
    model_config = read_model_config(base, recipe)
    cfg = _render(recipe, base, folder, model_config)
    config_text = yaml.safe_dump(cfg, sort_keys=False)
    resume_from = latest_checkpoint(folder.train_output) if resume else None
    command = launch_command(recipe, folder, resume_from=resume_from, plan=plan)
    for note in multinode_notes(recipe, plan, folder.train_output, data):
        log.info("preflight: %s", note)
    raise_problems(
        check_packages(recipe)
        + check_gpu(recipe, model_config)
        + check_disk(train_dir, _checkpoint_bytes(recipe, model_config))
    )
    write_jsonl(folder.train_messages, ({"messages": record_messages(r, recipe.system_prompt)} for r in records))
    write_text(folder.axolotl_config, config_text)
    if plan.launcher == "ray" and plan.host:
        os.environ.setdefault("RAY_ADDRESS", plan.endpoint)  # the driver joins the running Ray cluster
    if plan.is_worker:  # node 0 prepares the output folder and collects the adapter
        log.info("train: node %d of %d: launching %s", plan.node_rank, plan.nodes, shlex.join(command))
        node_log = folder.train_node_log(plan.node_rank or 0)
        trainer = launch(command, node_log, cuda=recipe.train["device"] != "cpu", recipe_arg=folder.recipe_arg)
        return {"node_rank": plan.node_rank, "nodes": plan.nodes, "losses": trainer.log.losses, "command": command}
    if resume and resume_from is None:
        log.warning("--resume: no checkpoint in %s yet; starting from the beginning", folder.train_output)
    elif not resume and folder.train_output.exists():
        shutil.rmtree(folder.train_output)  # a fresh run: old checkpoints would be mixed in

    log.info("train: %d records, config %s", len(records), folder.axolotl_config)
    started = time.monotonic()
    if resume and _finished(recipe, folder):
        steps_done = recipe.train["max_steps"]
        log.info("train: --resume: the run already reached max_steps = %d; nothing left to train", steps_done)
        trainer = TrainerRun(TrainLog(), 0, 0)
    else:
        log.info("train: launching %s", " ".join(command))
        trainer = launch(command, folder.train_log, cuda=recipe.train["device"] != "cpu", recipe_arg=folder.recipe_arg)
    wall = time.monotonic() - started
    adapter = collect_adapter(folder)
    # the whole run's losses (a resumed run's log holds only its own segment)
    losses = _logged(folder.train_output, "loss") or trainer.log.losses
    eval_losses = _logged(folder.train_output, "eval_loss") or trainer.log.eval_losses
    lengths = json.loads(folder.train_lengths.read_text()) if folder.train_lengths.is_file() else {}
    steps = _trained_steps(folder.train_output)
    runtime = trainer.log.summary.get("train_runtime") or wall
    tokens = trainer.log.tokens_total or _tokens_trained(recipe, lengths, steps)
    details = {
        "adapter": str(adapter),
        "data_sha256": file_sha256(data),
        "config_sha256": hashlib.sha256(config_text.encode()).hexdigest(),
        "records": len(records),
        "records_too_long": lengths.get("too_long"),
        "steps": steps,
        "first_train_loss": losses[0] if losses else None,
        "final_train_loss": losses[-1] if losses else None,
        "final_eval_loss": eval_losses[-1] if eval_losses else None,
        "tokens_per_second": round(tokens / runtime, 1) if runtime and tokens else None,
        "wall_seconds": round(wall, 1),
        "seconds_to_first_step": trainer.log.first_step_seconds,
        "peak_rss_gib": round(trainer.peak_rss_bytes / GIB, 2),
        "peak_gpu_gib": round(trainer.peak_gpu_bytes / GIB, 2) if trainer.peak_gpu_bytes else None,
        "versions": package_versions(),
        "command": command,
        "nodes": plan.nodes,
        "processes": plan.world_size,
        "launcher": plan.launcher,
    }
    log.info(
        "train: %d steps, loss %s -> %s, eval loss %s, adapter in %s",
        steps,
        details["first_train_loss"],
        details["final_train_loss"],
        details["final_eval_loss"],
        adapter,
    )
    return details


def dry_run_train(recipe: Recipe, folder: RunFolder, plan: NodePlan, *, resume: bool = False) -> dict[str, Any]:
    """Render and validate the Axolotl config and every node's command, and print them; write nothing.

    Works before any harvest (and without the base model's weights or a token): what is missing is said,
    not fatal, so the config and the commands can be checked first.
    """
    from train.axolotl_config import validate_axolotl_config

    notes: list[str] = []
    data = folder.training_records(recipe)
    if data.is_file():
        notes.append(f"training data: {len(load_records(data))} records in {data}")
    else:
        synth = "" if data == folder.train_data else f" and `bastion synth {folder.recipe_arg}`"
        notes.append(
            f"the training data {data} is not there yet: run `bastion harvest {folder.recipe_arg}`{synth} before "
            "training (the config and commands below are rendered and validated without it)"
        )
    base = base_model_path(recipe)
    model_config: dict[str, Any] = {}
    gated = check_gated(recipe, base)
    if gated:
        notes.append(gated)
    else:
        try:
            model_config = read_model_config(base, recipe)
        except MissingResourceError as exc:
            notes.append(f"{exc}; rendered as model_type 'llama'")
    cfg = _render(recipe, base, folder, model_config)
    validate_axolotl_config(cfg, recipe)
    resume_from = latest_checkpoint(folder.train_output) if resume else None
    module = launcher_module_args(recipe, folder, resume_from=resume_from)
    notes += multinode_notes(recipe, plan, folder.train_output, data)
    problems = check_packages(recipe) + check_gpu(recipe, model_config)
    notes += problems
    sys.stdout.write(
        f"# {folder.axolotl_config} (not written: --dry-run; valid for Axolotl)\n"
        f"{yaml.safe_dump(cfg, sort_keys=False)}\n"
        + dry_run_text(plan, module, folder.axolotl_config, run_id=recipe.name)
        + "".join(f"# preflight: {note}\n" for note in notes)
    )
    for problem in problems:
        log.warning("preflight: %s", problem)
    return {"dry_run": True}


def _render(recipe: Recipe, base: str, folder: RunFolder, model_config: dict[str, Any]) -> dict[str, Any]:
    return render_config(
        recipe,
        base,
        folder,
        model_type=str(model_config.get("model_type", "llama")),
        eot_token=_eot_override(base, model_config),
    )


def read_model_config(base: str, recipe: Recipe) -> dict[str, Any]:
    """The base model's config.json (local folder or hub), without importing transformers."""
    local = Path(base) / "config.json"
    try:
        if not local.is_file():
            from huggingface_hub import hf_hub_download

            local = Path(hf_hub_download(base, "config.json", revision=recipe.base_model["revision"]))
        config: dict[str, Any] = json.loads(local.read_text())
        return config
    except Exception as exc:  # noqa: BLE001 - hub errors come in many types; all mean "cannot read it"
        raise MissingResourceError(
            f"cannot read the config of base model '{base}' (base_model.id in {recipe.path}): {exc}"
        ) from None


def _eot_override(base: str, model_config: dict[str, Any]) -> str | None:
    """Llama 3 base checkpoints end with <|end_of_text|>: train the chat turn's <|eot_id|> explicitly."""
    eos = model_config.get("eos_token_id")
    eos_ids = set(eos) if isinstance(eos, list) else {eos}
    return "<|eot_id|>" if model_config.get("vocab_size") == 128256 and 128009 not in eos_ids else None


def _checkpoint_bytes(recipe: Recipe, model_config: dict[str, Any]) -> float:
    hidden = int(model_config.get("hidden_size", 4096))
    layers = int(model_config.get("num_hidden_layers", 32))
    r = recipe.train["lora"]["r"]
    adapter = layers * r * hidden * 7 * 2 * 4
    return adapter * 4 * 3 + 0.5 * GIB  # weights + optimizer state per checkpoint, 3 kept


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The newest ``checkpoint-N`` folder, if any."""
    found = [p for p in output_dir.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()]
    return max(found, key=lambda p: int(p.name.split("-")[-1])) if found else None


def launch_command(
    recipe: Recipe, folder: RunFolder, resume_from: Path | None = None, plan: NodePlan | None = None
) -> list[str]:
    """This node's command: ``python -m train.axolotl_launch`` for one process; under accelerate or torchrun
    for several (one per GPU, on one node or several; DeepSpeed/FSDP settings come from the config)."""
    plan = plan or node_plan(recipe)
    module = launcher_module_args(recipe, folder, resume_from=resume_from)
    return node_command(plan, plan.node_rank or 0, module, run_id=recipe.name)


@dataclass
class TrainerRun:
    """The finished subprocess: its parsed log and peak memory."""

    log: TrainLog
    peak_rss_bytes: int
    peak_gpu_bytes: int


def launch(command: list[str], log_path: Path, *, cuda: bool, recipe_arg: str = "RECIPE") -> TrainerRun:
    """Run Axolotl, stream its output to the log file and the logger; SIGINT stops it cleanly."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "AXOLOTL_DO_NOT_TRACK": "1"}
    env.setdefault("WANDB_MODE", "disabled")
    parsed = TrainLog()
    gpu_peak = _GpuPeak() if cuda else None
    start = time.monotonic()
    with log_path.open("ab") as sink:
        proc = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        try:
            assert proc.stdout is not None
            _pump(proc.stdout, sink, parsed, start)
            code = proc.wait()
        except KeyboardInterrupt:
            _stop(proc)
            log.error(
                "training interrupted; the log is in %s. Continue from the last checkpoint with "
                "`bastion train %s --resume`",
                log_path,
                recipe_arg,
            )
            raise
        finally:
            if gpu_peak is not None:
                gpu_peak.stop()
    if code == 2 and parsed.errors:
        raise BadInputError("\n".join(parsed.errors))
    if code != 0:
        tail = log_path.read_bytes()[-3000:].decode("utf-8", "replace")
        raise ToolError(f"axolotl train exited with code {code}; log {log_path}, last lines:\n{tail}")
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    return TrainerRun(parsed, rss, gpu_peak.peak if gpu_peak else 0)


def _pump(stream: IO[bytes], sink: IO[bytes], parsed: TrainLog, start: float) -> None:
    buffer = b""
    while chunk := stream.read1(65536) if hasattr(stream, "read1") else stream.read(65536):
        sink.write(chunk)
        sink.flush()
        buffer += chunk
        *lines, buffer = re.split(rb"[\r\n]", buffer)
        for raw in lines:
            _handle_line(raw.decode("utf-8", "replace"), parsed, start)
    if buffer:
        _handle_line(buffer.decode("utf-8", "replace"), parsed, start)


def _handle_line(line: str, parsed: TrainLog, start: float) -> None:
    line = line.strip()
    if not line:
        return
    if line.startswith(ERROR_PREFIX):
        parsed.errors.append(line[len(ERROR_PREFIX) :])
        return
    for match in _METRICS.finditer(line):
        try:
            metrics = ast.literal_eval(match.group(0))
        except (ValueError, SyntaxError):
            continue
        if "tokens/total" in metrics:
            parsed.tokens_total = float(metrics["tokens/total"])
        if "loss" in metrics:
            parsed.losses.append(float(metrics["loss"]))
            if parsed.first_step_seconds is None:
                parsed.first_step_seconds = round(time.monotonic() - start, 2)
        if "eval_loss" in metrics:
            parsed.eval_losses.append(float(metrics["eval_loss"]))
        if "train_runtime" in metrics:
            parsed.summary.update({k: float(v) for k, v in metrics.items() if isinstance(v, int | float)})
        log.info("axolotl: %s", _compact(metrics))
        return
    level = logging.WARNING if ("Error" in line or "Traceback" in line) else logging.DEBUG
    log.log(level, "axolotl: %s", line[:500])


def _compact(metrics: dict[str, Any]) -> str:
    keys = ("epoch", "loss", "eval_loss", "learning_rate", "grad_norm", "train_runtime", "train_loss")
    return ", ".join(f"{k} {metrics[k]}" for k in keys if k in metrics)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Forward SIGINT to the trainer's process group, then escalate if it does not stop."""
    for sig, wait in ((signal.SIGINT, 30), (signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


class _GpuPeak:
    """Polls GPU memory in use (NVML) while the trainer runs."""

    def __init__(self, interval: float = 1.0) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True)
        self._thread.start()

    def _run(self, interval: float) -> None:
        try:
            import pynvml

            pynvml.nvmlInit()
            handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
        except Exception:  # noqa: BLE001 - no NVML: no GPU figure
            return
        while not self._stop.wait(interval):
            used = max(int(pynvml.nvmlDeviceGetMemoryInfo(h).used) for h in handles)
            self.peak = max(self.peak, used)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def collect_adapter(folder: RunFolder) -> Path:
    """Copy the final adapter (and tokenizer files) from Axolotl's output folder to the run's adapter folder."""
    out = folder.train_output
    missing = [name for name in ADAPTER_FILES if not (out / name).is_file()]
    if missing:
        raise ToolError(f"axolotl finished but {', '.join(missing)} is missing in {out}; log {folder.train_log}")
    staging = Path(tempfile.mkdtemp(prefix=".adapter-", dir=folder.train_dir))
    for item in out.iterdir():
        if item.is_file() and not item.name.startswith(("events.", "debug")):
            shutil.copy2(item, staging / item.name)
    if folder.adapter.exists():
        shutil.rmtree(folder.adapter)
    staging.rename(folder.adapter)
    return folder.adapter


def _trainer_state(output_dir: Path) -> dict[str, Any]:
    """The Hugging Face trainer's state of the newest checkpoint (or the output folder), or {}."""
    ckpt = latest_checkpoint(output_dir)
    state = (ckpt / "trainer_state.json") if ckpt else output_dir / "trainer_state.json"
    loaded: dict[str, Any] = json.loads(state.read_text()) if state.is_file() else {}
    return loaded


def _trained_steps(output_dir: Path) -> int:
    return int(_trainer_state(output_dir).get("global_step", 0))


def _logged(output_dir: Path, key: str) -> list[float]:
    """Every value of ``key`` the trainer logged, in order, across resumed segments."""
    return [float(entry[key]) for entry in _trainer_state(output_dir).get("log_history", []) if key in entry]


def _finished(recipe: Recipe, folder: RunFolder) -> bool:
    """A resumed run that already trained ``max_steps`` and saved its final adapter."""
    max_steps = recipe.train["max_steps"]
    saved = all((folder.train_output / name).is_file() for name in ADAPTER_FILES)
    return bool(max_steps) and saved and _trained_steps(folder.train_output) >= max_steps


def _tokens_trained(recipe: Recipe, lengths: dict[str, Any], steps: int) -> float:
    t = recipe.train
    samples = steps * t["micro_batch_size"] * t["gradient_accumulation_steps"] * t["nodes"] * procs_per_node(recipe)
    fitting = max(1, int(lengths.get("samples", 0)) - int(lengths.get("too_long", 0)))
    return samples * float(lengths.get("tokens", 0)) / fitting
