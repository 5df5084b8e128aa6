"""Time from `bastion train` to Axolotl's first optimiser step vs `axolotl train` run directly.

Both run the tiny recipe's rendered config (recipes/tiny-cpu.yaml, real QLoRA on CPU) on the same
harvested data. Each run is timed from process start until its first training-loss line appears
(Axolotl prints ``{'loss': ...}``; Bastion logs it as ``axolotl: ... loss ...``), then stopped.
Rounds alternate (ours, baseline, ours, ...) and the medians are compared.

Goal (issue #4): ours / baseline <= 1.1.
Run: ``python bench/train_overhead.py [--rounds N]``.
"""

# ruff: noqa: T201  (a benchmark prints its results)
from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bastion.run_folder import RunFolder  # noqa: E402
from bench.common import BASTION, bench_env, prepare  # noqa: E402

FIRST_STEP = re.compile(r"\{'loss'|axolotl: .*\bloss \d")


def time_to_first_step(cmd: list[str], env: dict[str, str], timeout: float = 600) -> float:
    """Seconds from start until the first training-loss line; the process is then stopped."""
    start = time.monotonic()
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=REPO, start_new_session=True
    )
    assert proc.stdout is not None
    buffer = b""
    try:
        while time.monotonic() - start < timeout:
            chunk = proc.stdout.read1(65536)
            if not chunk:
                break
            buffer = (buffer + chunk)[-20000:]
            if FIRST_STEP.search(buffer.decode("utf-8", "replace")):
                return time.monotonic() - start
        raise RuntimeError(f"no training step seen from {' '.join(cmd)}:\n{buffer.decode('utf-8', 'replace')[-3000:]}")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        env = bench_env(tmp)
        bastion = BASTION
        prepare(env, ("harvest", "train"))  # a full run writes runs/tiny-cpu/train/axolotl.yaml
        config = RunFolder(Path(tmp) / "runs" / "tiny-cpu").axolotl_config
        axolotl = shutil.which("axolotl", path=str(Path(sys.executable).parent)) or "axolotl"
        baseline_cmd = [axolotl, "train", str(config), "--launcher", "python"]
        ours_cmd = [*bastion, "train", "tiny-cpu.yaml"]
        ours, base = [], []
        for r in range(args.rounds):
            ours.append(time_to_first_step(ours_cmd, env))
            base.append(time_to_first_step(baseline_cmd, env))
            print(f"round {r + 1}: bastion train {ours[-1]:.1f} s, axolotl train {base[-1]:.1f} s to the first step")
    o, b = statistics.median(ours), statistics.median(base)
    ratio = o / b
    print(f"time to first step: bastion train {o:.1f} s, axolotl train directly {b:.1f} s")
    print(
        f"ratio (bastion / axolotl, median of {args.rounds}): {ratio:.2f}x  goal <= 1.1x: "
        f"{'met' if ratio <= 1.1 else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
