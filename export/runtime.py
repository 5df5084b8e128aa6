"""Running the exported GGUF: an OpenAI-compatible server and a terminal chat (llama-cpp-python)."""

from __future__ import annotations

import logging
import signal
import subprocess
from pathlib import Path
from types import FrameType
from typing import Any

import click

from bastion.errors import BadInputError
from bastion.llama_server import server_command, stop
from bastion.manifest import file_sha256
from bastion.run_folder import RunFolder

log = logging.getLogger(__name__)


def verified_gguf(folder: RunFolder, kind: str) -> Path:
    """The exported GGUF of ``kind``, checked before anything runs it: a GGUF file, the checksum that
    SHA256SUMS lists for it (when the export wrote one), and llama.cpp loads its vocabulary."""
    path = folder.require_gguf(kind)
    rebuild = f"export again with `bastion export {folder.recipe_arg} --force`"
    if folder.sha256sums.is_file():
        listed: dict[str, str] = {}
        for line in folder.sha256sums.read_text().splitlines():
            digest, _, name = line.strip().partition("  ")
            listed[name] = digest
        expected = listed.get(path.name)
        if expected is not None and file_sha256(path) != expected:
            raise BadInputError(f"{path} does not match its checksum in {folder.sha256sums}; {rebuild}")
    from llama_cpp import Llama

    try:
        Llama(model_path=str(path), vocab_only=True, verbose=False)
    except (ValueError, RuntimeError, OSError) as exc:
        raise BadInputError(f"llama.cpp cannot load {path} ({exc}); {rebuild}") from None
    return path


def serve(gguf: Path, *, host: str, port: int, n_ctx: int, alias: str) -> int:
    """Run llama-cpp-python's OpenAI-compatible server in the foreground; Ctrl-C or SIGTERM stops it and its child."""
    cmd = server_command(gguf, host=host, port=port, n_ctx=n_ctx, extra=["--model_alias", alias])
    if host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("serving on %s: reachable from other machines; the server has no authentication", host)
    log.info("serving %s at http://%s:%d/v1 (model name '%s'); Ctrl-C stops it", gguf.name, host, port, alias)
    proc = subprocess.Popen(cmd)

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        stop(proc, timeout=30)
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
        stop(proc, timeout=30)


def load_chat_model(gguf: Path, n_ctx: int) -> Any:
    """A llama-cpp-python model for chatting (chat template from the GGUF)."""
    from llama_cpp import Llama

    # the GGUF's Llama 3.1 template defaults to CHAT_TEMPLATE_KWARGS' date: the training header
    try:
        return Llama(model_path=str(gguf), n_ctx=n_ctx, verbose=False)
    except ValueError as exc:
        raise BadInputError(f"llama.cpp could not load {gguf}: {exc}") from None


def chat(gguf: Path, system_prompt: str, *, n_ctx: int, temperature: float, max_tokens: int = 512) -> None:
    """An interactive terminal chat. Commands: /reset clears the conversation, /exit (or Ctrl-D) leaves."""
    llm = load_chat_model(gguf, n_ctx)
    messages: list[dict[str, str]] = [{"role": "system", "content": system_prompt}]
    click.echo(f"Chatting with {gguf.name}. /reset clears the conversation, /exit or Ctrl-D leaves.")
    while True:
        try:
            user = click.prompt("you", prompt_suffix="> ", default="", show_default=False)
        except (EOFError, click.Abort):
            click.echo("")
            return
        if user.strip() in ("/exit", "/quit"):
            return
        if user.strip() == "/reset":
            messages = messages[:1]
            click.echo("(conversation cleared)")
            continue
        if not user.strip():
            continue
        messages.append({"role": "user", "content": user})
        click.echo("assistant> ", nl=False)
        reply = ""
        for chunk in llm.create_chat_completion(
            messages=messages, temperature=temperature, max_tokens=max_tokens, stream=True
        ):
            piece = chunk["choices"][0]["delta"].get("content") or ""
            reply += piece
            click.echo(piece, nl=False)
        click.echo("")
        messages.append({"role": "assistant", "content": reply})
