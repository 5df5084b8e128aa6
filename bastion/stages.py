"""The four stages, run in order, each recorded in the run folder's manifest."""

from __future__ import annotations

import hashlib
import importlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bastion.errors import BastionError, NotImplementedStageError
from bastion.manifest import RunFolder, file_sha256
from bastion.recipe import Recipe

log = logging.getLogger(__name__)

StageFn = Callable[..., dict[str, Any]]

#: stage name -> "module:function" of its entry point, or the issue that will build it.
STAGES: dict[str, str] = {
    "harvest": "harvest.pipeline:run_harvest",
    "train": "bastion.train:run_train",
    "eval": "evals.runner:run_eval",
    "export": "export.pipeline:run_export",
}


def stage_function(stage: str) -> StageFn:
    """The entry point of ``stage``; raise NotImplementedStageError for a stage not built yet."""
    target = STAGES[stage]
    if ":" not in target:
        raise NotImplementedStageError(f"the {stage} stage is not implemented yet ({target})")
    module_name, func_name = target.split(":")
    fn: StageFn = getattr(importlib.import_module(module_name), func_name)
    return fn


def stage_inputs_hash(stage: str, recipe: Recipe, folder: RunFolder) -> str:
    """Hash of everything a stage reads: its recipe section and the previous stage's files."""
    digest = hashlib.sha256(recipe.section_hash(stage).encode())
    paths: list[Path] = []
    if stage == "harvest":
        for source in recipe.harvest["sources"]:
            if source["kind"] in ("local", "served") and source.get("path"):
                root = recipe.resolve_path(source["path"])
                paths += sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
    elif stage == "train":
        paths.append(folder.root / "data" / "train.jsonl")
    else:
        paths += [folder.root / "train" / "adapter" / "adapter_model.safetensors", folder.root / "data" / "train.jsonl"]
        if stage == "eval":
            from evals.runner import TASKS_DIR

            paths += sorted(p for p in TASKS_DIR.rglob("*") if p.is_file() and p.suffix in (".yaml", ".jsonl", ".py"))
    for path in paths:
        digest.update(str(path).encode())
        digest.update(file_sha256(path).encode() if path.is_file() else b"missing")
    return digest.hexdigest()


def is_up_to_date(stage: str, recipe: Recipe, folder: RunFolder) -> bool:
    """True when the stage's last run succeeded on exactly the current inputs."""
    entry = folder.stage_entry(stage)
    return entry.get("status") == "ok" and entry.get("inputs_hash") == stage_inputs_hash(stage, recipe, folder)


def run_stage(stage: str, recipe: Recipe, folder: RunFolder, **options: Any) -> dict[str, Any]:
    """Run one stage, recording start, end, duration, its inputs' hash and its result in the manifest."""
    fn = stage_function(stage)
    if options.get("dry_run"):
        return fn(recipe, folder, **options) or {}
    inputs_hash = stage_inputs_hash(stage, recipe, folder)
    log.info("%s: starting (recipe %s, run folder %s)", stage, recipe.name, folder.root)
    folder.stage_started(stage, recipe)
    start = time.monotonic()
    try:
        details = fn(recipe, folder, **options) or {}
    except BastionError as exc:
        folder.stage_finished(stage, "failed", time.monotonic() - start, {"error": str(exc)})
        raise
    except KeyboardInterrupt:
        folder.stage_finished(stage, "interrupted", time.monotonic() - start)
        raise
    except Exception as exc:
        folder.stage_finished(stage, "failed", time.monotonic() - start, {"error": repr(exc)})
        raise
    seconds = time.monotonic() - start
    folder.stage_finished(stage, "ok", seconds, {**details, "inputs_hash": inputs_hash})
    log.info("%s: done in %.1f s", stage, seconds)
    return details


def run_all(
    recipe: Recipe, folder: RunFolder, stages: list[str] | None = None, force: tuple[str, ...] = ()
) -> dict[str, str]:
    """Run the stages in order, skipping those whose inputs are unchanged since their last success
    (``force`` reruns the named ones); a failure stops the chain."""
    outcome: dict[str, str] = {}
    for stage in stages or list(STAGES):
        if stage not in force and "all" not in force and is_up_to_date(stage, recipe, folder):
            log.info(
                "%s: up to date (inputs unchanged since its last run), skipped; --force %s reruns it", stage, stage
            )
            outcome[stage] = "up to date"
            continue
        try:
            run_stage(stage, recipe, folder)
        except NotImplementedStageError as exc:
            log.warning("%s: skipped: %s", stage, exc)
            outcome[stage] = "not implemented"
            continue
        outcome[stage] = "ok"
    return outcome
