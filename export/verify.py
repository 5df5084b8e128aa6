"""Verification of every exported GGUF with llama-cpp-python (not only in tests).

- f16 vs the merged HF model on the recipe's smoke prompts: greedy tokens (teacher-forced agreement
  and free-running prefix agreement) and next-token logits within a stated tolerance;
- the prompt llama.cpp builds from the GGUF's embedded chat template equals the training prompt;
- generation stops at ``<|eot_id|>``: the GGUF's end-of-generation token is the chat turn's end,
  and a generation that produces it ends there;
- each quantisation: perplexity on a held-out slice of the harvested data vs f16, and file size.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bastion.chat_format import CHAT_TEMPLATE_KWARGS, prompt_messages, record_messages, render_text

log = logging.getLogger(__name__)

#: largest |logit difference| accepted between the f16 GGUF and the merged model (f16 rounding)
LOGIT_TOLERANCE = 0.05
EOT = "<|eot_id|>"


def open_gguf(path: Path, n_ctx: int = 1024) -> Any:
    """A llama-cpp-python model with all logits kept (for comparisons and perplexity)."""
    from llama_cpp import Llama

    return Llama(model_path=str(path), n_ctx=n_ctx, logits_all=True, verbose=False, seed=0, n_threads=2)


@dataclass
class Agreement:
    """f16 GGUF vs merged model on one prompt."""

    prompt: str
    teacher_forced: float
    free_prefix: float
    max_logit_diff: float


def hf_greedy(model: Any, prompt_ids: list[int], new_tokens: int) -> tuple[list[int], np.ndarray]:
    """Greedy continuation by the merged HF model, and its logits for every position of the result."""
    import torch

    with torch.no_grad():
        out = model.generate(
            torch.tensor([prompt_ids]),
            max_new_tokens=new_tokens,
            do_sample=False,
            min_new_tokens=new_tokens,
            pad_token_id=0,
        )
        sequence = out[0].tolist()
        logits = model(torch.tensor([sequence])).logits[0].float().numpy()
    return sequence, logits


def gguf_logits(llm: Any, tokens: list[int]) -> np.ndarray:
    """llama.cpp's logits for every position of ``tokens``."""
    llm.reset()
    llm.eval(tokens)
    return np.array(llm.scores[: len(tokens)], dtype=np.float32)


def gguf_greedy(llm: Any, prompt_ids: list[int], new_tokens: int) -> list[int]:
    """Greedy continuation by llama.cpp (free running)."""
    llm.reset()
    out: list[int] = []
    for token in llm.generate(prompt_ids, top_k=1, temp=0.0, reset=True):
        out.append(int(token))
        if len(out) >= new_tokens:
            break
    return out


def compare_f16(
    llm: Any, model: Any, tokenizer: Any, system_prompt: str, prompts: list[str], new_tokens: int = 24
) -> list[Agreement]:
    """Agreement between the f16 GGUF and the merged model on each smoke prompt."""
    results = []
    for prompt in prompts:
        ids = list(
            tokenizer.apply_chat_template(
                prompt_messages(system_prompt, prompt),
                tokenize=True,
                add_generation_prompt=True,
                return_dict=False,
                **CHAT_TEMPLATE_KWARGS,
            )
        )
        sequence, hf_logits = hf_greedy(model, ids, new_tokens)
        ll_logits = gguf_logits(llm, sequence)
        start = len(ids) - 1
        predicted = ll_logits[start:-1].argmax(axis=1)
        teacher = float(np.mean(predicted == np.array(sequence[start + 1 :])))
        free = gguf_greedy(llm, ids, new_tokens)
        expected = sequence[len(ids) :]
        prefix = next((i for i, (a, b) in enumerate(zip(free, expected, strict=False)) if a != b), len(expected))
        diff = float(np.max(np.abs(ll_logits[start:] - hf_logits[start:])))
        results.append(Agreement(prompt, teacher, prefix / len(expected), diff))
    return results


def gguf_prompt(llm: Any, messages: list[dict[str, str]]) -> str:
    """The prompt llama-cpp-python builds from the GGUF's embedded chat template."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    template = llm.metadata.get("tokenizer.chat_template")
    if not template:
        raise ValueError("the GGUF carries no tokenizer.chat_template")
    eos = llm.detokenize([llm.token_eos()], special=True).decode()
    bos = llm.detokenize([llm.token_bos()], special=True).decode()
    result = Jinja2ChatFormatter(template, eos_token=eos, bos_token=bos)(messages=messages)  # type: ignore[arg-type]
    return str(result.prompt)


def prompt_matches_training(llm: Any, tokenizer: Any, system_prompt: str, prompts: list[str]) -> bool:
    """llama.cpp's prompt from the GGUF template == the training-format prompt, for each smoke prompt."""
    for prompt in prompts:
        messages = prompt_messages(system_prompt, prompt)
        if gguf_prompt(llm, messages) != render_text(tokenizer, messages, generation_prompt=True):
            return False
    return True


def stops_at_eot(llm: Any) -> dict[str, Any]:
    """The GGUF ends generation on <|eot_id|>: its EOS is that token, and producing it ends the reply."""
    eot = llm.tokenize(EOT.encode(), add_bos=False, special=True)
    eot_id = eot[0] if len(eot) == 1 else -1
    out = llm.create_completion("Hello", max_tokens=16, temperature=0.0, logit_bias={eot_id: 100.0})
    choice = out["choices"][0]
    return {
        "eos_token_id": int(llm.token_eos()),
        "eot_token_id": eot_id,
        "finish_reason": choice["finish_reason"],
        "completion_tokens": out["usage"]["completion_tokens"],
        "ok": llm.token_eos() == eot_id
        and choice["finish_reason"] == "stop"
        and out["usage"]["completion_tokens"] <= 1,
    }


def perplexity(llm: Any, texts: list[str]) -> float:
    """Perplexity of the texts (each tokenised with special tokens, as the chat format has them)."""
    nll, count = 0.0, 0
    for text in texts:
        tokens = llm.tokenize(text.encode(), add_bos=False, special=True)[: llm.n_ctx()]
        if len(tokens) < 2:
            continue
        logits = gguf_logits(llm, tokens)[:-1]
        peak = logits.max(axis=1)
        log_norm = peak + np.log(np.exp(logits - peak[:, None]).sum(axis=1))
        nll -= float((logits[np.arange(len(tokens) - 1), tokens[1:]] - log_norm).astype(np.float64).sum())
        count += len(tokens) - 1
    return math.exp(nll / count) if count else math.nan


def held_out_texts(records: list[dict[str, Any]], tokenizer: Any, system_prompt: str, count: int = 4) -> list[str]:
    """A fixed slice of records (every k-th) rendered in the training format."""
    if not records:
        return []
    step = max(1, len(records) // count)
    picked = records[::step][:count]
    return [render_text(tokenizer, record_messages(r, system_prompt)) for r in picked]
