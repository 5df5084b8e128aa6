"""The run folder ``runs/<name>/`` and its manifest: recipe hash, versions, commit, stage timings."""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib.metadata
import json
import logging
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bastion import __version__
from bastion.atomic import write_json
from bastion.logs import redact
from bastion.paths import REPO_ROOT, runs_dir
from bastion.recipe import Recipe

log = logging.getLogger(__name__)

TRACKED_PACKAGES = (
    "torch",
    "transformers",
    "tokenizers",
    "axolotl",
    "peft",
    "accelerate",
    "bitsandbytes",
    "datasets",
    "trl",
    "lm_eval",
    "llama_cpp_python",
    "trafilatura",
    "datasketch",
    "textstat",
    "protego",
)


def package_versions(names: tuple[str, ...] = TRACKED_PACKAGES) -> dict[str, str]:
    """Installed versions of the packages that shape results (absent ones are left out)."""
    out: dict[str, str] = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def git_commit() -> str | None:
    """The repository's HEAD commit, with ``-dirty`` when the tree has changes; None outside git."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("-dirty" if dirty else "")


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def now_iso() -> str:
    """Current UTC time, ISO 8601 with seconds."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


@dataclass
class RunFolder:
    """``runs/<recipe name>/``: every stage writes its files here and records itself in the manifest."""

    root: Path

    @classmethod
    def for_recipe(cls, recipe: Recipe, base: Path | None = None) -> RunFolder:
        root = (base or runs_dir()) / recipe.name
        root.mkdir(parents=True, exist_ok=True)
        folder = cls(root)
        folder._record_recipe(recipe)
        return folder

    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.json"

    def stage_dir(self, stage: str) -> Path:
        """The folder of one stage (``data`` for harvest, else the stage's name), created."""
        path = self.root / ("data" if stage == "harvest" else stage)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def read_manifest(self) -> dict[str, Any]:
        if not self.manifest_path.exists():
            return {"stages": {}}
        try:
            return json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            broken = self.manifest_path.with_suffix(".json.broken")
            self.manifest_path.replace(broken)
            log.warning("manifest %s was unreadable; kept as %s and started afresh", self.manifest_path, broken)
            return {"stages": {}}

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        write_json(self.manifest_path, json.loads(redact(json.dumps(manifest))))

    def _record_recipe(self, recipe: Recipe) -> None:
        manifest = self.read_manifest()
        manifest["recipe"] = {"name": recipe.name, "path": str(recipe.path), "sha256": recipe.sha256}
        manifest["bastion_version"] = __version__
        manifest["git_commit"] = git_commit()
        manifest.setdefault("created", now_iso())
        manifest.setdefault("stages", {})
        self.write_manifest(manifest)

    def stage_started(self, stage: str, recipe: Recipe) -> None:
        manifest = self.read_manifest()
        manifest["stages"][stage] = {
            "status": "running",
            "started": now_iso(),
            "section_hash": recipe.section_hash(_section_of(stage)),
            "versions": package_versions(),
        }
        self.write_manifest(manifest)

    def stage_finished(self, stage: str, status: str, seconds: float, details: dict[str, Any] | None = None) -> None:
        manifest = self.read_manifest()
        entry = manifest["stages"].setdefault(stage, {})
        entry.update({"status": status, "finished": now_iso(), "seconds": round(seconds, 3)})
        entry.update(details or {})
        self.write_manifest(manifest)

    def stage_entry(self, stage: str) -> dict[str, Any]:
        return dict(self.read_manifest().get("stages", {}).get(stage, {}))


def _section_of(stage: str) -> str:
    return stage
