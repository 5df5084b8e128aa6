"""`just gpu-check`: run Bastion's chain on a CUDA GPU with the tiny model, offline, and say what ran.

On a CUDA machine (no model hub needed: the tiny model is built locally) it checks bitsandbytes' CUDA
kernels and FlashAttention (when installed), then runs harvest -> train (QLoRA on the GPU, paged 8-bit
optimiser) -> eval (through vLLM when installed, else lm-eval's HF backend on the GPU) -> export (llama.cpp;
its GPU offload checked) on recipes/tiny-cpu.yaml turned into a CUDA recipe, within a time budget
(8 minutes by default). It prints one table: each step, pass / FAIL / skipped with the reason, its time
and the component versions, with the GPU's name. Exit 0 when nothing failed (a machine without CUDA
prints a table of skipped steps and exits 0), 1 when a step failed.

    python scripts/gpu_check.py [--budget-seconds 480] [--keep DIR]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import logging
import os
import re
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

COMPONENTS = (
    "torch",
    "transformers",
    "peft",
    "axolotl",
    "bitsandbytes",
    "flash-attn",
    "lm_eval",
    "vllm",
    "llama_cpp_python",
)
STEPS = (
    "bitsandbytes 4-bit CUDA kernels",
    "flash-attention kernel",
    "harvest (tiny corpus, loopback)",
    "train: QLoRA on the GPU",
    "eval: base vs tuned",
    "export: GGUF + verification",
    "llama.cpp CUDA offload",
)
for noisy in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(noisy, "1")
os.environ.setdefault("AXOLOTL_DO_NOT_TRACK", "1")
os.environ.setdefault("WANDB_MODE", "disabled")


VLLM_EVAL = "  backend: vllm\n  gpu_memory_utilization: 0.5\n"


@dataclass
class Row:
    step: str
    status: str  # "pass", "FAIL", "skipped"
    seconds: float | None = None
    detail: str = ""


def version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def cuda_device() -> tuple[str, int, str] | None:
    """(GPU name, compute capability major, 'sm_XY, CUDA V') or None when torch sees no CUDA device."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    major, minor = torch.cuda.get_device_capability(0)
    return torch.cuda.get_device_name(0), major, f"sm_{major}{minor}, CUDA {torch.version.cuda}"


def table(rows: list[Row], gpu: str, versions: dict[str, str], wall: float) -> str:
    width = max(len(r.step) for r in rows)
    lines = [f"GPU: {gpu}", ""]
    lines.append(f"{'step':<{width}}  {'result':<7}  {'time':>7}  detail")
    for r in rows:
        took = f"{r.seconds:6.1f}s" if r.seconds is not None else "      -"
        lines.append(f"{r.step:<{width}}  {r.status:<7}  {took}  {r.detail}")
    lines += ["", "versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()), f"wall time: {wall:.0f} s"]
    failed = [r.step for r in rows if r.status == "FAIL"]
    skipped = [r.step for r in rows if r.status == "skipped"]
    lines.append(
        f"gpu-check: {'FAILED: ' + ', '.join(failed) if failed else 'passed'}"
        + (f" ({len(skipped)} skipped)" if skipped else "")
    )
    return "\n".join(lines) + "\n"


def check_bitsandbytes() -> str:
    import bitsandbytes.functional as bnbf
    import torch

    weights = torch.randn(256, 256, device="cuda", dtype=torch.bfloat16)
    packed, state = bnbf.quantize_4bit(weights, quant_type="nf4")
    error = (bnbf.dequantize_4bit(packed, state, quant_type="nf4") - weights).abs().mean().item()
    if not error < 0.2:
        raise AssertionError(f"nf4 round trip error {error:.3f}")
    return f"nf4 round trip on {packed.device}, mean error {error:.3f}"


def check_flash_attention() -> str:
    import torch
    from flash_attn import flash_attn_func

    q, k, v = (torch.randn(1, 128, 4, 64, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    out = flash_attn_func(q, k, v, causal=True)
    ref = torch.nn.functional.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True
    ).transpose(1, 2)
    diff = (out - ref).abs().max().item()
    if not diff < 0.05:
        raise AssertionError(f"differs from PyTorch's attention by {diff:.3f}")
    return f"matches PyTorch's attention (max difference {diff:.4f})"


def gpu_recipe(folder: Path, *, flash: bool, vllm: bool) -> Path:
    """recipes/tiny-cpu.yaml as a CUDA recipe: bf16, paged 8-bit AdamW, FlashAttention and vLLM when present."""
    text = (REPO / "recipes" / "tiny-cpu.yaml").read_text(encoding="utf-8")
    # (pattern, replacement, occurrences): keys are matched with whatever comment follows them
    replacements = [
        (r"^name: tiny-cpu$", "name: gpu-check", 1),
        (r"path: corpus/cloudsec-mini", f"path: {REPO / 'recipes' / 'corpus' / 'cloudsec-mini'}", 1),
        (r"^  device: cpu\b.*$", "  device: cuda", 2),  # train and eval
        (r"compute_dtype: float32", "compute_dtype: bfloat16", 1),
        (r"^  optimizer: adamw_torch\b.*$", "  optimizer: paged_adamw_8bit", 1),
        (r"^  precision: fp32\b.*$", "  precision: bf16", 1),
        (r"^  flash_attention: false\b.*$", f"  flash_attention: {'true' if flash else 'false'}", 1),
        (r"^eval:\n", "eval:\n" + (VLLM_EVAL if vllm else ""), 1),
    ]
    for pattern, new, occurrences in replacements:
        text, count = re.subn(pattern, new, text, count=occurrences, flags=re.M)
        if count != occurrences:
            raise SystemExit(f"gpu-check: recipes/tiny-cpu.yaml changed ({pattern!r} not found); update {__file__}")
    path = folder / "gpu-check.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def run_chain(rows: dict[str, Row], deadline: float, keep: Path | None, *, flash: bool, vllm: bool) -> None:
    from bastion.recipe import load_recipe
    from bastion.run_folder import RunFolder
    from bastion.runner import run_stage, stage_named

    work = keep or Path(tempfile.mkdtemp(prefix="bastion-gpu-check-"))
    recipe = load_recipe(gpu_recipe(work, flash=flash, vllm=vllm))
    folder = RunFolder.for_recipe(recipe, base=work / "runs")
    chain: list[tuple[str, str, Callable[[dict[str, Any]], str]]] = [
        ("harvest (tiny corpus, loopback)", "harvest", lambda d: f"{d.get('records', '?')} records"),
        (
            "train: QLoRA on the GPU",
            "train",
            lambda d: (
                f"{d['steps']} steps, loss {d['first_train_loss']:.2f} -> {d['final_train_loss']:.2f}, "
                f"peak GPU {d['peak_gpu_gib']} GiB, flash-attention {'on' if flash else 'off'}"
            ),
        ),
        ("eval: base vs tuned", "eval", lambda d: f"through {'vLLM' if vllm else 'the HF backend'}; {d['report']}"),
        ("export: GGUF + verification", "export", lambda d: f"{folder.verification}"),
    ]
    for label, stage, describe in chain:
        if time.monotonic() > deadline:
            rows[label] = Row(label, "skipped", None, "time budget spent")
            continue
        start = time.monotonic()
        try:
            details = run_stage(stage_named(stage), recipe, folder)
            rows[label] = Row(label, "pass", time.monotonic() - start, describe(details))
        except BaseException as exc:  # noqa: BLE001 - report the step, stop the chain
            if isinstance(exc, KeyboardInterrupt):
                raise
            rows[label] = Row(label, "FAIL", time.monotonic() - start, f"{type(exc).__name__}: {str(exc)[:300]}")
            logging.getLogger("gpu-check").debug("%s", traceback.format_exc())
            for later, _, _ in chain[chain.index((label, stage, describe)) + 1 :]:
                rows[later] = Row(later, "skipped", None, f"'{label}' failed")
            return


def check_llama_cuda() -> str:
    import llama_cpp

    if not llama_cpp.llama_supports_gpu_offload():
        raise AssertionError(
            "llama-cpp-python was built without CUDA: reinstall with "
            "CMAKE_ARGS='-DGGML_CUDA=on' pip install --force-reinstall --no-cache-dir llama-cpp-python"
        )
    return "llama_supports_gpu_offload() is true"


def timed(label: str, check: Callable[[], str]) -> Row:
    start = time.monotonic()
    try:
        return Row(label, "pass", time.monotonic() - start, check())
    except Exception as exc:  # noqa: BLE001 - one row per failure, with its reason
        return Row(label, "FAIL", time.monotonic() - start, f"{type(exc).__name__}: {str(exc)[:300]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-seconds", type=float, default=480.0, help="Time for the whole check (default 8 min).")
    parser.add_argument("--keep", type=Path, default=None, help="Keep the run folder here (default: a temp folder).")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    started = time.monotonic()
    versions = {name: version(name) for name in COMPONENTS}
    device = cuda_device()
    if device is None:
        reason = "no CUDA device: skipped"
        try:
            import torch

            reason += f" (torch {torch.__version__} sees none)"
        except ImportError:
            reason += " (torch is not installed)"
        rows = [Row(step, "skipped", None, reason) for step in STEPS]
        text = table(rows, "none (no CUDA device visible)", versions, time.monotonic() - started)
        summary = "gpu-check: no CUDA device: skipped (nothing ran on a GPU; run it on a CUDA machine)\n"
        sys.stdout.write(text.rsplit("gpu-check:", 1)[0] + summary)
        return 0

    name, major, capability = device
    deadline = started + args.budget_seconds
    flash = installed("flash_attn") and major >= 8
    vllm = installed("vllm")
    out: dict[str, Row] = {}
    out[STEPS[0]] = timed(STEPS[0], check_bitsandbytes)
    if flash:
        out[STEPS[1]] = timed(STEPS[1], check_flash_attention)
    else:
        why = "flash-attn is not installed (pip install -e '.[gpu]')" if not installed("flash_attn") else "needs sm_80+"
        out[STEPS[1]] = Row(STEPS[1], "skipped", None, why + "; training uses PyTorch's SDPA")
    run_chain(out, deadline, args.keep, flash=flash and out[STEPS[1]].status == "pass", vllm=vllm)
    if not vllm and out.get(STEPS[4], Row("", "")).status == "pass":
        out[STEPS[4]].detail += " (vLLM not installed: pip install vllm==" + _vllm_pin() + " to check it)"
    out[STEPS[6]] = (
        timed(STEPS[6], check_llama_cuda)
        if installed("llama_cpp")
        else Row(STEPS[6], "skipped", None, "llama-cpp-python is not installed")
    )
    rows = [out[step] for step in STEPS]
    sys.stdout.write(table(rows, f"{name} ({capability})", versions, time.monotonic() - started))
    return 1 if any(r.status == "FAIL" for r in rows) else 0


def _vllm_pin() -> str:
    from bastion.vllm import VLLM_VERSION

    return VLLM_VERSION


if __name__ == "__main__":
    sys.exit(main())
