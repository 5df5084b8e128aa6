"""llama-cpp-python's OpenAI-compatible server: its command line, and a loopback instance for a block.

Shared by export (``bastion serve``), the GGUF evaluation and, later, a locally served teacher.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from bastion.errors import ToolError


def server_command(gguf: Path, *, host: str, port: int, n_ctx: int, extra: list[str] | None = None) -> list[str]:
    """The command line of llama-cpp-python's OpenAI-compatible server for one GGUF."""
    return [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(gguf),
        "--host",
        host,
        "--port",
        str(port),
        "--n_ctx",
        str(n_ctx),
        *(extra or []),
    ]


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop(proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    """Terminate a server child, then kill it if it does not stop within ``timeout`` seconds."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


@contextlib.contextmanager
def loopback_server(
    gguf: Path, *, n_ctx: int = 2048, timeout: float = 120, extra: list[str] | None = None
) -> Iterator[str]:
    """llama-cpp-python's server for ``gguf`` on a free loopback port for the block; yields its base URL.

    The server is stopped when the block ends, also on an error or an interrupt.
    """
    port = free_port()
    cmd = server_command(gguf, host="127.0.0.1", port=port, n_ctx=n_ctx, extra=extra)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise ToolError(f"llama-cpp-python's server exited ({proc.returncode}) while loading {gguf}")
            try:
                with urllib.request.urlopen(f"{base}/v1/models", timeout=5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise ToolError(
                        f"llama-cpp-python's server did not start within {timeout:.0f} s ({gguf})"
                    ) from None
                time.sleep(0.3)
        yield base
    finally:
        stop(proc)
