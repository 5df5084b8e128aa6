"""The run folder ``runs/<name>/``: the one module that knows where every file of a run lives.

```
runs/<name>/
  manifest.json        recipe hash, versions, commit; per stage: status, timings, inputs and outputs hashes
  data/                harvest: train.jsonl, sources.jsonl, heldout.jsonl, quality.json/.md, state.sqlite
  synth/               synth: train.jsonl (teacher pairs + extractive mix), provenance.jsonl, report.json/.md,
                       cache.sqlite (every teacher reply; kept when the stage fails)
  train/               axolotl.yaml, messages.jsonl, train.log, output/ (checkpoints), adapter/
  eval/                base/, tuned/ (lm-eval results and samples), report.json/.md, comparison.png
  export/              merged/, <name>-<kind>.gguf, Modelfile, README.md, verification.json, SHA256SUMS, logs
  eval-gguf/           the eval tasks on the exported GGUF, compared with the tuned HF model
  failed/<stage>/      the outputs of a stage that failed, moved aside so no later stage reads them
```

Other modules ask this one for paths (``folder.train_data``, ``folder.require_adapter()``,
``folder.gguf("q4_k_m")``) and never join run-folder path strings themselves (a test checks).
"""

from __future__ import annotations

import json
import logging
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bastion import __version__
from bastion.atomic import write_json
from bastion.errors import BadInputError, MissingResourceError
from bastion.logs import redact
from bastion.manifest import git_commit, now_iso, package_versions
from bastion.paths import RECIPES_DIR, runs_dir
from bastion.recipe import Recipe

log = logging.getLogger(__name__)

GGUF_MAGIC = b"GGUF"
ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")


def recipe_argument(recipe: Recipe) -> str:
    """How a user names ``recipe`` on the command line: its file name under recipes/, else its path."""
    return recipe.path.name if recipe.path.parent == RECIPES_DIR else str(recipe.path)


def safetensors_problem(path: Path) -> str | None:
    """What is wrong with a .safetensors file (unreadable header, data cut short), or None.

    The format: an 8-byte little-endian header length, a JSON header giving each tensor's byte
    range, then the data; a file shorter than the largest range's end was truncated.
    """
    size = path.stat().st_size
    try:
        with path.open("rb") as handle:
            length = int.from_bytes(handle.read(8), "little")
            if length <= 0 or 8 + length > size:
                return f"not a safetensors file or truncated ({size} bytes, header of {length})"
            header = json.loads(handle.read(length))
        ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
    except (ValueError, KeyError, TypeError, OSError) as exc:
        return f"unreadable safetensors header ({exc})"
    needed = 8 + length + max(ends, default=0)
    if size < needed:
        return f"truncated: {size} bytes where its header needs {needed}"
    return None


def same_model(a: str, b: str) -> bool:
    """Whether two base-model references (hub ids or local folders) name the same model."""
    if a == b:
        return True
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    return pa.exists() and pb.exists() and pa.resolve() == pb.resolve()


def synth_enabled(recipe: Recipe) -> bool:
    """Whether the recipe turns teacher synthesis on (then train reads synth's pairs)."""
    return bool((recipe.data.get("synth") or {}).get("enabled"))


def default_gguf_kind(recipe: Recipe) -> str:
    """The GGUF that serve, chat and the GGUF evaluation use: the Modelfile's quantisation, else the first
    quantisation, else the converter's output type."""
    e = recipe.export
    return str(e["ollama"]["quantization"] or (e["quantizations"] or [e["outtype"]])[0])


@dataclass
class RunFolder:
    """``runs/<recipe name>/``: the paths of a run's files, the checks that they exist, and the manifest."""

    root: Path
    recipe_arg: str = "RECIPE"

    @classmethod
    def for_recipe(cls, recipe: Recipe, base: Path | None = None) -> RunFolder:
        """The run folder of ``recipe`` under ``base`` (default ``$BASTION_RUNS`` or ``./runs``), created."""
        root = (base or runs_dir()) / recipe.name
        root.mkdir(parents=True, exist_ok=True)
        folder = cls(root, recipe_argument(recipe))
        folder._record_recipe(recipe)
        return folder

    # -- harvest ------------------------------------------------------------------------------
    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def train_data(self) -> Path:
        """Alpaca JSONL the trainer reads."""
        return self.data_dir / "train.jsonl"

    @property
    def sources(self) -> Path:
        """Provenance of each record of ``train_data``, line by line."""
        return self.data_dir / "sources.jsonl"

    @property
    def heldout(self) -> Path:
        """Pages set aside before sectioning: never trained on, used by eval and export."""
        return self.data_dir / "heldout.jsonl"

    @property
    def quality_json(self) -> Path:
        return self.data_dir / "quality.json"

    @property
    def quality_md(self) -> Path:
        return self.data_dir / "quality.md"

    @property
    def harvest_state(self) -> Path:
        """The harvest's SQLite checkpoint (resume after a kill)."""
        return self.data_dir / "state.sqlite"

    # -- synth --------------------------------------------------------------------------------
    @property
    def synth_dir(self) -> Path:
        return self.root / "synth"

    @property
    def synth_pairs(self) -> Path:
        """Alpaca JSONL written by synth: the teacher's kept pairs and the extractive mix."""
        return self.synth_dir / "train.jsonl"

    @property
    def synth_provenance(self) -> Path:
        """Provenance of each record of ``synth_pairs``, line by line."""
        return self.synth_dir / "provenance.jsonl"

    @property
    def synth_cache(self) -> Path:
        """Every teacher reply, keyed by chunk, prompt template, teacher settings and seed (SQLite)."""
        return self.synth_dir / "cache.sqlite"

    @property
    def synth_report_json(self) -> Path:
        return self.synth_dir / "report.json"

    @property
    def synth_report_md(self) -> Path:
        return self.synth_dir / "report.md"

    def training_records(self, recipe: Recipe) -> Path:
        """The Alpaca JSONL train reads: synth's pairs when ``synth.enabled``, else harvest's records."""
        return self.synth_pairs if synth_enabled(recipe) else self.train_data

    # -- train --------------------------------------------------------------------------------
    @property
    def train_dir(self) -> Path:
        return self.root / "train"

    @property
    def axolotl_config(self) -> Path:
        return self.train_dir / "axolotl.yaml"

    @property
    def train_messages(self) -> Path:
        """The records in chat form, as Axolotl reads them."""
        return self.train_dir / "messages.jsonl"

    @property
    def train_output(self) -> Path:
        """Axolotl's output_dir (checkpoints)."""
        return self.train_dir / "output"

    @property
    def train_prepared(self) -> Path:
        """Axolotl's dataset_prepared_path."""
        return self.train_dir / "prepared"

    @property
    def train_log(self) -> Path:
        return self.train_dir / "train.log"

    def train_node_log(self, node_rank: int) -> Path:
        """The trainer's log on node ``node_rank`` > 0 of a multi-node run (node 0 writes ``train_log``)."""
        return self.train_dir / f"train.node{node_rank}.log"

    @property
    def train_lengths(self) -> Path:
        """Sample lengths measured by the training process before it trains."""
        return self.train_dir / "lengths.json"

    @property
    def adapter(self) -> Path:
        return self.train_dir / "adapter"

    # -- eval ---------------------------------------------------------------------------------
    @property
    def eval_dir(self) -> Path:
        return self.root / "eval"

    def eval_run(self, model: str) -> Path:
        """lm-eval's results and samples of one model (``base``, ``tuned``)."""
        return self.eval_dir / model

    @property
    def eval_report_json(self) -> Path:
        return self.eval_dir / "report.json"

    @property
    def eval_report_md(self) -> Path:
        return self.eval_dir / "report.md"

    @property
    def eval_plot(self) -> Path:
        return self.eval_dir / "comparison.png"

    # -- export -------------------------------------------------------------------------------
    @property
    def export_dir(self) -> Path:
        return self.root / "export"

    @property
    def merged(self) -> Path:
        """The merged 16-bit Hugging Face model."""
        return self.export_dir / "merged"

    def gguf(self, kind: str) -> Path:
        """One exported GGUF: ``<name>-<kind>.gguf`` (kind: f16, bf16, q8_0, q4_k_m, ...)."""
        return self.export_dir / f"{self.root.name}-{kind}.gguf"

    def ggufs(self) -> list[Path]:
        """Every GGUF in the export folder."""
        return sorted(self.export_dir.glob("*.gguf")) if self.export_dir.is_dir() else []

    @property
    def modelfile(self) -> Path:
        return self.export_dir / "Modelfile"

    @property
    def model_card(self) -> Path:
        return self.export_dir / "README.md"

    @property
    def verification(self) -> Path:
        return self.export_dir / "verification.json"

    @property
    def sha256sums(self) -> Path:
        return self.export_dir / "SHA256SUMS"

    @property
    def convert_log(self) -> Path:
        return self.export_dir / "convert.log"

    @property
    def quantize_log(self) -> Path:
        return self.export_dir / "quantize.log"

    # -- eval of the GGUF ---------------------------------------------------------------------
    @property
    def gguf_eval_dir(self) -> Path:
        return self.root / "eval-gguf"

    @property
    def gguf_eval_report_json(self) -> Path:
        return self.gguf_eval_dir / "report.json"

    @property
    def gguf_eval_report_md(self) -> Path:
        return self.gguf_eval_dir / "report.md"

    # -- failed outputs -----------------------------------------------------------------------
    def failed_dir(self, stage: str) -> Path:
        """Where the outputs of a failed ``stage`` are moved so that no later stage reads them."""
        return self.root / "failed" / stage

    def move_aside(self, stage: str, paths: list[Path]) -> Path | None:
        """Move the existing ``paths`` into ``failed/<stage>/`` (replacing an older failure); None if none exist."""
        present = [p for p in paths if p.exists()]
        if not present:
            return None
        target = self.failed_dir(stage)
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        for path in present:
            dest = target / path.relative_to(self.root)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(path), str(dest))
        return target

    # -- checks -------------------------------------------------------------------------------
    def _rerun(self, stage: str) -> str:
        return f"run `bastion {stage} {self.recipe_arg}` first"

    def require_train_data(self) -> Path:
        """``train_data``, or a MissingResourceError naming the command that makes it."""
        if not self.train_data.is_file():
            raise MissingResourceError(f"no training data {self.train_data}: {self._rerun('harvest')}")
        return self.train_data

    def require_training_records(self, recipe: Recipe) -> Path:
        """``training_records(recipe)``, or a MissingResourceError naming the stage that writes it."""
        path = self.training_records(recipe)
        if not path.is_file():
            stage = "synth" if synth_enabled(recipe) else "harvest"
            raise MissingResourceError(f"no training data {path}: {self._rerun(stage)}")
        return path

    def require_heldout(self) -> Path:
        """``heldout``, or a MissingResourceError naming the command that makes it."""
        if not self.heldout.is_file():
            raise MissingResourceError(f"no held-out pages {self.heldout}: {self._rerun('harvest')}")
        return self.heldout

    def require_adapter(self, base_model: str | None = None) -> Path:
        """The trained adapter folder, checked before any model runs: its weights and config exist, the
        weights file is complete, and (given ``base_model``) it was trained on that base model."""
        missing = [name for name in ADAPTER_FILES if not (self.adapter / name).is_file()]
        if missing:
            raise MissingResourceError(
                f"no adapter in {self.adapter} ({', '.join(missing)} missing): {self._rerun('train')}"
            )
        weights, config_path = (self.adapter / name for name in ADAPTER_FILES)
        problem = safetensors_problem(weights)
        if problem:
            raise BadInputError(f"{weights}: {problem}; train again with `bastion train {self.recipe_arg}`")
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
            trained_on = str(config["base_model_name_or_path"])
        except (ValueError, KeyError, TypeError) as exc:
            raise BadInputError(f"{config_path}: not a peft adapter config ({exc})") from None
        if base_model is not None and not same_model(trained_on, base_model):
            raise BadInputError(
                f"{config_path}: the adapter was trained on '{trained_on}', but the recipe's base model is "
                f"'{base_model}'; train again with `bastion train {self.recipe_arg}`"
            )
        return self.adapter

    def require_merged(self) -> Path:
        """The merged model written by export (its tokenizer serves the GGUF evaluation)."""
        if not (self.merged / "config.json").is_file():
            raise MissingResourceError(f"no merged model in {self.merged}: {self._rerun('export')}")
        return self.merged

    def require_gguf(self, kind: str) -> Path:
        """One exported GGUF, checked to be a GGUF file, or an error naming the command that rebuilds it."""
        path = self.gguf(kind)
        if not path.is_file():
            found = [p.name for p in self.ggufs()]
            hint = f"exported files: {', '.join(found)}" if found else self._rerun("export")
            raise MissingResourceError(f"no GGUF {path}; {hint}")
        with path.open("rb") as handle:
            magic = handle.read(4)
        if magic != GGUF_MAGIC or path.stat().st_size < 1024:
            raise BadInputError(
                f"{path} is not a GGUF file (starts with {magic!r}, {path.stat().st_size} bytes); "
                f"export again with `bastion export {self.recipe_arg} --force`"
            )
        return path

    # -- manifest -----------------------------------------------------------------------------
    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.json"

    def read_manifest(self) -> dict[str, Any]:
        if not self.manifest_path.exists():
            return {"stages": {}}
        try:
            manifest: dict[str, Any] = json.loads(self.manifest_path.read_text(encoding="utf-8"))
            return manifest
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

    def stage_started(self, stage: str, inputs_hash: str) -> None:
        manifest = self.read_manifest()
        manifest["stages"][stage] = {
            "status": "running",
            "run_id": uuid.uuid4().hex,
            "started": now_iso(),
            "inputs_hash": inputs_hash,
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
