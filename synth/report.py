"""The synth quality report: the funnel (requested -> parsed -> grounded -> judged -> deduplicated ->
decontaminated -> kept) with what each step rejected by reason, coverage per source, the question
types' shares, the teacher's cost (requests, tokens, wall time, cache hits), and sample pairs.

No URL of a teacher server with credentials, and no API key, is written: the servers appear as
their count and engine only.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import TYPE_CHECKING, Any

from bastion.atomic import write_json, write_text
from bastion.manifest import now_iso
from bastion.recipe import Recipe
from bastion.run_folder import RunFolder
from synth import gates, prompts
from synth.chunks import Chunk
from synth.config import TeacherSettings
from synth.serve import Served

if TYPE_CHECKING:
    from synth.pipeline import Outcome

STEPS = ("requested", "parsed", "grounded", "judged", "deduplicated", "decontaminated", "kept")
REASONS: dict[str, dict[str, str]] = {
    "parsed": gates.PARSE_REASONS,
    "grounded": gates.GROUNDING_REASONS,
    "judged": {
        "judge_low_score": "the judge scored the pair below synth.judge.min_score",
        "judge_unreadable": "the judge's verdict did not match its schema",
    },
    "deduplicated": {
        "exact_duplicate_question": "the same question (normalised words) was kept before",
        "near_duplicate_question": "a question at or above synth.dedup.threshold similarity was kept before",
    },
    "decontaminated": {"eval_overlap": "the pair shares an n-gram with an eval bank question"},
}


def build(
    *,
    recipe: Recipe,
    outcomes: list[Outcome],
    chunks: list[Chunk],
    harvested: int,
    heldout_skipped: int,
    extractive: int,
    fallback: bool,
    accounting: dict[str, Any],
    judge: dict[str, Any] | None,
    served: Served,
    settings: TeacherSettings,
    template: str,
) -> dict[str, Any]:
    """The report as a dict (report.json)."""
    rejected: dict[str, Counter[str]] = {step: Counter() for step in STEPS[1:-1]}
    for o in outcomes:
        if o.rejected_at is not None and o.reason is not None:
            rejected[o.rejected_at][o.reason] += 1
    counts = {"requested": len(outcomes)}
    remaining = len(outcomes)
    for step in STEPS[1:-1]:
        remaining -= sum(rejected[step].values())
        counts[step] = remaining
    counts["kept"] = remaining
    by_source: dict[str, set[str]] = defaultdict(set)
    covered: dict[str, set[str]] = defaultdict(set)
    for c in chunks:
        by_source[c.source].add(c.hash)
    for o in outcomes:
        if o.rejected_at is None:
            covered[o.chunk.source].add(o.chunk.hash)
    coverage = {
        src: {
            "chunks": len(hashes),
            "covered": len(covered[src]),
            "share": round(len(covered[src]) / len(hashes), 4) if hashes else 0.0,
        }
        for src, hashes in sorted(by_source.items())
    }
    shares = recipe.data["synth"]["question_types"]
    requested_kinds = Counter(o.request.kind for o in outcomes)
    kept_kinds = Counter(o.request.kind for o in outcomes if o.rejected_at is None)
    types = {
        k: {
            "target": shares[k],
            "requested": requested_kinds[k],
            "share": round(requested_kinds[k] / len(outcomes), 4) if outcomes else 0.0,
            "kept": kept_kinds[k],
        }
        for k in prompts.QUESTION_TYPES
    }
    examples = [
        {"question_type": o.request.kind, "question": o.pair.question, "answer": o.pair.answer, "url": o.chunk.url}
        for o in outcomes
        if o.rejected_at is None and o.pair is not None
    ][:5]
    return {
        "recipe": recipe.name,
        "generated": now_iso(),
        "chunks": {"harvested": harvested, "heldout_skipped": heldout_skipped, "sent": len(chunks)},
        "funnel": {
            "steps": list(STEPS),
            "counts": counts,
            "rejected": {step: dict(sorted(c.items())) for step, c in rejected.items()},
            "reasons": REASONS,
        },
        "coverage": coverage,
        "question_types": types,
        "extractive_records": extractive,
        "fallback_to_extractive": fallback,
        "teacher": {
            "engine": served.engine,
            "servers": len(served.urls),
            "command": served.command,
            "settings": settings.cache_identity() | {"response_format": settings.response_format},
            "template_hash": template,
        },
        "judge": judge,
        "cost": accounting,
        "examples": examples,
    }


def one_line(report: dict[str, Any]) -> str:
    """The funnel in one line, with the main rejection reasons."""
    counts = report["funnel"]["counts"]
    line = " -> ".join(f"{step} {counts[step]}" for step in STEPS)
    reasons = Counter[str]()
    for c in report["funnel"]["rejected"].values():
        reasons.update(c)
    if reasons:
        line += " (rejected: " + ", ".join(f"{r} {n}" for r, n in reasons.most_common(5)) + ")"
    return line


def render_markdown(report: dict[str, Any]) -> str:
    counts = report["funnel"]["counts"]
    cost = report["cost"]
    lines = [
        f"# Synth report: {report['recipe']}",
        "",
        f"Chunks: {report['chunks']['harvested']} harvested, {report['chunks']['heldout_skipped']} of held-out pages "
        f"skipped, {report['chunks']['sent']} sent to the teacher.",
        "",
        "## Funnel",
        "",
        "| step | pairs | rejected here, by reason |",
        "| --- | ---: | --- |",
    ]
    for step in STEPS:
        why = report["funnel"]["rejected"].get(step, {})
        lines.append(f"| {step} | {counts[step]} | {', '.join(f'{r}: {n}' for r, n in why.items()) or '-'} |")
    lines += ["", "Reasons:", ""]
    for step, reasons in report["funnel"]["reasons"].items():
        for reason, text in reasons.items():
            lines.append(f"- `{reason}` ({step}): {text}")
    if report["fallback_to_extractive"]:
        lines += ["", "**Too few pairs were kept: the training data is harvest's extractive records (fallback).**"]
    lines += [
        "",
        f"Extractive records kept beside the pairs: {report['extractive_records']}.",
        "",
        "## Coverage per source",
        "",
        "| source | chunks | with a kept pair | share |",
        "| --- | ---: | ---: | ---: |",
    ]
    for src, c in report["coverage"].items():
        lines.append(f"| {src} | {c['chunks']} | {c['covered']} | {c['share']:.0%} |")
    lines += [
        "",
        "## Question types",
        "",
        "| type | target | requested | share | kept |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for kind, v in report["question_types"].items():
        lines.append(f"| {kind} | {v['target']:.0%} | {v['requested']} | {v['share']:.0%} | {v['kept']} |")
    t = report["teacher"]
    everything = cost["teacher"]["teacher"]["all_replies"]
    lines += [
        "",
        "## Teacher and cost",
        "",
        f"- engine: {t['engine']}, servers: {t['servers']}, settings: `{t['settings']}`",
        *([f"- command: `{' '.join(t['command'])}`"] if t["command"] else []),
        f"- requests planned: {cost['requests']}, from the cache: {cost['cache_hits']}, "
        f"HTTP requests made: {cost['http_requests']}",
        f"- tokens this run: {cost['prompt_tokens']} prompt + {cost['completion_tokens']} completion",
        f"- tokens of all the replies (this run and cached ones): {everything['prompt_tokens']} prompt + "
        f"{everything['completion_tokens']} completion, in {everything['calls']} calls",
        f"- wall time of the teacher phase: {cost['wall_seconds']:.1f} s",
    ]
    for who, usage in cost["teacher"].items():
        lines.append(  # noqa: PERF401
            f"- {who}: {usage['completions']} completions, retries {usage['retries'] or 'none'}, "
            f"failovers {usage['failovers']}, format switches {usage['format_switches']}"
        )
    if report["judge"]:
        j = report["judge"]
        lines += [
            "",
            f"Judge: agrees with {j['agreeing']} of {j['cases']} labelled rubric cases ({j['agreement']:.0%}); "
            f"pairs need a score of {j.get('min_score')}.",
        ]
    if report["examples"]:
        lines += ["", "## Kept pairs (first five)", ""]
        for e in report["examples"]:
            lines += [f"- **{e['question_type']}**: {e['question']}", f"  - {e['answer']}"]
    return "\n".join(lines) + "\n"


def write(folder: RunFolder, report: dict[str, Any]) -> None:
    write_json(folder.synth_report_json, report)
    write_text(folder.synth_report_md, render_markdown(report))
