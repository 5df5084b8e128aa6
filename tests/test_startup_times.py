"""Commands answer at once: ``bastion validate`` within 2 s, a stage's first progress line within 5 s.

Measured on the real console entry point in a subprocess (imports included); the bounds leave
room for a loaded 2-core machine (on an idle one validate takes about 0.7 s and harvest's first
lines come within a second: what is heavy is imported when it is needed).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO

BASTION = [sys.executable, "-c", "from bastion.cli import run; run()"]


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "BASTION_RUNS": str(tmp_path / "runs"), "HF_HUB_OFFLINE": "1"}


def test_validate_answers_within_two_seconds(tmp_path: Path) -> None:
    started = time.monotonic()
    done = subprocess.run(
        [*BASTION, "validate", "tiny-cpu.yaml"],
        cwd=REPO,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    assert "valid recipe" in done.stderr + done.stdout
    assert elapsed < 2.0, f"validate took {elapsed:.2f} s"


@pytest.mark.parametrize("verbose", [False, True])
def test_harvest_prints_its_first_progress_line_within_five_seconds(tmp_path: Path, verbose: bool) -> None:
    """The first lines come at once; with -v, Bastion's own detail and no library's debug lines."""
    cmd = [*BASTION, *(["-v"] if verbose else []), "harvest", "tiny-cpu.yaml"]
    started = time.monotonic()
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=_env(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    lines: list[tuple[float, str]] = []
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append((time.monotonic() - started, line))
            if "loading the tokenizer" in line or len(lines) > 20:
                break
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert lines, "no output"
    first, text = lines[0]
    assert first < 5.0, f"first line after {first:.2f} s: {text}"
    progress = [t for t, line in lines if "harvest: 1 source(s)" in line]
    assert progress and progress[0] < 5.0, lines
    assert not any("DEBUG" in line and ("httpcore" in line or "connect_tcp" in line) for _, line in lines)


def test_verbose_shows_bastions_detail_and_debug_everything() -> None:
    import logging

    from bastion.logs import setup_logging

    root = logging.getLogger()
    before = list(root.handlers)
    try:
        setup_logging(verbose=True)
        setup_logging(verbose=True)  # in-process CLI runs: one handler of ours, not two
        assert len([h for h in root.handlers if h not in before]) == 1
        assert logging.getLogger("harvest.crawl").isEnabledFor(logging.DEBUG)
        assert logging.getLogger("bastion.runner").isEnabledFor(logging.DEBUG)
        for library in ("httpcore", "httpx", "matplotlib.font_manager", "urllib3", "some_library"):
            assert not logging.getLogger(library).isEnabledFor(logging.DEBUG), library
        setup_logging(debug=True)
        assert all(logging.getLogger(n).isEnabledFor(logging.DEBUG) for n in ("httpcore", "harvest", "matplotlib"))
        setup_logging()
        assert not logging.getLogger("harvest").isEnabledFor(logging.DEBUG)
        assert logging.getLogger("harvest").isEnabledFor(logging.INFO)
    finally:
        root.handlers[:] = before
        root.setLevel(logging.WARNING)
