"""The CLI as a user runs it: a real subprocess, exit codes, no tracebacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO


def bastion(*args: str, cwd: Path = REPO, env_runs: Path | None = None) -> subprocess.CompletedProcess[str]:
    import os

    env = dict(os.environ)
    if env_runs is not None:
        env["BASTION_RUNS"] = str(env_runs)
    return subprocess.run(
        [sys.executable, "-m", "bastion", *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=120
    )


@pytest.mark.parametrize("recipe", ["recipes/llama31-8b.yaml", "recipes/tiny-cpu.yaml", "llama31-8b.yaml"])
def test_validate_ok(recipe: str) -> None:
    proc = bastion("validate", recipe)
    assert proc.returncode == 0, proc.stderr
    assert "valid recipe" in proc.stderr + proc.stdout


def test_validate_three_mistakes_exit_2_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: x\nbase_model: {id: m}\nsystem_prompt: s\ntrian: {}\ntrain:\n  lora: {r: abc}\n  lr_scheduler: cosin\n"
    )
    proc = bastion("--log-json", "validate", str(bad))
    assert proc.returncode == 2
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out
    message = json.loads(out.strip().splitlines()[-1])["message"]
    for needle in ("trian", "did you mean 'train'", "train.lora.r", "train.lr_scheduler"):
        assert needle in message


def test_missing_recipe_exit_3() -> None:
    proc = bastion("validate", "no-such-recipe.yaml")
    assert proc.returncode == 3
    assert "not found" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "command", ["validate", "harvest", "synth", "train", "eval", "export", "eval-gguf", "all", "demo", "serve", "chat"]
)
def test_every_command_has_help(command: str) -> None:
    proc = bastion(command, "--help")
    assert proc.returncode == 0
    assert "Usage:" in proc.stdout and len(proc.stdout.splitlines()) >= 3


def test_manifest_records_recipe_versions_and_commit(tmp_path: Path) -> None:
    from bastion.recipe import load_recipe
    from bastion.run_folder import RunFolder

    recipe = load_recipe("tiny-cpu.yaml")
    folder = RunFolder.for_recipe(recipe, base=tmp_path)
    folder.stage_started("harvest", "0" * 64)
    folder.stage_finished("harvest", "ok", 1.25, {"records": 3})
    manifest = json.loads((tmp_path / "tiny-cpu" / "manifest.json").read_text())
    assert manifest["recipe"]["sha256"] == recipe.sha256
    assert manifest["git_commit"] is None or len(manifest["git_commit"]) >= 40
    entry = manifest["stages"]["harvest"]
    assert entry["status"] == "ok" and entry["seconds"] == 1.25 and entry["records"] == 3
    assert "torch" in entry["versions"]
    assert entry["started"] <= entry["finished"]


def test_fast_exit_keeps_the_status_and_runs_exit_handlers(tmp_path: Path) -> None:
    """`bastion` skips the interpreter's module teardown, but not the exit handlers or the status."""
    script = (
        "import atexit, sys, torch\n"
        "from pathlib import Path\n"
        "import bastion.cli as cli\n"
        f"atexit.register(lambda: Path({str(tmp_path / 'handler-ran')!r}).write_text('yes'))\n"
        "sys.argv = ['bastion', 'validate', 'no-such-recipe.yaml']\n"
        "cli.run()\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3 and "error: recipe 'no-such-recipe.yaml' not found" in proc.stderr
    assert (tmp_path / "handler-ran").read_text() == "yes"


def test_exit_waits_for_a_running_thread(tmp_path: Path) -> None:
    """With a non-daemon thread still at work, `run` leaves through the normal exit, which waits for it."""
    script = (
        "import sys, threading, time\n"
        "from pathlib import Path\n"
        "import bastion.cli as cli\n"
        f"threading.Thread(target=lambda: (time.sleep(1), Path({str(tmp_path / 'done')!r}).write_text('1'))).start()\n"
        "sys.argv = ['bastion', 'validate', 'tiny-cpu.yaml']\n"
        "cli.run()\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "done").read_text() == "1"


def test_runs_dir_option_and_environment_choose_the_run_folder(tmp_path: Path) -> None:
    from bastion.paths import runs_dir

    env = {k: v for k, v in os.environ.items() if k != "BASTION_RUNS"}
    script = "import bastion.cli as c, sys; sys.argv = ['bastion', *sys.argv[1:]]; c.run()"
    for args, expected in (
        (["--runs-dir", str(tmp_path / "a"), "eval", "tiny-cpu.yaml"], tmp_path / "a"),
        (["eval", "tiny-cpu.yaml"], tmp_path / "b"),
    ):
        run_env = env if "--runs-dir" in args else {**env, "BASTION_RUNS": str(tmp_path / "b")}
        proc = subprocess.run(
            [sys.executable, "-c", script, *args],
            cwd=tmp_path,
            env=run_env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 3 and "harvest has not run yet" in proc.stderr, proc.stderr  # refused, but
        assert (expected / "tiny-cpu" / "manifest.json").is_file()  # in the chosen run folder
    assert runs_dir() != tmp_path / "a"  # the option set it for that process only


def test_lm_eval_records_bastions_commit_without_git_noise(tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    import lm_eval.evaluator

    from bastion.manifest import git_commit
    from evals.runner import quiet_git_hash

    monkey = pytest.MonkeyPatch()
    monkey.setattr(lm_eval.evaluator, "get_git_commit_hash", lm_eval.evaluator.get_git_commit_hash)
    monkey.chdir(tmp_path)  # not a git checkout
    try:
        quiet_git_hash()
        assert lm_eval.evaluator.get_git_commit_hash() == git_commit()
        assert "fatal" not in capfd.readouterr().err
    finally:
        monkey.undo()


def test_validate_runs_the_stages_checks(tmp_path: Path) -> None:
    """What used to pass validate and fail later: an Axolotl key typo, a missing source folder, a
    mistyped task name; all reported at once, with a did-you-mean, exit 2."""
    text = (REPO / "recipes" / "tiny-cpu.yaml").read_text()
    text = text.replace("path: corpus/cloudsec-mini", "path: /no/such/folder").replace("[cloudsec]", "[cloudsek]")
    text = text.replace("  axolotl:\n", "  axolotl:\n    lerning_rate: 0.1\n")
    path = tmp_path / "typos.yaml"
    path.write_text(text)
    proc = bastion("validate", str(path))
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr
    assert "harvest.sources[0].path" in err and "/no/such/folder does not exist" in err
    assert "train.axolotl.lerning_rate: unknown Axolotl key" in err and "did you mean 'learning_rate'" in err
    assert "eval.tasks[0]" in err and "did you mean 'cloudsec'" in err
    assert "Traceback" not in err
