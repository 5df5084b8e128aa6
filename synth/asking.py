"""Asking the teacher many things at once: cached replies first, the rest in a thread pool with a
progress bar (ETA), each reply committed to the cache the moment it is complete.

A reply that does not parse against its schema is asked for again (``parse_retries`` times, with the
parse error in a follow-up message) and then kept, refused, with its reason: the cache holds the
final outcome of every request, so a rerun asks nothing again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any

from bastion.errors import BastionError
from bastion.progress import progress_bar
from synth.cache import Reply, ReplyCache
from synth.client import Teacher
from synth.prompts import retry_message

log = logging.getLogger(__name__)

#: A reply's parse check: (content, finish_reason) -> None when it is usable, else "reason: detail".
Check = Callable[[str, str | None], str | None]


@dataclass(frozen=True)
class Ask:
    """One request: its cache key and kind, its messages and schema, and the server it prefers."""

    key: str
    kind: str  # "pair" or "judge"
    messages: list[dict[str, str]]
    schema: dict[str, Any]
    schema_name: str
    prefer: int


@dataclass(frozen=True)
class Sampling:
    temperature: float
    seed: int
    max_tokens: int


def ask_one(teacher: Teacher, ask: Ask, sampling: Sampling, check: Check, parse_retries: int) -> Reply:
    """Ask until the reply parses or the retries are spent; the final reply with its reason."""
    messages = list(ask.messages)
    prompt = completion = attempts = 0
    while True:
        attempts += 1
        answer = teacher.complete(
            messages,
            ask.schema,
            temperature=sampling.temperature,
            seed=sampling.seed,
            max_tokens=sampling.max_tokens,
            prefer=ask.prefer,
            schema_name=ask.schema_name,
        )
        prompt += answer.prompt_tokens
        completion += answer.completion_tokens
        if answer.refusal is not None:
            return Reply("", f"teacher_refused: {answer.refusal}", attempts, prompt, completion)
        error = check(answer.content, answer.finish_reason)
        if error is None or attempts > parse_retries:
            return Reply(answer.content, error, attempts, prompt, completion)
        messages = [*ask.messages, {"role": "assistant", "content": answer.content[:4000]}, retry_message(error)]


def ask_all(
    teacher: Teacher,
    cache: ReplyCache,
    asks: Sequence[Ask],
    sampling: Sampling,
    check: Check,
    parse_retries: int,
    label: str,
) -> tuple[list[Reply], int]:
    """Every request's reply, in order, and how many came from the cache.

    Misses run ``teacher.slots`` at a time. When one fails for good (the teacher stays down), no new
    request starts, those in flight finish (and are cached), and the error is raised.
    """
    replies: list[Reply | None] = [cache.get(a.key) for a in asks]
    hits = sum(r is not None for r in replies)
    missing = [i for i, r in enumerate(replies) if r is None]
    if not missing:
        log.info("%s: all %d replies from the cache (0 teacher calls)", label, len(asks))
        return [r for r in replies if r is not None], hits
    log.info("%s: %d replies cached, %d to ask the teacher for", label, hits, len(missing))
    stop = threading.Event()
    failure: list[BaseException] = []

    def job(i: int) -> tuple[int, Reply | None]:
        if stop.is_set():
            return i, None
        try:
            reply = ask_one(teacher, asks[i], sampling, check, parse_retries)
        except BastionError as exc:
            stop.set()
            failure.append(exc)
            return i, None
        cache.put(asks[i].key, asks[i].kind, reply)
        return i, reply

    step = max(1, len(missing) // 10)
    with progress_bar(eta=True) as progress, ThreadPoolExecutor(max_workers=teacher.slots) as pool:
        task = progress.add_task(label, total=len(missing))
        futures = [pool.submit(job, i) for i in missing]
        try:
            for done, future in enumerate(as_completed(futures), 1):
                i, reply = future.result()
                replies[i] = reply
                progress.advance(task)
                if done % step == 0 and progress.disable:  # no bar: a line every 10%
                    log.info("%s: %d/%d", label, done, len(missing))
        except BaseException:
            stop.set()
            for future in futures:
                future.cancel()
            raise
    if failure:
        raise failure[0]
    return [r for r in replies if r is not None], hits
