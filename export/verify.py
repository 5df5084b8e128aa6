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
from typing import Any

import numpy as np

from bastion.chat_format import prompt_messages, record_messages, render_ids, render_text
from bastion.gguf_model import gguf_logits

log = logging.getLogger(__name__)

#: largest |logit difference| accepted between the f16 GGUF and the merged model (f16 rounding)
LOGIT_TOLERANCE = 0.05
#: held-out tokens scored for perplexity by default (recipe: export.perplexity_tokens); the ratio of two
#: GGUFs on the same tokens needs hundreds, not thousands
PPL_TOKENS = 512
EOT = "<|eot_id|>"


@dataclass
class Agreement:
    """f16 GGUF vs merged model on one prompt."""

    prompt: str
    teacher_forced: float
    free_prefix: float
    max_logit_diff: float


def hf_greedy(model: Any, prompt_ids: list[int], new_tokens: int) -> tuple[list[int], np.ndarray]:
    """Greedy continuation by the merged HF model, and the logits that chose each new token
    (positions ``len(prompt_ids) - 1`` to the one before last)."""
    import torch

    with torch.no_grad():
        out = model.generate(
            torch.tensor([prompt_ids]),
            max_new_tokens=new_tokens,
            do_sample=False,
            min_new_tokens=new_tokens,
            pad_token_id=0,
            return_dict_in_generate=True,
            output_logits=True,
        )
    sequence = out.sequences[0].tolist()
    logits = torch.cat([step[:1] for step in out.logits]).float().numpy()
    return sequence, logits


def gguf_greedy(llm: Any, prompt_ids: list[int], new_tokens: int) -> list[int]:
    """Greedy continuation by llama.cpp (free running)."""
    llm.reset()
    out: list[int] = []
    for token in llm.generate(prompt_ids, top_k=1, temp=0.0, reset=True):
        out.append(int(token))
        if len(out) >= new_tokens:
            break
    return out


#: new tokens generated per smoke prompt when comparing the f16 GGUF with the merged model
NEW_TOKENS = 24


def context_needed(ref: Reference, budget: int = PPL_TOKENS) -> int:
    """The context the verification needs: the longest smoke prompt with its answer, or one held-out
    text's share of the perplexity budget, rounded up to a multiple of 64."""
    longest = max([len(seq) for seq in ref.sequences] + [budget // max(1, len(ref.held_out))])
    return -(-longest // 64) * 64


@dataclass
class Reference:
    """What the merged HF model answers, computed once (while llama.cpp converts it)."""

    prompts: list[str]
    prompt_ids: list[list[int]]
    sequences: list[list[int]]
    logits: list[np.ndarray]
    training_prompts: list[str]
    held_out: list[str]


def hf_reference(
    model: Any,
    tokenizer: Any,
    system_prompt: str,
    prompts: list[str],
    held_out: list[str],
    new_tokens: int = NEW_TOKENS,
    threads: int | None = None,
) -> Reference:
    """The merged model's greedy answers and logits on the smoke prompts (in float32), the training-
    format prompts, and ``held_out``, the texts perplexity is measured on. ``threads``: torch's threads
    meanwhile (leave a core to a conversion running alongside)."""
    import torch

    model = model.float()
    ids = [render_ids(tokenizer, prompt_messages(system_prompt, p), generation_prompt=True) for p in prompts]
    saved = torch.get_num_threads()
    torch.set_num_threads(threads or saved)
    try:
        greedy = [hf_greedy(model, i, new_tokens) for i in ids]
    finally:
        torch.set_num_threads(saved)
    return Reference(
        prompts=list(prompts),
        prompt_ids=ids,
        sequences=[g[0] for g in greedy],
        logits=[g[1] for g in greedy],
        training_prompts=[
            render_text(tokenizer, prompt_messages(system_prompt, p), generation_prompt=True) for p in prompts
        ],
        held_out=list(held_out),
    )


def compare_f16(llm: Any, ref: Reference) -> list[Agreement]:
    """Agreement between the f16 GGUF and the merged model on each smoke prompt."""
    results = []
    for prompt, ids, sequence, hf_logits in zip(ref.prompts, ref.prompt_ids, ref.sequences, ref.logits, strict=True):
        start = len(ids) - 1
        ll_logits = gguf_logits(llm, sequence)[start:-1]
        teacher = float(np.mean(ll_logits.argmax(axis=1) == np.array(sequence[start + 1 :])))
        diff = float(np.max(np.abs(ll_logits - hf_logits)))
        expected = sequence[len(ids) :]
        free = gguf_greedy(llm, ids, len(expected))
        prefix = next((i for i, (a, b) in enumerate(zip(free, expected, strict=False)) if a != b), len(expected))
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


def prompt_matches_training(llm: Any, system_prompt: str, ref: Reference) -> bool:
    """llama.cpp's prompt from the GGUF template == the training-format prompt, for each smoke prompt."""
    return all(
        gguf_prompt(llm, prompt_messages(system_prompt, p)) == expected
        for p, expected in zip(ref.prompts, ref.training_prompts, strict=True)
    )


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


def perplexity(llm: Any, texts: list[str], budget: int = PPL_TOKENS) -> float:
    """Perplexity of the texts (each tokenised with special tokens, as the chat format has them, and
    cut to an equal share of ``budget`` tokens)."""
    import torch

    nll, count = 0.0, 0
    share = min(max(2, budget // max(1, len(texts))), llm.n_ctx())
    for text in texts:
        tokens = llm.tokenize(text.encode(), add_bos=False, special=True)[:share]
        if len(tokens) < 2:
            continue
        logits = torch.from_numpy(gguf_logits(llm, tokens)[:-1])
        targets = torch.tensor(tokens[1:])
        picked = logits.gather(1, targets[:, None])[:, 0].double()
        nll -= float((picked - torch.logsumexp(logits, dim=1).double()).sum())
        count += len(tokens) - 1
    return math.exp(nll / count) if count else math.nan


def held_out_texts(pages: list[dict[str, Any]], tokenizer: Any) -> list[str]:
    """The harvest's held-out pages (never trained on), each from the start of a document."""
    return [(tokenizer.bos_token or "") + str(page["text"]) for page in pages]


def record_texts(records: list[dict[str, Any]], tokenizer: Any, system_prompt: str, count: int = 4) -> list[str]:
    """Without held-out pages: a fixed slice of training records (every k-th) in the training format."""
    if not records:
        return []
    step = max(1, len(records) // count)
    picked = records[::step][:count]
    return [render_text(tokenizer, record_messages(r, system_prompt)) for r in picked]
