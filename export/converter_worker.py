"""A child process that runs llama.cpp's ``convert_hf_to_gguf.py``, started before its input exists.

``python -m export.converter_worker SCRIPT [BASE_MODEL_DIR]`` first imports what the converter
needs (torch, transformers, gguf-py and the converter's model classes, warmed on the base model's
config when given), then reads one JSON line from stdin: the converter's arguments. It runs the
script exactly as ``python SCRIPT ARGS...`` would. An empty stdin (the parent gave up) exits 0.

The parent merges the adapter meanwhile, so on a machine with two cores the converter's
imports cost no wall time. The script runs unchanged, in its own process, as the by-hand command.
"""

from __future__ import annotations

import contextlib
import json
import runpy
import sys
from pathlib import Path


def warm_up(script: Path, base_model: Path | None) -> None:
    """Import the converter's modules (and, given the base model, its architecture's classes)."""
    sys.path[:0] = [str(script.parent), str(script.parent / "gguf-py")]
    import gguf  # noqa: F401
    import torch  # noqa: F401
    from conversion import get_model_class
    from transformers import AutoConfig, AutoTokenizer  # noqa: F401

    if base_model is None or not (base_model / "config.json").is_file():
        return
    with contextlib.suppress(Exception):  # only a warm-up: the conversion reports real problems
        AutoConfig.from_pretrained(base_model)
        architecture = json.loads((base_model / "config.json").read_text())["architectures"][0]
        get_model_class(architecture)


def main() -> int:
    """Warm up, wait for the arguments, convert."""
    script = Path(sys.argv[1])
    warm_up(script, Path(sys.argv[2]) if len(sys.argv) > 2 else None)
    print("converter ready", flush=True)  # noqa: T201 - goes to the conversion log
    line = sys.stdin.readline()
    if not line.strip():
        return 0
    sys.argv = [str(script), *json.loads(line)]
    runpy.run_path(str(script), run_name="__main__")
    return 0


if __name__ == "__main__":
    sys.exit(main())
