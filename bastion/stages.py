"""The four stages, run in order, each recorded in the run folder's manifest."""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable
from typing import Any

from bastion.errors import BastionError, NotImplementedStageError
from bastion.manifest import RunFolder
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


def run_stage(stage: str, recipe: Recipe, folder: RunFolder, **options: Any) -> dict[str, Any]:
    """Run one stage, recording start, end, duration and its result in the manifest."""
    fn = stage_function(stage)
    if options.get("dry_run"):
        return fn(recipe, folder, **options) or {}
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
    folder.stage_finished(stage, "ok", seconds, details)
    log.info("%s: done in %.1f s", stage, seconds)
    return details


def run_all(recipe: Recipe, folder: RunFolder, stages: list[str] | None = None) -> dict[str, str]:
    """Run the stages in order; a stage not built yet is reported and skipped, a failure stops."""
    outcome: dict[str, str] = {}
    for stage in stages or list(STAGES):
        try:
            run_stage(stage, recipe, folder)
        except NotImplementedStageError as exc:
            log.warning("%s: skipped: %s", stage, exc)
            outcome[stage] = "not implemented"
            continue
        outcome[stage] = "ok"
    return outcome
