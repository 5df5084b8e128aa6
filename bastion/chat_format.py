"""One prompt format end to end: an Alpaca record as chat messages in the base model's template.

The data is stored as Alpaca records, but the model is trained, evaluated and served as a chat:
the recipe's system prompt, the instruction (plus input) as the user turn and the output as the
assistant turn, rendered by the base model's own chat template (Llama 3.1: header tokens and
``<|eot_id|>``), never the Alpaca "Below is an instruction" prompt.
"""

from __future__ import annotations

from typing import Any

#: Values passed to the chat template (Llama 3.1's header otherwise holds "Today Date: 26 Jul 2024"
#: by default; pinning it keeps training, evaluation and serving on the same string).
CHAT_TEMPLATE_KWARGS: dict[str, str] = {"date_string": "26 Jul 2024"}


def user_content(record: dict[str, Any]) -> str:
    """The user turn of a record: the instruction, then the input (if any) after a blank line."""
    extra = str(record.get("input") or "").strip()
    return record["instruction"] + (f"\n\n{extra}" if extra else "")


def record_messages(record: dict[str, Any], system_prompt: str) -> list[dict[str, str]]:
    """System, user and assistant messages for one Alpaca record."""
    return [
        {"role": "system", "content": system_prompt},
        {"role": "user", "content": user_content(record)},
        {"role": "assistant", "content": record["output"]},
    ]


def prompt_messages(system_prompt: str, user: str) -> list[dict[str, str]]:
    """The messages of a question at inference time (no assistant turn yet)."""
    return [{"role": "system", "content": system_prompt}, {"role": "user", "content": user}]


def render_ids(tokenizer: Any, messages: list[dict[str, str]], *, generation_prompt: bool = False) -> list[int]:
    """Token ids of ``messages`` under the tokenizer's chat template."""
    out = tokenizer.apply_chat_template(
        messages, tokenize=True, add_generation_prompt=generation_prompt, return_dict=False, **CHAT_TEMPLATE_KWARGS
    )
    return list(out)


def render_text(tokenizer: Any, messages: list[dict[str, str]], *, generation_prompt: bool = False) -> str:
    """The prompt string of ``messages`` under the tokenizer's chat template."""
    text: str = tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=generation_prompt, **CHAT_TEMPLATE_KWARGS
    )
    return text
