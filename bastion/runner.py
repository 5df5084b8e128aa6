"""The stage runner: runs stages in data-flow order, records each in the manifest, and refuses to
start a stage whose inputs come from a failed, missing or stale run.

For each stage the manifest keeps its status, timings, the hash of its inputs (recipe sections plus
the files it declares it reads) and the fingerprints of its outputs. A stage whose inputs hash is
unchanged since its last success is skipped by ``bastion all``; a stage that fails has its outputs
moved to ``failed/<stage>/``, so nothing a later stage reads is partial or stale.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from typing import Any

import evals
import export
import harvest
import synth
import train
from bastion.errors import BastionError, StaleStageError
from bastion.manifest import fingerprint
from bastion.recipe import Recipe
from bastion.run_folder import RunFolder
from bastion.stage import Stage

log = logging.getLogger(__name__)

#: Every stage, in data-flow order.
STAGES: list[Stage] = [harvest.STAGE, synth.STAGE, train.STAGE, evals.STAGE, export.STAGE, evals.GGUF_STAGE]


def stage_named(name: str) -> Stage:
    """The stage called ``name``."""
    for stage in STAGES:
        if stage.name == name:
            return stage
    raise KeyError(name)


def inputs_hash(stage: Stage, recipe: Recipe, folder: RunFolder) -> str:
    """Hash of everything ``stage`` reads: its recipe sections, the base model, the system prompt,
    and the fingerprint of each file or folder it declares."""
    payload = {
        "sections": {name: _section(recipe.data, name) for name in stage.sections},
        "base_model": recipe.base_model,
        "system_prompt": recipe.system_prompt,
    }
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode())
    for path in stage.inputs(recipe, folder):
        digest.update(f"{path}\0{fingerprint(path)}\n".encode())
    return digest.hexdigest()


def _section(data: dict[str, Any], dotted: str) -> Any:
    """A recipe section or one key of it (``train.sequence_len``)."""
    value: Any = data
    for key in dotted.split("."):
        value = value.get(key) if isinstance(value, dict) else None
    return value


def outputs_fingerprints(stage: Stage, recipe: Recipe, folder: RunFolder) -> dict[str, str]:
    """Fingerprint of each output of ``stage``, by its path relative to the run folder."""
    return {str(p.relative_to(folder.root)): fingerprint(p) for p in stage.outputs(recipe, folder)}


def upstream_runs(stage: Stage, folder: RunFolder) -> dict[str, str | None]:
    """The run id of each stage ``stage`` reads from, as the manifest has it now."""
    return {name: folder.stage_entry(name).get("run_id") for name in stage.reads_from}


def is_up_to_date(stage: Stage, recipe: Recipe, folder: RunFolder) -> bool:
    """True when the stage's last run succeeded on exactly the current inputs, after the last run of each
    stage it reads from, and its outputs are untouched."""
    entry = folder.stage_entry(stage.name)
    return (
        entry.get("status") == "ok"
        and entry.get("inputs_hash") == inputs_hash(stage, recipe, folder)
        and entry.get("upstream") == upstream_runs(stage, folder)
        and entry.get("outputs") == outputs_fingerprints(stage, recipe, folder)
    )


def check_upstream(stage: Stage, recipe: Recipe, folder: RunFolder) -> None:
    """Refuse to start ``stage`` unless every stage it reads from finished successfully on the
    inputs it would see now, and left the outputs ``stage`` is about to read unchanged."""
    for name in stage.reads_from:
        upstream = stage_named(name)
        if not upstream.enabled(recipe):
            continue
        entry = folder.stage_entry(name)
        rerun = f"run `bastion {name} {folder.recipe_arg}` first"
        status = entry.get("status")
        if status is None:
            raise StaleStageError(f"{stage.name} reads what {name} writes, and {name} has not run yet: {rerun}")
        if status != "ok":
            error = f" ({entry['error']})" if entry.get("error") else ""
            raise StaleStageError(
                f"{stage.name} reads what {name} writes, and its last run ended '{status}'{error}: {rerun}"
            )
        if entry.get("inputs_hash") != inputs_hash(upstream, recipe, folder):
            raise StaleStageError(
                f"{stage.name} reads what {name} writes, and {name}'s inputs changed since it ran "
                f"(recipe section or files): {rerun}"
            )
        if entry.get("outputs") != outputs_fingerprints(upstream, recipe, folder):
            raise StaleStageError(
                f"{stage.name} reads what {name} writes, and {name}'s outputs changed or vanished since it "
                f"ran (in {folder.root}): {rerun}"
            )


def run_stage(stage: Stage, recipe: Recipe, folder: RunFolder, **options: Any) -> dict[str, Any]:
    """Run one stage after checking what it reads; record start, end, inputs and outputs in the manifest.

    A failing stage's outputs are moved to ``failed/<stage>/`` and the error says where.
    """
    if options.get("dry_run") or options.get("node_rank"):
        # a dry run records nothing; nor does a worker node of a multi-node run (node 0 records the stage)
        return stage.run(recipe, folder, **options) or {}
    check_upstream(stage, recipe, folder)
    digest = inputs_hash(stage, recipe, folder)
    log.info("%s: starting (recipe %s, run folder %s)", stage.name, recipe.name, folder.root)
    folder.stage_started(stage.name, digest)
    start = time.monotonic()
    try:
        details = stage.run(recipe, folder, **options) or {}
    except BaseException as exc:
        seconds = time.monotonic() - start
        interrupted = isinstance(exc, KeyboardInterrupt)
        status = "interrupted" if interrupted else "failed"
        moved = None if interrupted else folder.move_aside(stage.name, stage.outputs(recipe, folder))
        error = str(exc) if isinstance(exc, BastionError) else f"{type(exc).__name__}: {exc}"
        folder.stage_finished(stage.name, status, seconds, {"error": error[:2000], "moved_aside": str(moved or "")})
        if moved is not None and isinstance(exc, BastionError):
            exc.args = (f"{exc}\n{stage.name}: its outputs were moved aside to {moved}",)
        raise
    seconds = time.monotonic() - start
    record = {
        **details,
        "inputs_hash": digest,
        "upstream": upstream_runs(stage, folder),
        "outputs": outputs_fingerprints(stage, recipe, folder),
    }
    folder.stage_finished(stage.name, "ok", seconds, record)
    log.info("%s: done in %.1f s", stage.name, seconds)
    return details


def run_all(recipe: Recipe, folder: RunFolder, force: tuple[str, ...] = ()) -> dict[str, str]:
    """Run every enabled stage in order, skipping those whose inputs and outputs are unchanged since
    their last success (``force`` reruns the named ones, ``all`` every one); a failure stops the chain."""
    outcome: dict[str, str] = {}
    for stage in STAGES:
        if not stage.enabled(recipe):
            outcome[stage.name] = "disabled"
            continue
        if stage.name not in force and "all" not in force and is_up_to_date(stage, recipe, folder):
            log.info(
                "%s: up to date (inputs unchanged since its last run), skipped; --force %s reruns it",
                stage.name,
                stage.name,
            )
            outcome[stage.name] = "up to date"
            continue
        run_stage(stage, recipe, folder)
        outcome[stage.name] = "ok"
    return outcome
