"""Secrets never reach logs or manifests: HF_TOKEN (and any hf_... token) is redacted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

from bastion.recipe import load_recipe
from bastion.run_folder import RunFolder

TOKEN = "hf_" + "Zq9" * 10


def test_manifest_redacts_the_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    recipe = load_recipe("tiny-cpu.yaml")
    folder = RunFolder.for_recipe(recipe, base=tmp_path)
    folder.stage_started("train", "0" * 64)
    folder.stage_finished("train", "failed", 1.0, {"error": f"401 for token {TOKEN}", "command": ["x", TOKEN]})
    text = folder.manifest_path.read_text()
    assert TOKEN not in text and "***" in text
    assert json.loads(text)["stages"]["train"]["status"] == "failed"


@pytest.mark.parametrize("log_json", [True, False])
def test_logs_redact_the_token(log_json: bool) -> None:
    code = (
        "import logging; from bastion.logs import setup_logging; "
        f"setup_logging(log_json={log_json}); "
        "import os; logging.getLogger('x').error("
        "'auth failed with %s and hf_abcdefghijklmnopqrstuvwxyz0', os.environ['HF_TOKEN'])"
    )
    env = {**os.environ, "HF_TOKEN": TOKEN}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True)
    assert TOKEN not in out.stderr + out.stdout
    assert "hf_abcdefghijklmnopqrstuvwxyz0" not in out.stderr
    assert "auth failed with ***" in out.stderr


def test_cli_error_messages_redact_the_token(tmp_path: Path) -> None:
    bad = tmp_path / f"{TOKEN}.yaml"
    env = {**os.environ, "HF_TOKEN": TOKEN}
    out = subprocess.run(
        [sys.executable, "-m", "bastion", "validate", str(bad)], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert out.returncode == 3 and TOKEN not in out.stderr and "not found" in out.stderr
