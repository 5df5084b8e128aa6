"""docs/recipe.md, the recipe reference, is generated from the schema and kept in step with it."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO

from bastion import docs

SCHEMA = json.loads((REPO / "schemas" / "recipe.schema.json").read_text(encoding="utf-8"))
DOC = REPO / "docs" / "recipe.md"


def _deref(node: dict[str, Any]) -> dict[str, Any]:
    """Resolve '#/$defs/NAME' (the only kind of reference the recipe schema uses)."""
    while "$ref" in node:
        ref = node["$ref"]
        assert ref.startswith("#/$defs/"), ref
        node = {**SCHEMA["$defs"][ref.removeprefix("#/$defs/")], **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def _property_paths(node: dict[str, Any], prefix: str = "") -> dict[str, dict[str, Any]]:
    """Every property of the schema by dotted path (``harvest.sources[].name``), walked independently."""
    out: dict[str, dict[str, Any]] = {}
    for key, raw in node.get("properties", {}).items():
        prop = _deref(raw)
        path = f"{prefix}.{key}" if prefix else key
        out[path] = prop
        out.update(_property_paths(prop, path))
        items = prop.get("items")
        if prop.get("type") == "array" and isinstance(items, dict):
            out.update(_property_paths(_deref(items), f"{path}[]"))
    return out


PATHS = _property_paths(SCHEMA)


def _row(text: str, path: str) -> list[str]:
    """The cells of the table row whose key is ``path``."""
    for line in text.splitlines():
        if line.startswith(f"| `{path}`"):
            return [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
    raise AssertionError(f"no table row for {path}")


def test_committed_reference_is_up_to_date() -> None:
    assert DOC.is_file(), "docs/recipe.md is missing: run `just docs`"
    committed = DOC.read_text(encoding="utf-8")
    assert committed == docs.generate(), (
        "docs/recipe.md is stale (it no longer matches schemas/recipe.schema.json): run `just docs` and commit it"
    )


def test_every_schema_property_path_is_documented() -> None:
    text = docs.generate()
    assert len(PATHS) > 100, "the walk found too few properties; is the schema still using $defs?"
    missing = [p for p in PATHS if f"| `{p}`" not in text]
    assert not missing, f"not in docs/recipe.md: {missing}"


def test_one_section_per_object() -> None:
    text = docs.generate()
    titles = re.findall(r"^#{2,3} `([^`]+)`$", text, re.M)
    assert titles == [
        "base_model",
        "harvest",
        "harvest.sources[]",
        "harvest.politeness",
        "harvest.quality",
        "harvest.dedup",
        "harvest.heldout",
        "harvest.chunking",
        "harvest.instructions",
        "harvest.output",
        "synth",
        "synth.teacher",
        "synth.teacher.serve",
        "synth.question_types",
        "synth.grounding",
        "synth.judge",
        "synth.dedup",
        "train",
        "train.lora",
        "train.quantization",
        "train.tracking",
        "train.axolotl",
        "eval",
        "eval.banks",
        "export",
        "export.ollama",
    ]
    assert "## Top level" in text
    assert "| `train.axolotl.<key>` | any |" in text, "the free-form escape hatch has its own row"
    for anchor in re.findall(r"\]\(#([a-z0-9-]+)\)", text):
        assert f'<a id="{anchor}"></a>' in text, f"link to #{anchor} has no target"


def test_rows_show_type_default_and_allowed_values() -> None:
    text = docs.generate()
    for path, prop in PATHS.items():
        cells = _row(text, path)
        assert len(cells) == 5, f"{path}: {cells}"
        _key, type_, default, allowed, description = cells
        if "default" in prop:
            shown = json.dumps(prop["default"], ensure_ascii=False, separators=(", ", ": ")).replace("|", "\\|")
            assert default == f"`{shown}`", f"{path}: default {default} != {shown}"
        enum = prop.get("enum") or (prop.get("items") or {}).get("enum") or []
        for value in enum:
            shown = value if isinstance(value, str) else json.dumps(value)
            assert f"`{shown}`" in allowed, f"{path}: {value!r} not listed in {allowed}"
        for keyword in ("minimum", "maximum", "exclusiveMinimum"):
            if keyword in prop:
                assert json.dumps(prop[keyword]) in allowed, f"{path}: {keyword} missing from {allowed}"
        if "pattern" in prop:
            assert f"`{prop['pattern']}`" in allowed, path
        assert description != "—", f"{path}: no description"
    assert _row(text, "base_model.max_position_embeddings")[1] == "integer or null"
    assert _row(text, "train.quantization.bits")[1] == "integer or null"
    assert _row(text, "train.lora.target_modules")[1] == "string or array of string"
    assert _row(text, "harvest.sources")[1] == "array of object"
    assert _row(text, "name")[0] == "`name` (required)"


def test_output_is_deterministic_and_marked_generated() -> None:
    first, second = docs.generate(), docs.generate()
    assert first == second
    assert first.startswith(docs.GENERATED_MARKER + "\n")
    assert "just docs" in first.splitlines()[0] and "Do not edit by hand" in first.splitlines()[0]
    assert first.endswith("\n") and not first.endswith("\n\n")
    assert "runs/&lt;name>/" in first, "'<name>' must not become an HTML tag"


def test_main_writes_atomically_and_check_detects_staleness(tmp_path: Path) -> None:
    out = tmp_path / "docs" / "recipe.md"
    assert docs.main(["--check", "--output", str(out)]) == 1, "a missing file is stale"
    assert docs.main(["--output", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == docs.generate()
    assert not [p for p in out.parent.iterdir() if p.name != "recipe.md"], "no temporary file left behind"
    assert docs.main(["--check", "--output", str(out)]) == 0
    out.write_text(out.read_text(encoding="utf-8").replace("Peak learning rate.", "Hand edit."), encoding="utf-8")
    assert docs.main(["--check", "--output", str(out)]) == 1
    assert docs.main(["--output", str(out)]) == 0
    assert docs.main(["--check", "--output", str(out)]) == 0


def test_check_command_line_exits_1_with_a_message_when_stale(tmp_path: Path) -> None:
    stale = tmp_path / "recipe.md"
    stale.write_text("old\n", encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-m", "bastion.docs", "--check", "--output", str(stale)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert "stale" in proc.stderr and "just docs" in proc.stderr, proc.stderr


def test_schema_changes_show_up(tmp_path: Path) -> None:
    schema = json.loads(json.dumps(SCHEMA))
    schema["$defs"]["lora"]["properties"]["r"]["maximum"] = 512
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(schema), encoding="utf-8")
    assert "≤ 512" in _row(docs.generate(path), "train.lora.r")[3]


def test_just_docs_runs_the_generator() -> None:
    just = shutil.which("just") or str(REPO / ".venv" / "bin" / "just")
    if not Path(just).is_file():
        pytest.fail("just is missing: run scripts/setup.sh")
    out = subprocess.run([just, "--dry-run", "docs"], cwd=REPO, capture_output=True, text=True, check=True).stderr
    assert re.search(r"python3?\S* -m bastion\.docs$", out.strip()), out
