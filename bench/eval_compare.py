"""Wall time of `bastion eval` (base + tuned in one process) vs two plain `lm_eval` runs.

Setup (not timed): harvest and train the tiny recipe. Then, side by side:

- ours: ``bastion eval tiny-cpu.yaml``: one process, the base weights loaded once and wrapped
  with the adapter for the tuned run, one task index;
- baseline: the two ``lm_eval`` command lines Bastion writes into its report (same tasks, limit,
  chat template, system prompt, seed), run one after the other.

Goal (issue #5): ours / baseline <= 0.7.
Run: ``python bench/eval_compare.py [--rounds N]``.
"""

# ruff: noqa: T201  (a benchmark prints its results)
from __future__ import annotations

import argparse
import json
import shlex
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


def timed(cmd: list[str], env: dict[str, str]) -> float:
    start = time.monotonic()
    subprocess.run(cmd, env=env, cwd=REPO, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        env = bench_env(tmp)
        bastion = BASTION
        prepare(env, ("harvest", "train", "eval"))  # the first run also writes what the baseline needs
        report = json.loads(RunFolder(Path(tmp) / "runs" / "tiny-cpu").eval_report_json.read_text())
        lm_eval = str(Path(sys.executable).parent / "lm_eval")
        baseline_cmds = []
        for name in ("base", "tuned"):
            cmd = shlex.split(report["commands"][name])
            at = cmd.index("--output_path")
            cmd[at + 1] = str(Path(tmp) / f"plain-{name}")
            baseline_cmds.append([lm_eval, *cmd[1:]])
        ours, base = [], []
        for r in range(args.rounds):
            ours.append(timed([*bastion, "eval", "tiny-cpu.yaml"], env))
            base.append(sum(timed(cmd, env) for cmd in baseline_cmds))
            print(f"round {r + 1}: bastion eval {ours[-1]:.1f} s, two lm_eval runs {base[-1]:.1f} s")
    o, b = statistics.median(ours), statistics.median(base)
    print(f"wall time: bastion eval (base + tuned) {o:.1f} s, two plain lm_eval runs {b:.1f} s")
    print(
        f"ratio (bastion / lm_eval x2, median of {args.rounds}): {o / b:.2f}x  goal <= 0.7x: "
        f"{'met' if o / b <= 0.7 else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
