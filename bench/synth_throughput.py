"""Synth's throughput against a teacher of known capacity, and the cost of a rerun from the cache.

A scripted OpenAI-compatible teacher (``bench/scripted_teacher.py``, in its own process so that it
does not share the interpreter with the client) answers every request after a fixed ``latency``,
serving ``slots`` requests at a time: its capacity is ``slots / latency`` replies per second. Synth
runs on the demo corpus's harvested chunks through the stage's own code (``run_stage``: reading the
chunks, the thread pool, the cache writes, every gate, the atomic outputs) with
``teacher.max_concurrency = slots``.

Prints pairs per second (requests answered / the stage's wall time) and its ratio to the capacity
(goal: at least 0.8), then the wall time of a rerun, which finds every reply in the cache, as a
share of the first run's (goal: at most 5%).
Run: ``python bench/synth_throughput.py [--latency S] [--slots K] [--pairs P]``.
"""

# ruff: noqa: T201  (a benchmark prints its results)
from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bastion.recipe import load_recipe  # noqa: E402
from bastion.run_folder import RunFolder  # noqa: E402
from bastion.runner import run_stage, stage_named  # noqa: E402
from bench.common import REPO  # noqa: E402


def recipe_text(url: str, slots: int, pairs: int) -> str:
    text = (
        (REPO / "recipes" / "tiny-cpu.yaml")
        .read_text()
        .replace("synth:\n  enabled: false\n", "")  # the section each caller writes
        .replace("name: tiny-cpu", "name: bench-synth")
        .replace("path: corpus/cloudsec-mini", f"path: {REPO / 'recipes' / 'corpus' / 'cloudsec-mini'}")
    )
    return text + (
        "\nsynth:\n  enabled: true\n"
        f"  pairs_per_chunk: {pairs}\n"
        f"  teacher:\n    base_url: {url}\n    model: scripted-teacher\n    max_concurrency: {slots}\n"
        "    timeout_seconds: 30\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latency", type=float, default=0.2, help="seconds per reply (default 0.2)")
    parser.add_argument("--slots", type=int, default=8, help="replies the teacher serves at once (default 8)")
    parser.add_argument("--pairs", type=int, default=4, help="pairs per chunk (default 4)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    server = subprocess.Popen(
        [
            sys.executable,
            str(REPO / "bench" / "scripted_teacher.py"),
            "--latency",
            str(args.latency),
            "--slots",
            str(args.slots),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip()
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "recipe.yaml"
            path.write_text(recipe_text(url, args.slots, args.pairs))
            recipe = load_recipe(path)
            folder = RunFolder.for_recipe(recipe, base=Path(tmp) / "runs")
            run_stage(stage_named("harvest"), recipe, folder)  # untimed set-up
            start = time.perf_counter()
            first = run_stage(stage_named("synth"), recipe, folder)
            first_wall = time.perf_counter() - start
            start = time.perf_counter()
            again = run_stage(stage_named("synth"), recipe, folder)
            rerun_wall = time.perf_counter() - start
    finally:
        server.terminate()
        server.wait()
    capacity = args.slots / args.latency
    rate = first["requests"] / first_wall
    print(f"teacher capacity: {args.slots} slots / {args.latency:.3f} s = {capacity:.1f} replies/s")
    print(
        f"first run: {first['requests']} requests ({first['pairs']} pairs kept) in {first_wall:.2f} s "
        f"= {rate:.1f} replies/s; ratio to capacity {rate / capacity:.3f} (goal >= 0.8)"
    )
    print(
        f"rerun from the cache: {again['cache_hits']} cached replies, {again['http_requests']} teacher requests, "
        f"{rerun_wall:.3f} s = {rerun_wall / first_wall:.1%} of the first run (goal <= 5%)"
    )


if __name__ == "__main__":
    main()
