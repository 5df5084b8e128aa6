"""vLLM command lines and settings, shared by the eval stage (lm-eval's ``vllm`` model) and the teacher.

vLLM is not a dependency (it needs CUDA and pins its own torch): install it on a GPU machine with
``pip install vllm==VLLM_VERSION``. The arguments rendered here are checked, in the tests, against the
``EngineArgs`` and frontend fields of that version's wheel (``scripts/vllm_signature.py`` extracts them).
"""

from __future__ import annotations

#: the vLLM release whose arguments Bastion renders and tests against (the one place it is pinned)
VLLM_VERSION = "0.34.0"
#: ranks vLLM accepts for ``max_lora_rank`` (vllm/config/lora.py, ``MaxLoRARanks``, in VLLM_VERSION)
MAX_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def max_lora_rank(r: int) -> int:
    """The smallest rank vLLM accepts that holds a LoRA of rank ``r`` (its default, 16, is too small for r=32)."""
    for rank in MAX_LORA_RANKS:
        if rank >= r:
            return rank
    raise ValueError(f"LoRA rank {r} is larger than vLLM {VLLM_VERSION} serves (at most {MAX_LORA_RANKS[-1]})")


def vllm_serve_command(
    model: str,
    *,
    port: int,
    host: str = "127.0.0.1",
    tensor_parallel: int = 1,
    data_parallel: int = 1,
    max_lora_rank: int | None = None,
    lora_modules: dict[str, str] | None = None,
    served_model_name: str | None = None,
    max_model_len: int | None = None,
    gpu_memory_utilization: float = 0.9,
    dtype: str = "auto",
    seed: int | None = None,
    revision: str | None = None,
) -> list[str]:
    """``vllm serve MODEL ...``: an OpenAI-compatible server (``/v1/chat/completions``) on ``host:port``.

    ``lora_modules`` maps served names to adapter folders (each served beside the base model, chosen by
    the request's ``model``); ``max_lora_rank`` must hold their rank (see ``max_lora_rank()``). An API key
    never goes on the command line: vLLM reads it from ``VLLM_API_KEY`` in the server's environment.
    """
    command = ["vllm", "serve", model, "--host", host, "--port", str(port), "--dtype", dtype]
    command += ["--tensor-parallel-size", str(tensor_parallel), "--data-parallel-size", str(data_parallel)]
    command += ["--gpu-memory-utilization", str(gpu_memory_utilization)]
    if served_model_name:
        command += ["--served-model-name", served_model_name]
    if revision:
        command += ["--revision", revision]
    if max_model_len:
        command += ["--max-model-len", str(max_model_len)]
    if seed is not None:
        command += ["--seed", str(seed)]
    if lora_modules:
        rank = max_lora_rank or MAX_LORA_RANKS[2]
        command += ["--enable-lora", "--max-lora-rank", str(rank), "--max-loras", str(len(lora_modules))]
        command += ["--lora-modules", *(f"{name}={path}" for name, path in lora_modules.items())]
    return command
