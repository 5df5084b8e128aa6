"""A GGUF opened in-process with llama-cpp-python, with every position's logits kept.

Shared by export's verification (f16 vs merged model, perplexity of each quantisation) and the
GGUF evaluation (rolling log-likelihood of the held-out pages).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np


def open_gguf(path: Path, n_ctx: int = 512) -> Any:
    """A llama-cpp-python model with all logits kept (for comparisons and perplexity)."""
    from llama_cpp import Llama

    threads = max(1, min(os.cpu_count() or 1, 8))
    return Llama(model_path=str(path), n_ctx=n_ctx, logits_all=True, verbose=False, seed=0, n_threads=threads)


def gguf_logits(llm: Any, tokens: list[int]) -> np.ndarray:
    """llama.cpp's logits for every position of ``tokens``: a view, valid until the next eval."""
    llm.reset()
    llm.eval(tokens)
    return np.asarray(llm.scores[: len(tokens)], dtype=np.float32)


def token_logprobs(llm: Any, tokens: list[int]) -> np.ndarray:
    """log p(token i | tokens before it) for i = 1 .. len(tokens) - 1, in float64."""
    logits = gguf_logits(llm, tokens)[:-1].astype(np.float64)
    top = logits.max(axis=1, keepdims=True)
    log_norm = top[:, 0] + np.log(np.exp(logits - top).sum(axis=1))
    return np.asarray(logits[np.arange(len(tokens) - 1), tokens[1:]] - log_norm)
