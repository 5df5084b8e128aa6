"""The layering and the run-folder rule, checked on the source.

- stage packages (harvest, synth, train, evals, export) never import one another;
- the core (bastion/, except the CLI and the runner on top) imports no stage package;
- only bastion/run_folder.py joins run-folder path strings;
- the runner's list holds every stage package's STAGE, in data-flow order.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from conftest import REPO

STAGE_PACKAGES = ("harvest", "synth", "train", "evals", "export")
ROOF = {"bastion/cli.py", "bastion/runner.py", "bastion/__main__.py"}
RUN_FOLDER = "bastion/run_folder.py"
# file names inside a model folder, not the run folder's layout (a base model has a config.json too)
MODEL_FOLDER_FILES = {"config.json"}


def modules(*packages: str) -> list[Path]:
    return sorted(p for package in packages for p in (REPO / package).rglob("*.py") if "tasks" not in p.parts)


def imported_packages(path: Path) -> set[str]:
    """Top-level names of every module ``path`` imports (at any depth of the file)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", STAGE_PACKAGES)
def test_no_stage_package_imports_another(package: str) -> None:
    others = set(STAGE_PACKAGES) - {package}
    offenders = {str(p.relative_to(REPO)): sorted(imported_packages(p) & others) for p in modules(package)}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_core_imports_no_stage_package() -> None:
    core = [p for p in modules("bastion") if str(p.relative_to(REPO)) not in ROOF]
    offenders = {str(p.relative_to(REPO)): sorted(imported_packages(p) & set(STAGE_PACKAGES)) for p in core}
    assert {k: v for k, v in offenders.items() if v} == {}


def layout_names() -> set[str]:
    """String constants that run_folder.py joins onto a path: the run folder's own names."""
    tree = ast.parse((REPO / RUN_FOLDER).read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            for side in (node.left, node.right):
                if isinstance(side, ast.Constant) and isinstance(side.value, str):
                    names.add(side.value)
    return names - MODEL_FOLDER_FILES


def path_joins(path: Path, names: set[str]) -> list[str]:
    """``x / "train.jsonl"``-style joins of a layout name, and any ``<folder>.root / ...``, in one file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not (isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div)):
            continue
        sides = (node.left, node.right)
        literal = any(isinstance(s, ast.Constant) and s.value in names for s in sides)
        root = isinstance(node.left, ast.Attribute) and node.left.attr == "root"
        if literal or root:
            where = path.relative_to(REPO) if path.is_relative_to(REPO) else path
            found.append(f"{where}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_layout_names_are_found() -> None:
    names = layout_names()
    assert {"data", "train.jsonl", "adapter", "merged", "report.md", "manifest.json"} <= names


def test_only_the_run_folder_module_joins_run_folder_paths() -> None:
    names = layout_names()
    code = [p for p in modules("bastion", *STAGE_PACKAGES, "bench") if str(p.relative_to(REPO)) != RUN_FOLDER]
    found = [hit for p in code for hit in path_joins(p, names)]
    assert found == []


def test_the_checker_catches_a_hand_built_path(tmp_path: Path) -> None:
    bad = tmp_path / "bad_module.py"
    bad.write_text('def f(folder, run):\n    return folder.root / "data" / "train.jsonl", run / "adapter"\n')
    assert len(path_joins(bad, layout_names())) == 3


def test_the_stage_list_holds_every_stage_in_data_flow_order() -> None:
    import evals
    import export
    import harvest
    import synth
    import train
    from bastion.runner import STAGES

    assert [s.name for s in STAGES] == ["harvest", "synth", "train", "eval", "export", "eval-gguf"]
    assert STAGES == [harvest.STAGE, synth.STAGE, train.STAGE, evals.STAGE, export.STAGE, evals.GGUF_STAGE]
    seen: set[str] = set()
    for stage in STAGES:
        assert set(stage.reads_from) <= seen, f"{stage.name} reads from a later stage"
        seen.add(stage.name)
