"""Evaluating an exported GGUF with lm-eval through llama-cpp-python's OpenAI-compatible server.

lm-eval's own ``gguf`` backend cannot apply a chat template and sends no ``max_tokens`` (the
server then stops at 16 tokens). ``ChatGGUFLM`` adds both, so the GGUF sees exactly the prompts
the HF runs saw: the chat template comes from the merged model's tokenizer, which the export's
verification proved equal to the GGUF's embedded template. llama.cpp adds BOS itself, so the
rendered prompt goes without its leading ``<|begin_of_text|>``.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lm_eval.api.registry import register_model
from lm_eval.models.gguf import GGUFLM

from bastion.chat_format import render_text
from bastion.errors import BastionError
from export.runtime import server_command

log = logging.getLogger(__name__)


@register_model("bastion_gguf")
class ChatGGUFLM(GGUFLM):  # type: ignore[misc]
    """lm-eval's gguf backend plus the chat template and a generation length."""

    def __init__(self, base_url: str, tokenizer_path: str, max_gen_toks: int = 256, **kwargs: Any) -> None:
        super().__init__(base_url=base_url, **kwargs)
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
        self.max_gen_toks = max_gen_toks

    @property
    def tokenizer_name(self) -> str:
        return str(self.tokenizer.name_or_path)

    def chat_template(self, chat_template: bool | str = False) -> str | None:
        return str(self.tokenizer.chat_template)

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        text = render_text(self.tokenizer, chat_history, generation_prompt=add_generation_prompt)
        bos = self.tokenizer.bos_token or ""
        return text[len(bos) :] if bos and text.startswith(bos) else text

    def loglikelihood(self, requests: list[Any], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        """Log-probability of each continuation, located by token count (llama-cpp-python's echoed text
        leaves out special tokens, so lm-eval's character offsets do not line up with a chat prompt)."""
        out = []
        for context, continuation in [r.args for r in requests]:
            whole = self.tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
            head = self.tokenizer(context, add_special_tokens=False)["input_ids"]
            n = max(1, len(whole) - len(head))
            response = self.gguf_completion(context=context, continuation=continuation)
            logprobs = response["choices"][0]["logprobs"]
            values = logprobs["token_logprobs"][-(n + 1) : -1]
            tokens = logprobs["tokens"][-(n + 1) : -1]
            tops = logprobs["top_logprobs"][-(n + 1) : -1]
            greedy = all(top and max(top, key=top.get) == tok for tok, top in zip(tokens, tops, strict=True))
            out.append((float(sum(values)), bool(greedy)))
        return out

    def gguf_completion(
        self,
        context: str,
        continuation: str | None = None,
        stop: Any = None,
        retries: int = 3,
        delay: int = 5,
        **kwargs: Any,
    ) -> Any:
        import requests

        request: dict[str, Any] = {"prompt": context, "logprobs": self.logprobs, "temperature": 0.0}
        if continuation:
            request.update(prompt=context + continuation, max_tokens=1, echo=True)
        else:
            request["max_tokens"] = kwargs.get("max_tokens", self.max_gen_toks)
        if stop is not None:
            request["stop"] = stop
        for attempt in range(retries):
            try:
                response = requests.post(f"{self.base_url}/v1/completions", json=request, timeout=600)
                response.raise_for_status()
                return response.json()
            except requests.RequestException as exc:
                log.warning("GGUF server request failed (%s), attempt %d of %d", exc, attempt + 1, retries)
                time.sleep(delay)
        raise BastionError(f"the GGUF server at {self.base_url} did not answer after {retries} tries")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def gguf_server(gguf: Path, n_ctx: int = 2048, timeout: float = 120) -> Iterator[str]:
    """llama-cpp-python's server on a free loopback port for the block; yields its base URL."""
    port = _free_port()
    cmd = server_command(
        gguf, host="127.0.0.1", port=port, n_ctx=n_ctx, extra=["--logits_all", "True", "--n_threads", "2"]
    )
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise BastionError(f"llama-cpp-python's server exited ({proc.returncode}) while loading {gguf}")
            try:
                with urllib.request.urlopen(f"{base}/v1/models", timeout=5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise BastionError(f"llama-cpp-python's server did not start within {timeout:.0f} s") from None
                time.sleep(0.3)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
