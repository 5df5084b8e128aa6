"""What a stage is: a name, what it reads and writes in the run folder, and its entry point.

Each stage package (``harvest``, ``train``, ``evals``, ``export``) exports a ``STAGE`` object; the
runner (``bastion.runner``) runs a list of them in data-flow order. Adding a stage is one package
with its ``STAGE``, one entry in ``bastion.runner.STAGES`` and its recipe section.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bastion.recipe import Recipe, RecipeCheck
from bastion.run_folder import RunFolder

EntryPoint = Callable[..., dict[str, Any]]
PathsOf = Callable[[Recipe, RunFolder], list[Path]]


def _always(_: Recipe) -> bool:
    return True


def _nothing(_: Recipe, __: RunFolder) -> list[Path]:
    return []


@dataclass(frozen=True)
class StageOption:
    """A command-line option of one stage, passed to its entry point: a flag (``bastion train --dry-run``)
    or, with a ``type``, a value (``bastion train --node-rank 1``; None when not given)."""

    flag: str  # e.g. "--dry-run"; the keyword argument is its name with dashes as underscores
    help: str
    type: Any = None  # None: a flag; else the value's type (int, str) for the command line
    envvar: tuple[str, ...] = ()  # environment variables read, in order, when the option is not given

    @property
    def keyword(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")


@dataclass(frozen=True)
class Stage:
    """One step of the chain.

    ``reads_from`` names the earlier stages whose outputs this one reads: it starts only when each
    of them finished successfully and its outputs are still the ones it recorded. ``inputs`` lists
    the files and folders it reads (run-folder files, source files, task folders); with its recipe
    ``sections`` they make its inputs hash, which decides whether a rerun can be skipped.
    ``outputs`` are what later stages read: recorded on success, moved aside on failure.
    ``check`` validates what the stage needs of the recipe beyond the schema (files it names, eval
    task names, Axolotl keys) without a GPU or model weights; ``bastion validate`` runs every stage's.
    """

    name: str
    help: str
    run: EntryPoint  # (recipe, folder, **options) -> details for the manifest
    sections: tuple[str, ...]
    reads_from: tuple[str, ...] = ()
    inputs: PathsOf = _nothing
    outputs: PathsOf = _nothing
    enabled: Callable[[Recipe], bool] = _always
    options: tuple[StageOption, ...] = field(default_factory=tuple)
    check: RecipeCheck | None = None
