"""Wall time and peak memory of `bastion export` vs the converter and quantiser run by hand.

Setup (not timed): harvest and train the tiny recipe, then one `bastion export` so that the merged
model exists. Side by side, alternating:

- ours: ``bastion export tiny-cpu.yaml``: merge, f16 GGUF, q4_k_m + q8_0, the verification every
  export runs (agreement with the merged model, prompt format, end of turn, perplexity), Modelfile,
  model card and SHA256SUMS;
- baseline: by hand on the same merged model: ``convert_hf_to_gguf.py --outtype f16`` then
  ``llama_model_quantize`` to q4_k_m and q8_0.

Peak memory is the largest sum of resident sets over each command's process tree (sampled).
Goal (issue #6): ours / baseline <= 1.15 in time. The breakdown by step comes from the run's
verification.json so the cost of each part is visible.
Run: ``python bench/export.py [--rounds N]``.
"""

# ruff: noqa: T201  (a benchmark prints its results)
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bastion.run_folder import RunFolder  # noqa: E402
from bench.common import BASTION, bench_env, prepare  # noqa: E402

QUANTISE = """
import ctypes, sys, llama_cpp
for q, name in (("Q4_K_M", "q4_k_m"), ("Q8_0", "q8_0")):
    p = llama_cpp.llama_model_quantize_default_params()
    p.ftype = getattr(llama_cpp, "LLAMA_FTYPE_MOSTLY_" + q)
    assert llama_cpp.llama_model_quantize(sys.argv[1].encode(), (sys.argv[2] + name + ".gguf").encode(),
                                          ctypes.byref(p)) == 0
"""


WRAPPER = """
import resource, subprocess, sys, time, psutil
t = time.monotonic()
proc = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
tree, peak = psutil.Process(proc.pid), 0
while proc.poll() is None:
    try:
        members = [tree, *tree.children(recursive=True)]
        peak = max(peak, sum(m.memory_info().rss for m in members))
    except psutil.Error:
        pass
    time.sleep(0.05)
assert proc.returncode == 0, proc.returncode
print(time.monotonic() - t, max(peak, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024))
"""


def run(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and peak memory (GiB: the largest sum of resident sets over the process tree,
    sampled every 50 ms, as processes may run side by side) of one command."""
    out = subprocess.run(
        [sys.executable, "-c", WRAPPER, *cmd], env=env, cwd=REPO, check=True, capture_output=True, text=True
    ).stdout.split()
    return float(out[0]), float(out[1]) / 2**30


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    from bastion.vendor import converter_script

    with tempfile.TemporaryDirectory() as tmp:
        env = bench_env(tmp)
        bastion = BASTION
        prepare(env, ("harvest", "train", "export"))  # the first run also writes what the baseline needs
        folder = RunFolder(Path(tmp) / "runs" / "tiny-cpu")
        merged = folder.merged
        by_hand = Path(tmp) / "by-hand"
        by_hand.mkdir()
        baseline = [
            [
                sys.executable,
                str(converter_script()),
                str(merged),
                "--outfile",
                str(by_hand / "f16.gguf"),
                "--outtype",
                "f16",
            ],
            [sys.executable, "-c", QUANTISE, str(by_hand / "f16.gguf"), str(by_hand / "by-hand-")],
        ]
        ours_t, ours_m, base_t, base_m = [], [], [], []
        steps = {}
        for r in range(args.rounds):
            t, m = run([*bastion, "export", "tiny-cpu.yaml"], env)
            ours_t.append(t)
            ours_m.append(m)
            steps = json.loads(folder.verification.read_text())["timings_seconds"]
            results = [run(cmd, env) for cmd in baseline]
            base_t.append(sum(x[0] for x in results))
            base_m.append(max(x[1] for x in results))
            print(
                f"round {r + 1}: bastion export {ours_t[-1]:.1f} s ({ours_m[-1]:.2f} GiB peak), "
                f"converter + quantiser by hand {base_t[-1]:.1f} s ({base_m[-1]:.2f} GiB peak)"
            )
    o, b = statistics.median(ours_t), statistics.median(base_t)
    print(f"bastion export steps (last round): {steps}")
    print(
        f"merge {steps.get('merge', 0):.1f} s and verification {steps.get('verify', 0):.1f} s are work the by-hand "
        f"baseline does not do; the converter imports its libraries during the merge, and the merged model's "
        f"reference answers ({steps.get('reference_answers', 0):.1f} s) are computed during the conversion "
        f"({steps.get('convert', 0):.1f} s)"
    )
    print(f"peak memory: bastion export {max(ours_m):.2f} GiB, by hand {max(base_m):.2f} GiB")
    print(
        f"time ratio (bastion export / by hand, median of {args.rounds}): {o / b:.2f}x  goal <= 1.15x: "
        f"{'met' if o / b <= 1.15 else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
