"""Project plumbing: the README's commands, CI, the Justfile and the layout agree."""

from __future__ import annotations

import re
import shutil
import subprocess

from conftest import REPO


def readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    block = re.search(r"<!-- two-commands -->\s*```bash\n(.*?)```", text, re.S)
    assert block, "README.md must hold the two commands in a ```bash block after <!-- two-commands -->"
    return [line for line in block.group(1).splitlines() if line and not line.startswith("#")]


def test_readme_has_exactly_two_commands_and_ci_runs_the_test_one() -> None:
    commands = readme_commands()
    assert len(commands) == 2
    assert "just demo" in commands[0] and "just test" in commands[1]
    ci = (REPO / ".ci" / "run").read_text()
    assert commands[1] in ci.splitlines()


def test_layout_matches_design() -> None:
    for name in (
        "recipes",
        "schemas",
        "bastion",
        "harvest",
        "evals",
        "export",
        "tests",
        "bench",
        "Dockerfile",
        "Justfile",
        "README.md",
        "pyproject.toml",
    ):
        assert (REPO / name).exists(), name


def test_just_lists_every_verb() -> None:
    just = shutil.which("just") or str(REPO / ".venv" / "bin" / "just")
    out = subprocess.run([just, "--list"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    for verb in ("demo", "harvest", "train", "eval", "export", "all", "serve", "chat", "test", "bench"):
        assert re.search(rf"^\s+{verb}\b", out, re.M), verb


def test_just_passes_recipe_after_the_verb() -> None:
    just = shutil.which("just") or str(REPO / ".venv" / "bin" / "just")
    out = subprocess.run(
        [just, "--dry-run", "train", "recipe=llama31-8b.yaml"], cwd=REPO, capture_output=True, text=True, check=True
    ).stderr
    assert re.search(r"bastion train '?llama31-8b.yaml'?$", out.strip()), out
