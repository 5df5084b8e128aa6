"""Evaluating an exported GGUF with lm-eval through llama-cpp-python's OpenAI-compatible server.

lm-eval's own ``gguf`` backend cannot apply a chat template and sends no ``max_tokens`` (the
server then stops at 16 tokens). ``ChatGGUFLM`` adds both, so the GGUF sees exactly the prompts
the HF runs saw: the chat template comes from the merged model's tokenizer, which the export's
verification proved equal to the GGUF's embedded template. llama.cpp adds BOS itself, so the
rendered prompt goes without its leading ``<|begin_of_text|>``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from lm_eval.api.registry import register_model
from lm_eval.models.gguf import GGUFLM

from bastion.chat_format import render_text
from bastion.errors import ToolError

log = logging.getLogger(__name__)


@register_model("bastion_gguf")
class ChatGGUFLM(GGUFLM):  # type: ignore[misc]
    """lm-eval's gguf backend plus the chat template and a generation length."""

    def __init__(
        self,
        base_url: str,
        tokenizer_path: str,
        max_gen_toks: int = 256,
        gguf_path: Path | None = None,
        window: int = 2047,
        **kwargs: Any,
    ) -> None:
        super().__init__(base_url=base_url, **kwargs)
        self.gguf_path = gguf_path
        self.window = window  # tokens per window of a rolling log-likelihood
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

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        """Log-likelihood of each whole text (the held-out pages) in windows of ``window`` tokens, each
        token scored once and the first from BOS, as lm-eval's HF backend does it. llama-cpp-python's
        server takes no token ids, so the GGUF is opened in this process for these requests."""
        from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

        from bastion.gguf_model import open_gguf, token_logprobs

        if self.gguf_path is None:
            raise ToolError("rolling log-likelihood on a GGUF needs its path (ChatGGUFLM(gguf_path=...))")
        llm = open_gguf(self.gguf_path, n_ctx=self.window + 1)
        out = []
        for (text,) in [r.args for r in requests]:
            tokens = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            windows = get_rolling_token_windows(
                token_list=tokens, prefix_token=self.tokenizer.bos_token_id, max_seq_len=self.window, context_len=1
            )
            total = 0.0
            for context, continuation in map(make_disjoint_window, windows):
                scores = token_logprobs(llm, [*context, *continuation])  # position i scores token i + 1
                total += float(scores[len(context) - 1 :].sum())
            out.append(total)
        return out

    def _post(self, request: dict[str, Any], retries: int = 3, delay: int = 5) -> Any:
        import requests

        for attempt in range(retries):
            try:
                response = requests.post(f"{self.base_url}/v1/completions", json=request, timeout=600)
                response.raise_for_status()
                return response.json()
            except requests.RequestException as exc:
                log.warning("GGUF server request failed (%s), attempt %d of %d", exc, attempt + 1, retries)
                time.sleep(delay)
        raise ToolError(f"the GGUF server at {self.base_url} did not answer after {retries} tries")

    def gguf_completion(
        self,
        context: str,
        continuation: str | None = None,
        stop: Any = None,
        retries: int = 3,
        delay: int = 5,
        **kwargs: Any,
    ) -> Any:
        request: dict[str, Any] = {"prompt": context, "logprobs": self.logprobs, "temperature": 0.0}
        if continuation:
            request.update(prompt=context + continuation, max_tokens=1, echo=True)
        else:
            request["max_tokens"] = kwargs.get("max_tokens", self.max_gen_toks)
        if stop is not None:
            request["stop"] = stop
        return self._post(request, retries, delay)
