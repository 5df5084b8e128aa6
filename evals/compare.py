"""The eval report: base vs tuned per task and per category, with 95% intervals and a verdict."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from bastion.atomic import write_json, write_text
from bastion.decontam import record_text
from bastion.manifest import now_iso
from bastion.recipe import Recipe
from bastion.run_folder import RunFolder
from evals.decontam import contaminated
from evals.stats import compare, compare_bits_per_byte

log = logging.getLogger(__name__)

ModelRows = dict[str, dict[str, dict[str, Any]]]  # task -> question id -> row
Runs = dict[str, ModelRows]  # model -> its rows
PRIMARY = ("acc", "key_point_coverage", "exact_match", "rouge_l")
BINARY = {"acc", "exact_match"}


def _train_texts(recipe: Recipe, folder: RunFolder) -> list[str]:
    path = folder.training_records(recipe)
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [record_text(r) for r in rows]


def _metrics_of(rows: dict[str, dict[str, Any]]) -> list[str]:
    present = {m for row in rows.values() for m in row if m in PRIMARY}
    return [m for m in PRIMARY if m in present]


def _excluded(recipe: Recipe, folder: RunFolder, rows: ModelRows) -> dict[str, int]:
    """Questions that share an n-gram with the training data: question id -> shared n-grams."""
    docs = [row["doc"] for task in rows.values() for row in task.values()]
    return contaminated(_train_texts(recipe, folder), docs, n=recipe.eval["decontamination_ngram"])


def build_report(recipe: Recipe, folder: RunFolder, runs: Runs, commands: dict[str, str]) -> dict[str, Any]:
    """Compare, write report.json, report.md and comparison.png; return the report."""
    e = recipe.eval
    tuned = runs["tuned"]
    overlap = _excluded(recipe, folder, tuned)
    excluded = set(overlap) if e["decontaminate"] else set()
    tasks: dict[str, Any] = {}
    domain = _domains(runs.get("base", {}), tuned, e)
    titles = task_titles(recipe)
    for task, rows in tuned.items():
        if task in domain:
            continue
        base_rows = runs.get("base", {}).get(task, {})
        entry: dict[str, Any] = {"questions": len(rows), "excluded": sorted(set(rows) & excluded), "metrics": {}}
        for metric in _metrics_of(rows):
            entry["metrics"][metric] = _compare_metric(metric, base_rows, rows, excluded, e)
        tasks[task] = entry | ({"title": titles[task]} if task in titles else {})
    summary = {task: {m: _row(v["overall"]) for m, v in t["metrics"].items()} for task, t in tasks.items()}
    summary |= {task: {"bits_per_byte": _row(d["bits_per_byte"])} for task, d in domain.items()}
    report = {
        "recipe": recipe.name,
        "generated": now_iso(),
        "settings": {
            k: e[k]
            for k in (
                "tasks",
                "num_fewshot",
                "limit",
                "seed",
                "bootstrap_samples",
                "decontaminate",
                "decontamination_ngram",
                "max_gen_tokens",
            )
        }
        | {"system_prompt": recipe.system_prompt, "chat_template": True},
        "compared": "base" in runs,
        "tasks": tasks,
        "domain": domain,
        "summary": summary,
        "contamination": {"overlapping_questions": overlap, "excluded": sorted(excluded)},
        "commands": commands,
    }
    write_json(folder.eval_report_json, report)
    png = _plot(tasks, domain, folder.eval_plot)
    write_text(folder.eval_report_md, render_markdown(report, png.name if png else None))
    return report


def build_gguf_report(
    recipe: Recipe, folder: RunFolder, gguf: Path, tuned: ModelRows, gguf_rows: ModelRows
) -> dict[str, Any]:
    """The GGUF vs the tuned HF model, question by question; writes the eval-gguf report."""
    e = recipe.eval
    excluded = set(_excluded(recipe, folder, tuned)) if e["decontaminate"] else set()
    summary = {
        task: {m: _compare_metric(m, tuned.get(task, {}), rows, excluded, e)["overall"] for m in _metrics_of(rows)}
        for task, rows in gguf_rows.items()
    }
    domain = _domains(tuned, gguf_rows, e)
    for task, d in domain.items():  # tuned HF model as "base", the GGUF as "tuned"
        b = d["bits_per_byte"]
        b["ratio_to_tuned"] = b["tuned"] / b["base"] if b["base"] else None
        summary[task] = {"bits_per_byte": b}
    report = {"recipe": recipe.name, "generated": now_iso(), "gguf": gguf.name, "summary": summary, "domain": domain}
    write_json(folder.gguf_eval_report_json, report)
    write_text(folder.gguf_eval_report_md, render_gguf_markdown(report))
    return report


def render_gguf_markdown(report: dict[str, Any]) -> str:
    """The GGUF report: the tuned HF model's scores beside the exported GGUF's, per task."""
    lines = [
        f"# GGUF evaluation: {report['recipe']}",
        "",
        f"Generated {report['generated']}. `{report['gguf']}` through llama-cpp-python's server, with the same "
        "tasks, prompts and settings as the tuned Hugging Face model in `eval/`.",
        "",
        "| task | metric | n | tuned | GGUF | diff | 95% CI | verdict |",
        "|---|---|---:|---:|---:|---:|---|---|",
    ]
    for task, metrics in report["summary"].items():
        for metric, row in metrics.items():
            if metric == "bits_per_byte":
                lines.append(
                    f"| {task} | bits per byte (lower is better; GGUF / tuned = {row['ratio_to_tuned']:.4f}) | "
                    f"{row['n']} | {row['base']:.4f} | {row['tuned']:.4f} | {row['diff']:+.4f} | "
                    f"[{row['ci_low']:+.4f}, {row['ci_high']:+.4f}] | {row['verdict']} |"
                )
                continue
            lines.append(
                f"| {task} | {metric} | {row['n']} | {_fmt(row['base'])} | {_fmt(row['tuned'])} | "
                f"{_fmt(row['diff'])} | [{_fmt(row['ci_low'])}, {_fmt(row['ci_high'])}] | {row['verdict']} |"
            )
    return "\n".join(lines) + "\n"


SUMMARY_KEYS = ("base", "tuned", "diff", "ci_low", "ci_high", "verdict")


def _row(comparison: dict[str, Any]) -> dict[str, Any]:
    return {k: comparison[k] for k in SUMMARY_KEYS}


def _domains(base: ModelRows, tuned: ModelRows, e: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The rolling log-likelihood tasks among ``tuned``'s, each compared with ``base``."""
    out = {}
    for task, rows in tuned.items():
        compared = _compare_domain(base.get(task, {}), rows, e)
        if compared is not None:
            out[task] = compared
    return out


def _compare_domain(
    base_rows: dict[str, dict[str, Any]], rows: dict[str, dict[str, Any]], e: dict[str, Any]
) -> dict[str, Any] | None:
    """Bits per byte and word perplexity of a rolling log-likelihood task (the held-out pages), base vs
    tuned on the same documents; None for any other task."""
    ids = sorted(q for q in rows if "bits_per_byte" in rows[q])
    if not ids:
        return None
    tuned = {q: rows[q]["bits_per_byte"][0] for q in ids}
    nbytes = {q: rows[q]["bits_per_byte"][1] for q in ids}
    words = sum(rows[q].get("word_perplexity", [0.0, 0.0])[1] for q in ids)
    base = {q: base_rows[q]["bits_per_byte"][0] for q in ids if "bits_per_byte" in base_rows.get(q, {})}
    compared = len(base) == len(ids)

    def bpb(ll: float, n: float) -> float:
        return -ll / (n * math.log(2))

    if compared:
        values = [[d[q] for q in ids] for d in (base, tuned, nbytes)]
        comparison = compare_bits_per_byte(*values, samples=e["bootstrap_samples"], seed=e["seed"]).as_dict()
    else:
        comparison = {"n": len(ids), "base": None, "diff": None, "ci_low": None, "ci_high": None}
        comparison |= {"tuned": bpb(sum(tuned.values()), sum(nbytes.values())), "verdict": "not compared"}
    return {
        "documents": len(ids),
        "bytes": sum(nbytes.values()),
        "words": words,
        "bits_per_byte": comparison,
        "word_perplexity": {
            "base": math.exp(-sum(base.values()) / words) if compared and words else None,
            "tuned": math.exp(-sum(tuned.values()) / words) if words else None,
        },
        "per_document": {
            q: {
                "bytes": nbytes[q],
                "base_bits_per_byte": bpb(base[q], nbytes[q]) if q in base else None,
                "tuned_bits_per_byte": bpb(tuned[q], nbytes[q]),
            }
            for q in ids
        },
    }


def _compare_metric(
    metric: str,
    base_rows: dict[str, dict[str, Any]],
    rows: dict[str, dict[str, Any]],
    excluded: set[str],
    e: dict[str, Any],
) -> dict[str, Any]:
    ids = sorted(
        q for q in rows if q not in excluded and metric in rows[q] and (not base_rows or metric in base_rows.get(q, {}))
    )
    categories = sorted({rows[q]["category"] for q in ids})

    def one(subset: list[str]) -> dict[str, Any]:
        tuned = [rows[q][metric] for q in subset]
        base = [base_rows[q][metric] for q in subset] if base_rows else tuned
        result = compare(base, tuned, binary=metric in BINARY, samples=e["bootstrap_samples"], seed=e["seed"])
        out = result.as_dict()
        if not base_rows:
            out.update(base=None, diff=None, ci_low=None, ci_high=None, p_value=None, verdict="not compared")
        return out

    return {
        "overall": one(ids),
        "by_category": {c: one([q for q in ids if rows[q]["category"] == c]) for c in categories},
    }


def _fmt(value: Any, pct: bool = True) -> str:
    if value is None:
        return "-"
    return f"{100 * value:.1f}" if pct else f"{value:.3f}"


def render_markdown(report: dict[str, Any], png: str | None) -> str:
    """The human-readable report."""
    s = report["settings"]
    lines = [
        f"# Evaluation: {report['recipe']}",
        "",
        f"Generated {report['generated']}. Base and tuned were run with identical settings: tasks "
        f"{', '.join(s['tasks'])}, {s['num_fewshot']}-shot, limit {s['limit']}, seed {s['seed']}, the base "
        "model's chat template and the recipe's system prompt. Scores are percentages; the difference "
        f"(tuned - base) has a 95% paired-bootstrap interval ({s['bootstrap_samples']} resamples over the "
        "same questions); multiple-choice verdicts use the exact McNemar test (p < 0.05).",
        "",
    ]
    for task, d in report.get("domain", {}).items():
        lines += _domain_lines(task, d)
    for task, t in report["tasks"].items():
        lines += [
            f"## {t.get('title', task)}",
            "",
            f"{t['questions']} questions; {len(t['excluded'])} excluded as overlapping the training data.",
            "",
        ]
        for metric, m in t["metrics"].items():
            lines += [
                f"### {metric}",
                "",
                "| category | n | base | tuned | diff | 95% CI | p | verdict |",
                "|---|---:|---:|---:|---:|---|---:|---|",
            ]
            for name, row in [("**all**", m["overall"]), *_categories(m)]:
                ci = "-" if row["ci_low"] is None else f"[{_fmt(row['ci_low'])}, {_fmt(row['ci_high'])}]"
                p = "-" if row["p_value"] is None else f"{row['p_value']:.3f}"
                lines.append(
                    f"| {name} | {row['n']} | {_fmt(row['base'])} | {_fmt(row['tuned'])} | "
                    f"{_fmt(row['diff'])} | {ci} | {p} | {row['verdict']} |"
                )
            lines.append("")
    overlap = report["contamination"]["overlapping_questions"]
    lines += [
        "## Decontamination",
        "",
        f"{len(overlap)} questions share a {s['decontamination_ngram']}-word "
        "sequence with the training data"
        + (" and were excluded from the comparison." if s["decontaminate"] else " (kept: eval.decontaminate is off)."),
        "",
    ]
    lines += [f"- `{qid}`: {n} shared n-grams" for qid, n in sorted(overlap.items())]
    if png:
        lines += ["", f"![tuned - base per category]({png})", ""]
    lines += ["## Reproduce", ""]
    for name, cmd in report["commands"].items():
        lines += [f"{name}:", "", "```bash", cmd, "```", ""]
    return "\n".join(lines) + "\n"


def _categories(metric: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The per-category rows; none when the bank has no categories (its one category is 'all')."""
    by_category = metric["by_category"]
    return [] if set(by_category) <= {"all"} else sorted(by_category.items())


def task_titles(recipe: Recipe) -> dict[str, str]:
    """Report titles: a task fed by a bank of the recipe's own is named after that bank."""
    titles = {}
    for kind, task in (("mcq", "cloudsec_mcq"), ("open", "cloudsec_open")):
        bank = recipe.eval["banks"].get(kind)
        if bank:
            titles[task] = f"{Path(bank).stem} ({task} on {Path(bank).name})"
    return titles


def _domain_lines(task: str, d: dict[str, Any]) -> list[str]:
    """The held-out domain text section: bits per byte and word perplexity, base vs tuned."""
    b, w = d["bits_per_byte"], d["word_perplexity"]
    ci = "-" if b["ci_low"] is None else f"[{b['ci_low']:+.4f}, {b['ci_high']:+.4f}]"

    def num(value: Any, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    return [
        f"## {task}: held-out domain text",
        "",
        f"{d['documents']} held-out pages ({d['words']} words, {d['bytes']} bytes) that no training record "
        "comes from; rolling log-likelihood of each whole page, as lm-eval's wikitext task measures it. "
        "Lower is better; the interval is a paired bootstrap over pages.",
        "",
        "| metric | base | tuned | tuned - base | 95% CI | verdict |",
        "|---|---:|---:|---:|---|---|",
        f"| bits per byte | {num(b['base'], '.4f')} | {num(b['tuned'], '.4f')} | {num(b['diff'], '+.4f')} | {ci} | "
        f"{b['verdict']} |",
        f"| word perplexity | {num(w['base'], '.1f')} | {num(w['tuned'], '.1f')} | | | |",
        "",
    ]


def domain_sentence(report: dict[str, Any]) -> str | None:
    """One line for the demo and the log: held-out bits per byte, base -> tuned, with its interval."""
    for d in report.get("domain", {}).values():
        b = d["bits_per_byte"]
        if b["ci_low"] is None:
            return f"held-out domain text: tuned {b['tuned']:.3f} bits per byte (base not evaluated)"
        return (
            f"held-out domain text: {b['base']:.3f} -> {b['tuned']:.3f} bits per byte "
            f"(tuned - base {b['diff']:+.3f}, 95% CI [{b['ci_low']:+.3f}, {b['ci_high']:+.3f}]: {b['verdict']})"
        )
    return None


def _plot(tasks: dict[str, Any], domain: dict[str, Any], path: Path) -> Path | None:
    """Bars of tuned - base per category (with 95% CIs), one panel per task and metric, and for the
    held-out domain text the bits per byte of each page, base beside tuned."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        (task, metric, m)
        for task, t in tasks.items()
        for metric, m in t["metrics"].items()
        if metric in ("acc", "key_point_coverage") and m["overall"]["diff"] is not None
    ]
    pages = [(task, d) for task, d in domain.items() if d["bits_per_byte"]["base"] is not None]
    if not panels and not pages:
        return None
    fig, axes = plt.subplots(len(panels) + len(pages), 1, figsize=(9, 3.2 * (len(panels) + len(pages))), dpi=100)
    axes = list(np.atleast_1d(axes))
    for ax, (task, metric, m) in zip(axes, panels, strict=False):
        rows = [("all", m["overall"]), *_categories(m)]
        names = [n for n, _ in rows]
        diffs = [100 * r["diff"] for _, r in rows]
        low = [100 * (r["diff"] - r["ci_low"]) for _, r in rows]
        high = [100 * (r["ci_high"] - r["diff"]) for _, r in rows]
        colors = [
            "#2e7d32" if r["verdict"] == "improved" else "#c62828" if r["verdict"] == "regressed" else "#78909c"
            for _, r in rows
        ]
        ax.bar(range(len(rows)), diffs, yerr=[low, high], color=colors, capsize=3)
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_xticks(range(len(rows)), names, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel(f"tuned - base ({metric}, points)")
        ax.set_title(f"{task}: difference with 95% CI")
    for ax, (task, d) in zip(axes[len(panels) :], pages, strict=True):
        docs = sorted(d["per_document"].items())
        x = np.arange(len(docs))
        ax.bar(x - 0.2, [v["base_bits_per_byte"] for _, v in docs], width=0.4, color="#78909c", label="base")
        ax.bar(x + 0.2, [v["tuned_bits_per_byte"] for _, v in docs], width=0.4, color="#2e7d32", label="tuned")
        labels = [url.rstrip("/").rsplit("/", 1)[-1][:28] for url, _ in docs]
        ax.set_xticks(x, labels, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("bits per byte (lower is better)")
        b = d["bits_per_byte"]
        ax.set_title(
            f"{task}: held-out pages, tuned - base {b['diff']:+.3f} bits/byte, 95% CI [{b['ci_low']:+.3f}, "
            f"{b['ci_high']:+.3f}]"
        )
        ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
    return path
