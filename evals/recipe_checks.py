"""The eval stage's checks on a recipe, run when it is loaded (no model, no GPU, no lm-eval import).

- ``eval.task_paths``: each folder exists;
- ``eval.tasks``: each name is a task, group or tag defined in ``evals/tasks`` or a task folder of
  the recipe (a cheap scan of the YAML files' ``task:``, ``group:`` and ``tag:`` lines, the names
  lm-eval's ``TaskManager(include_path=..., include_defaults=False)`` indexes). A name found only
  among lm-eval's own tasks (``mmlu_computer_security``, ``wmdp_cyber``) is accepted with a note:
  the runner falls back to lm-eval's full index for it, and its data comes from the Hugging Face
  hub at eval time (they cannot run offline). Shell-style patterns (``mmlu_*``) must match a known name;
- ``eval.banks``: each file exists and passes ``evals.bank``'s general rules, with the four
  options the ``cloudsec_mcq`` task scores; a bank no listed task reads is refused.
"""

from __future__ import annotations

import fnmatch
import importlib.metadata
import importlib.util
import logging
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

from bastion.atomic import write_text
from bastion.paths import cache_dir
from bastion.recipe import PathParts, path_problem, resolve_in
from evals.bank import check_bank

log = logging.getLogger(__name__)

TASKS_DIR = Path(__file__).resolve().parent / "tasks"
#: which cloudsec tasks read which bank
BANK_TASKS = {"mcq": ("cloudsec", "cloudsec_mcq"), "open": ("cloudsec", "cloudsec_open")}
MAX_TASK_FILES = 20_000  # YAML files scanned per folder
MAX_BANK_PROBLEMS = 10  # bank problems listed per bank; the rest are counted
_KEY = re.compile(r"""^["']?(task|group|tag)["']?\s*:\s*(.*?)\s*$""")
_ITEM = re.compile(r"""^\s+-\s*(.+?)\s*$""")


def check_recipe(data: dict[str, Any], recipe_path: Path) -> list[tuple[PathParts, str]]:
    """Problems with the recipe's eval tasks, task folders and banks (a ``RecipeCheck``)."""
    e = data["eval"]
    folder = recipe_path.parent
    out: list[tuple[PathParts, str]] = []
    folders = [TASKS_DIR]
    for j, value in enumerate(e["task_paths"]):
        if not isinstance(value, str) or path_problem(value, folder):
            continue  # the recipe's own checks report it
        target = resolve_in(folder, value)
        if not target.is_dir():
            what = "is not a folder" if target.exists() else "does not exist"
            out.append((("eval", "task_paths", j), f"got {value!r}: {target} {what}"))
        else:
            folders.append(target)
    task_problems = _task_problems(list(e["tasks"]), folders)
    out += task_problems
    for kind, value in e["banks"].items():
        if value is None or not isinstance(value, str) or path_problem(value, folder):
            continue
        where: PathParts = ("eval", "banks", kind)
        if not task_problems and not any(t in BANK_TASKS[kind] for t in e["tasks"]):
            out.append(
                (where, f"set, but eval.tasks has none of {', '.join(BANK_TASKS[kind])}: the bank would not be used")
            )
            continue
        target = resolve_in(folder, value)
        if not target.is_file():
            out.append((where, f"got {value!r}: {target} {'is not a file' if target.exists() else 'does not exist'}"))
            continue
        problems = check_bank(target, kind)
        out += [(where, f"{target}: {p}") for p in problems[:MAX_BANK_PROBLEMS]]
        if len(problems) > MAX_BANK_PROBLEMS:
            out.append((where, f"{target}: ... and {len(problems) - MAX_BANK_PROBLEMS} more (python -m evals.bank)"))
    return out


def _task_problems(tasks: list[Any], folders: list[Path]) -> list[tuple[PathParts, str]]:
    ours: set[str] = set()
    for f in folders:
        ours |= task_names(f)
    out: list[tuple[PathParts, str]] = []
    for j, task in enumerate(tasks):
        if not isinstance(task, str) or _found(task, ours):
            continue
        builtin = lm_eval_task_names()
        if _found(task, builtin):
            log.info(
                "eval.tasks: %r is one of lm-eval's own tasks; its data is downloaded from the hub at eval time", task
            )
            continue
        shown = ", ".join(str(f) for f in folders)
        close = _close(task, ours | builtin)
        hint = f"; did you mean {close!r}?" if close else f" (tasks there: {', '.join(sorted(ours)[:12])})"
        out.append(
            (
                ("eval", "tasks", j),
                f"got {task!r}: no lm-eval task, group or tag of that name in {shown} or lm-eval's own tasks{hint}",
            )
        )
    return out


def _found(task: str, names: set[str]) -> bool:
    if any(c in task for c in "*?["):
        return any(fnmatch.fnmatchcase(n, task) for n in names)
    return task in names


def _close(task: str, names: set[str]) -> str | None:
    import difflib

    hits = difflib.get_close_matches(task, sorted(names), n=1, cutoff=0.75)
    return hits[0] if hits else None


def task_names(folder: Path) -> set[str]:
    """Task, group and tag names defined by the YAML files under ``folder`` (hidden folders skipped)."""
    names: set[str] = set()
    count = 0
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "__")))
        for name in filenames:
            if not (name.endswith((".yaml", ".yml")) or name.endswith("_yaml")):
                continue
            count += 1
            if count > MAX_TASK_FILES:
                log.warning(
                    "%s: more than %d YAML files; the rest are not scanned for task names", folder, MAX_TASK_FILES
                )
                return names
            try:
                with open(os.path.join(dirpath, name), "rb") as fh:
                    text = fh.read(1 << 20).decode("utf-8", errors="replace")
            except OSError:
                continue
            names |= scan_task_names(text)
    return names


@lru_cache(maxsize=1)
def lm_eval_task_names() -> set[str]:
    """Names of lm-eval's own tasks, from its installed task folder (empty if lm-eval is absent).

    Scanning its ~13,000 YAML files takes 0.2-3 s, so the names are kept in the cache folder per
    lm-eval version.
    """
    spec = importlib.util.find_spec("lm_eval")
    if spec is None or spec.origin is None:
        return set()
    try:
        version = importlib.metadata.version("lm_eval")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    cached = cache_dir() / f"lm_eval-{version}-task-names.txt"
    try:
        return set(cached.read_text(encoding="utf-8").split())
    except OSError:
        pass
    names = task_names(Path(spec.origin).parent / "tasks")
    try:
        write_text(cached, "\n".join(sorted(n for n in names if n.split() == [n])) + "\n")
    except OSError as exc:
        log.debug("lm-eval task names not cached: %s", exc)
    return names


def scan_task_names(text: str) -> set[str]:
    """The names one lm-eval task file defines: ``task: name``, ``group: name`` and ``tag:`` (one
    name or a list). A ``task:`` list (a group's members) names no new task."""
    names: set[str] = set()
    lines = text.splitlines()
    for i, line in enumerate(lines):
        m = _KEY.match(line)
        if not m:
            continue
        key, value = m.group(1), m.group(2).split(" #", 1)[0].strip()
        if value.startswith("!"):
            continue
        if value.startswith("["):
            if key == "tag":
                names |= {_unquote(v) for v in value.strip("[]").split(",") if v.strip()}
            continue
        if value:
            names.add(_unquote(value))
        elif key == "tag":
            for item in lines[i + 1 :]:
                hit = _ITEM.match(item)
                if not hit:
                    break
                names.add(_unquote(hit.group(1)))
    names.discard("")
    return names


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value
