"""The synth stage, top to bottom: read the chunks, plan the requests, ask the teacher (cache first),
run the gates in request order, mix in extractive records, write the outputs and the report.

Everything after the replies is a function of the cached replies in a fixed order, so a rerun (or a
run resumed after a SIGKILL) writes the same records, and a deterministic teacher gives
byte-identical files. The records and their provenance are written atomically at the end.
"""

from __future__ import annotations

import hashlib
import logging
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from bastion.atomic import write_jsonl
from bastion.decontam import BankOverlap, eval_bank_files, read_bank, record_text
from bastion.errors import ToolError
from bastion.recipe import Recipe
from bastion.run_folder import RunFolder
from synth import gates, prompts, report
from synth.asking import Ask, Sampling, ask_all
from synth.cache import Reply, ReplyCache, key
from synth.chunks import Chunk, read_chunks, select
from synth.client import Teacher
from synth.config import TeacherSettings, teacher_settings
from synth.dedup import QuestionDeduper
from synth.judge import JUDGE_MAX_TOKENS, Judge
from synth.serve import Served, plan_serving, serving

log = logging.getLogger(__name__)

FUNNEL = ("requested", "parsed", "grounded", "judged", "deduplicated", "decontaminated", "kept")


@dataclass
class Outcome:
    """One request's path through the gates."""

    request: prompts.Request
    chunk: Chunk
    cache_key: str
    pair: gates.Pair | None = None
    rejected_at: str | None = None  # the funnel step that dropped it
    reason: str | None = None
    detail: str | None = None
    support: float | None = None
    judge_score: int | None = None
    tags: dict[str, Any] = field(default_factory=dict)

    def reject(self, step: str, reason: str, detail: str | None = None) -> None:
        self.rejected_at, self.reason, self.detail = step, reason, detail


def run_synth(recipe: Recipe, folder: RunFolder, *, dry_run: bool = False, **_: Any) -> dict[str, Any]:
    """Stage entry point."""
    s = recipe.data["synth"]
    t = s["teacher"]
    seed = int(t["seed"])
    if dry_run and not folder.train_data.is_file():
        _print_plan(recipe, None, [])  # before harvest: the teacher and its command line only
        return {}
    harvested, heldout_skipped = read_chunks(folder)
    chunks = select(harvested, s["max_chunks"], seed)
    requests = prompts.plan([c.hash for c in chunks], s["question_types"], s["personas"], s["pairs_per_chunk"], seed)
    if dry_run:
        _print_plan(recipe, chunks, requests)
        return {}
    overlap = _bank_overlap(recipe) if s["decontaminate"] else None
    folder.synth_dir.mkdir(parents=True, exist_ok=True)
    cache = ReplyCache(folder.synth_cache)
    start = time.monotonic()
    try:
        with serving(recipe) as served:
            settings = teacher_settings(s, served.model)
            teacher = _teacher(served.urls, settings)
            try:
                outcomes, hits, usage_by, judge_info = _ask_and_judge(
                    recipe, teacher, cache, chunks, requests, settings
                )
            finally:
                teacher.close()
    finally:
        cache.close()
    wall = time.monotonic() - start
    _gate_rest(s, outcomes, overlap)
    kept = [o for o in outcomes if o.rejected_at is None]
    extractive, fallback = _extractive(s, harvested, len(kept), overlap, seed)
    records, provenance = _records(kept, extractive, settings, fallback)
    accounting = {
        "wall_seconds": round(wall, 3),
        "requests": len(requests),
        "cache_hits": hits,
        "teacher": usage_by,
        "prompt_tokens": sum(u["prompt_tokens"] for u in usage_by.values()),
        "completion_tokens": sum(u["completion_tokens"] for u in usage_by.values()),
        "http_requests": sum(u["http_requests"] for u in usage_by.values()),
    }
    summary = report.build(
        recipe=recipe,
        outcomes=outcomes,
        chunks=chunks,
        harvested=len(harvested),
        heldout_skipped=heldout_skipped,
        extractive=len(extractive),
        fallback=fallback,
        accounting=accounting,
        judge=judge_info,
        served=served,
        settings=settings,
        template=prompts.template_hash(),
    )
    report.write(folder, summary)
    if len(kept) < s["min_pairs"] and not fallback:
        raise ToolError(
            f"synth kept {len(kept)} pairs (synth.min_pairs is {s['min_pairs']}): "
            f"{report.one_line(summary)}. Nothing was passed to training; see {folder.synth_report_md} "
            "(or set synth.fallback_to_extractive: true to train on harvest's extractive records)"
        )
    write_jsonl(folder.synth_pairs, records)
    write_jsonl(folder.synth_provenance, provenance)
    log.info(
        "synth: %d pairs + %d extractive records -> %s (report %s); %s",
        len(kept),
        len(extractive),
        folder.synth_pairs,
        folder.synth_report_md,
        report.one_line(summary),
    )
    return {
        "pairs": len(kept),
        "extractive": len(extractive),
        "records": len(records),
        "fallback_to_extractive": fallback,
        "funnel": summary["funnel"]["counts"],
        **accounting,
    }


def _teacher(urls: list[str], settings: TeacherSettings) -> Teacher:
    return Teacher(
        urls,
        model=settings.model,
        api_key_env=settings.api_key_env,
        timeout=settings.timeout,
        max_retries=settings.max_retries,
        backoff=settings.backoff,
        max_backoff=settings.max_backoff,
        response_format=settings.response_format,
        max_concurrency=settings.max_concurrency,
    )


def _ask_and_judge(
    recipe: Recipe,
    teacher: Teacher,
    cache: ReplyCache,
    chunks: list[Chunk],
    requests: list[prompts.Request],
    settings: TeacherSettings,
) -> tuple[list[Outcome], int, dict[str, dict[str, Any]], dict[str, Any] | None]:
    s = recipe.data["synth"]
    g = s["grounding"]
    schema = prompts.reply_schema(int(g["max_quotes"]))
    template = prompts.template_hash()
    identity = settings.cache_identity()
    outcomes = []
    asks = []
    n = len(teacher.endpoints)
    for i, r in enumerate(requests):
        chunk = chunks[r.chunk_index]
        k = key(
            chunk=chunk.hash,
            template=template,
            teacher=identity,
            kind=r.kind,
            persona=r.persona,
            slot=r.slot,
            evidence=[g["max_quotes"], g["min_quote_words"]],
        )
        outcomes.append(Outcome(r, chunk, k))
        msgs = prompts.messages(chunk, r, int(g["max_quotes"]), int(g["min_quote_words"]))
        asks.append(Ask(k, "pair", msgs, schema, "qa_pair", i % n))
    sampling = Sampling(settings.temperature, settings.seed, settings.max_tokens)

    def check(content: str, finish: str | None) -> str | None:
        return gates.parse(content, finish, schema).error

    replies, hits = ask_all(teacher, cache, asks, sampling, check, int(s["parse_retries"]), "synth: teacher")
    for outcome, reply in zip(outcomes, replies, strict=True):
        _parse_and_ground(outcome, reply, schema, g)
    usage = {"teacher": teacher.usage.as_dict()}
    # what every reply cost when it was asked for (this run or an earlier one): the full run's tokens
    usage["teacher"]["all_replies"] = {
        "calls": sum(r.attempts for r in replies),
        "prompt_tokens": sum(r.prompt_tokens for r in replies),
        "completion_tokens": sum(r.completion_tokens for r in replies),
    }
    judge_info = None
    j = s["judge"]
    if j["enabled"]:
        judge_info, judge_usage = _run_judge(recipe, teacher, cache, outcomes, settings)
        if judge_usage is not None:
            usage["judge"] = judge_usage
    return outcomes, hits, usage, judge_info


def _parse_and_ground(outcome: Outcome, reply: Reply, schema: dict[str, Any], g: dict[str, Any]) -> None:
    if reply.error is not None:
        reason, _, detail = reply.error.partition(": ")
        outcome.reject("parsed", reason, detail)
        return
    parsed = gates.parse(reply.content, None, schema)
    if parsed.pair is None:  # the schema changed since the reply was cached as valid
        reason, _, detail = (parsed.error or "schema_mismatch").partition(": ")
        outcome.reject("parsed", reason, detail)
        return
    outcome.pair = parsed.pair
    verdict = gates.grounding_verdict(
        parsed.pair, outcome.request.kind, outcome.chunk.text, float(g["min_support"]), int(g["min_quote_words"])
    )
    outcome.support = round(gates.support(parsed.pair.answer, outcome.chunk.text), 4)
    if verdict is not None:
        outcome.reject("grounded", verdict)


def _run_judge(
    recipe: Recipe, teacher: Teacher, cache: ReplyCache, outcomes: list[Outcome], settings: TeacherSettings
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    s = recipe.data["synth"]
    j = s["judge"]
    own = j["base_url"] is None and j["model"] is None and j["api_key_env"] is None
    judge_teacher = (
        teacher
        if own
        else _teacher(
            [j["base_url"]] if j["base_url"] else [e.url for e in teacher.endpoints],
            teacher_settings(s, j["model"] or settings.model, api_key_env=j["api_key_env"]),
        )
    )
    identity = {"model": j["model"] or settings.model, "temperature": settings.temperature, "seed": settings.seed}
    judge = Judge(
        judge_teacher,
        cache,
        identity,
        Sampling(settings.temperature, settings.seed, JUDGE_MAX_TOKENS),
        int(s["parse_retries"]),
    )
    try:
        info = judge.calibrate(float(j["min_agreement"]))
        pending = [o for o in outcomes if o.rejected_at is None and o.pair is not None]
        items = [(o.chunk.text, o.pair.question, o.pair.answer) for o in pending if o.pair is not None]
        scores, _ = judge.scores(items, "synth: judge")
        for outcome, value in zip(pending, scores, strict=True):
            outcome.judge_score = value
            if value is None:
                outcome.reject("judged", "judge_unreadable")
            elif value < int(j["min_score"]):
                outcome.reject("judged", "judge_low_score", f"score {value}")
        info["min_score"] = int(j["min_score"])
        return info, None if own else judge_teacher.usage.as_dict()
    finally:
        if not own:
            judge_teacher.close()


def _gate_rest(s: dict[str, Any], outcomes: list[Outcome], overlap: BankOverlap | None) -> None:
    """Near-duplicate questions, then overlap with the eval banks, in request order."""
    d = s["dedup"]
    deduper = QuestionDeduper(d["threshold"], d["num_perm"], d["bands"], d["rows"], d["shingle_size"])
    for outcome in outcomes:
        if outcome.rejected_at is not None or outcome.pair is None:
            continue
        if d["enabled"]:
            dup = deduper.admit(outcome.cache_key, outcome.pair.question)
            if dup is not None:
                outcome.reject("deduplicated", dup)
                continue
        if overlap is not None:
            hit = overlap.match(record_text(_alpaca(outcome.pair)))
            if hit is not None:
                outcome.reject("decontaminated", "eval_overlap", f"question {hit[0]}, {hit[1]} shared n-grams")


def _bank_overlap(recipe: Recipe) -> BankOverlap:
    docs = [doc for path in eval_bank_files(recipe.eval, recipe.resolve_path) for doc in read_bank(path)]
    return BankOverlap(docs, int(recipe.eval["decontamination_ngram"]))


def _extractive(
    s: dict[str, Any], harvested: list[Chunk], pairs: int, overlap: BankOverlap | None, seed: int
) -> tuple[list[Chunk], bool]:
    """Harvest's records kept beside the pairs: ``mix_extractive`` of the final set (every record on a
    fallback); chosen by a seeded hash, in harvest's order; none that overlaps an eval bank."""
    clean = [c for c in harvested if overlap is None or overlap.match(record_text(c.record)) is None]
    if pairs < s["min_pairs"] and s["fallback_to_extractive"]:
        log.warning(
            "synth: only %d pairs kept (synth.min_pairs %d): training on harvest's %d extractive records instead "
            "(synth.fallback_to_extractive)",
            pairs,
            s["min_pairs"],
            len(clean),
        )
        return clean, True
    mix = float(s["mix_extractive"])
    want = min(len(clean), round(mix * pairs / (1 - mix))) if mix > 0 else 0
    rank = sorted(range(len(clean)), key=lambda i: hashlib.sha256(f"{seed}:mix:{clean[i].hash}".encode()).hexdigest())
    chosen = set(rank[:want])
    return [c for i, c in enumerate(clean) if i in chosen], False


def _alpaca(pair: gates.Pair) -> dict[str, str]:
    return {"instruction": pair.question, "input": "", "output": pair.answer}


def _records(
    kept: list[Outcome], extractive: list[Chunk], settings: TeacherSettings, fallback: bool
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The Alpaca records (pairs in request order, then extractive ones) and their provenance lines."""
    teacher = settings.cache_identity()
    template = prompts.template_hash()
    records, provenance = [], []
    for o in [] if fallback else kept:
        assert o.pair is not None
        records.append(_alpaca(o.pair))
        provenance.append(
            {
                "kind": "pair",
                **_where(o.chunk),
                "question_type": o.request.kind,
                "persona": o.request.persona,
                "evidence": o.pair.evidence,
                "support": o.support,
                "judge_score": o.judge_score,
                "teacher": teacher,
                "template": template,
                "cache_key": o.cache_key,
            }
        )
    for c in extractive:
        records.append(c.record)
        provenance.append({"kind": "extractive", **_where(c)})
    return records, provenance


def _where(c: Chunk) -> dict[str, str]:
    return {"chunk": c.hash, "url": c.url, "title": c.title, "section": c.section, "source": c.source}


def _print_plan(recipe: Recipe, chunks: list[Chunk] | None, requests: list[prompts.Request]) -> None:
    s = recipe.data["synth"]
    served: Served = plan_serving(recipe)
    kinds = Counter(r.kind for r in requests)
    counted = (
        f"{len(chunks)} chunks x {s['pairs_per_chunk']} = {len(requests)} requests"
        if chunks is not None
        else f"not harvested yet ({s['pairs_per_chunk']} requests per chunk)"
    )
    lines = [
        f"# synth plan for {recipe.name}: {counted}",
        f"# teacher: {served.model} ({served.engine})",
        *(f"#   base_url {u}" for u in served.urls),
        *([f"# launch: {' '.join(served.command)}"] if served.command else []),
        "# question types: "
        + ", ".join(f"{k} {v}" for k, v in (sorted(kinds.items()) or s["question_types"].items()) if v),
    ]
    sys.stdout.write("\n".join(lines) + "\n")
