"""Where the teacher runs: servers the recipe names (``teacher.base_url``), or one Bastion starts on
loopback for the duration of the stage (``teacher.serve``):

- ``llama_cpp``: llama-cpp-python's OpenAI-compatible server on a local GGUF (``bastion.llama_server``);
  it takes structured output in its own ``json_object`` form.
- ``vllm``: ``vllm serve MODEL`` on a GPU machine (tensor parallel over ``tensor_parallel_size`` GPUs);
  vLLM is not a dependency of Bastion: install it on the GPU machine. Its server takes the OpenAI
  ``json_schema`` form.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bastion.errors import MissingResourceError, ToolError
from bastion.llama_server import free_port, loopback_server, stop
from bastion.recipe import Recipe
from bastion.vllm import vllm_serve_command
from synth.config import base_urls

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Served:
    """The teacher's servers (OpenAI API roots), the model name to send, and how they were obtained."""

    urls: list[str]
    model: str
    engine: str
    command: list[str] | None = None


def vllm_command(serve: dict[str, Any], model_name: str, *, port: int, seed: int) -> list[str]:
    """The ``vllm serve`` command line for the teacher (loopback only), plus the recipe's extra arguments."""
    command = vllm_serve_command(
        str(serve["model"]),
        port=port,
        served_model_name=model_name,
        tensor_parallel=int(serve["tensor_parallel_size"]),
        gpu_memory_utilization=float(serve["gpu_memory_utilization"]),
        max_model_len=serve["max_model_len"] or None,
        seed=seed,
    )
    return command + [str(a) for a in serve["extra_args"]]


def validate_vllm_command(command: list[str]) -> list[str]:
    """Problems of a rendered vLLM command line (flags vLLM's ``serve`` takes, loopback host, a model)."""
    problems = []
    if command[:2] != ["vllm", "serve"] or len(command) < 3 or command[2].startswith("-"):
        problems.append("expected `vllm serve MODEL ...`")
    flags = dict(zip(command[3::2], command[4::2], strict=False))
    if flags.get("--host") != "127.0.0.1":
        problems.append("the teacher must listen on loopback only")
    if not flags.get("--tensor-parallel-size", "").isdigit():
        problems.append("--tensor-parallel-size must be a whole number")
    try:
        if not 0 < float(flags.get("--gpu-memory-utilization", "x")) <= 1:
            problems.append("--gpu-memory-utilization must be in (0, 1]")
    except ValueError:
        problems.append("--gpu-memory-utilization must be a number")
    return problems


def model_name(recipe: Recipe) -> str:
    """The model name requests carry: ``teacher.model``, else the served model's file or id."""
    t = recipe.data["synth"]["teacher"]
    serve = t["serve"]
    if t["model"]:
        return str(t["model"])
    if serve["engine"] == "llama_cpp" and serve["gguf"]:
        return Path(serve["gguf"]).stem
    if serve["engine"] == "vllm" and serve["model"]:
        return str(serve["model"])
    return "teacher"


def plan_serving(recipe: Recipe, port: int | None = None) -> Served:
    """What ``serving`` will do, without starting anything (for --dry-run and the report)."""
    t = recipe.data["synth"]["teacher"]
    serve = t["serve"]
    name = model_name(recipe)
    if serve["engine"] == "vllm":
        return Served([], name, "vllm", vllm_command(serve, name, port=port or 8000, seed=int(t["seed"])))
    if serve["engine"] == "llama_cpp":
        return Served([], name, "llama_cpp")
    return Served(base_urls(t["base_url"]), name, "remote")


@contextlib.contextmanager
def serving(recipe: Recipe) -> Iterator[Served]:
    """The teacher's servers for the block: the recipe's, or one started here and stopped afterwards."""
    t = recipe.data["synth"]["teacher"]
    serve = t["serve"]
    planned = plan_serving(recipe)
    if planned.engine == "remote":
        yield planned
        return
    timeout = float(serve["startup_timeout_seconds"])
    if planned.engine == "llama_cpp":
        gguf = recipe.resolve_path(serve["gguf"])
        if not gguf.is_file():
            raise MissingResourceError(f"synth.teacher.serve.gguf: {gguf} not found")
        log.info("synth: serving the teacher %s with llama-cpp-python on loopback", gguf.name)
        with loopback_server(gguf, n_ctx=int(serve["n_ctx"]), timeout=timeout, extra=serve["extra_args"]) as base:
            yield Served([f"{base}/v1"], planned.model, "llama_cpp")
        return
    port = free_port()
    command = vllm_command(serve, planned.model, port=port, seed=int(t["seed"]))
    if shutil.which("vllm") is None:
        raise MissingResourceError(
            "synth.teacher.serve.engine is vllm but vLLM is not installed here (it runs on a GPU machine: "
            f"`pip install vllm` there); the command would be: {' '.join(command)}"
        )
    log.info("synth: starting the teacher: %s", " ".join(command))
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: S603
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(proc, base, timeout, "vLLM")
        yield Served([f"{base}/v1"], planned.model, "vllm", command)
    finally:
        stop(proc, timeout=60)


def _wait_ready(proc: subprocess.Popen[bytes], base: str, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise ToolError(f"{what}'s server exited ({proc.returncode}) while loading the teacher")
        try:
            with urllib.request.urlopen(f"{base}/v1/models", timeout=5):  # noqa: S310  (loopback)
                return
        except OSError:
            if time.monotonic() > deadline:
                raise ToolError(f"{what}'s server did not start within {timeout:.0f} s") from None
            time.sleep(1.0)
