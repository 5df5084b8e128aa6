"""The eval report: base vs tuned per task and per category, with 95% intervals and a verdict."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from bastion.atomic import write_json, write_text
from bastion.manifest import RunFolder, now_iso
from bastion.recipe import Recipe
from evals.decontam import contaminated
from evals.stats import compare

log = logging.getLogger(__name__)

Runs = dict[str, dict[str, dict[str, dict[str, Any]]]]  # model -> task -> question id -> row
PRIMARY = ("acc", "key_point_coverage", "exact_match", "rouge_l")
BINARY = {"acc", "exact_match"}


def _train_texts(folder: RunFolder) -> list[str]:
    path = folder.root / "data" / "train.jsonl"
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [f"{r['instruction']}\n{r.get('input', '')}\n{r['output']}" for r in rows]


def _metrics_of(rows: dict[str, dict[str, Any]]) -> list[str]:
    present = {m for row in rows.values() for m in row if m in PRIMARY}
    return [m for m in PRIMARY if m in present]


def build_report(
    recipe: Recipe, folder: RunFolder, runs: Runs, commands: dict[str, str], eval_dir: Path
) -> dict[str, Any]:
    """Compare, write report.json, report.md and comparison.png; return the report."""
    e = recipe.eval
    tuned = runs["tuned"]
    docs = [row["doc"] for task in tuned.values() for row in task.values()]
    overlap = contaminated(_train_texts(folder), docs, n=e["decontamination_ngram"])
    excluded = set(overlap) if e["decontaminate"] else set()
    tasks: dict[str, Any] = {}
    for task, rows in tuned.items():
        base_rows = runs.get("base", {}).get(task, {})
        entry: dict[str, Any] = {"questions": len(rows), "excluded": sorted(set(rows) & excluded), "metrics": {}}
        for metric in _metrics_of(rows):
            entry["metrics"][metric] = _compare_metric(metric, base_rows, rows, excluded, e)
        tasks[task] = entry
    gguf_loss: dict[str, Any] = {}
    for task, rows in runs.get("gguf", {}).items():
        gguf_loss[task] = {
            m: _compare_metric(m, tuned.get(task, {}), rows, excluded, e)["overall"] for m in _metrics_of(rows)
        }
    summary = {
        task: {
            m: {k: v["overall"][k] for k in ("base", "tuned", "diff", "ci_low", "ci_high", "verdict")}
            for m, v in t["metrics"].items()
        }
        for task, t in tasks.items()
    }
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
        "summary": summary,
        "gguf_vs_tuned": gguf_loss,
        "contamination": {"overlapping_questions": overlap, "excluded": sorted(excluded)},
        "commands": commands,
    }
    write_json(eval_dir / "report.json", report)
    png = _plot(tasks, eval_dir / "comparison.png")
    write_text(eval_dir / "report.md", render_markdown(report, png.name if png else None))
    return report


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
    for task, t in report["tasks"].items():
        lines += [
            f"## {task}",
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
            for name, row in [("**all**", m["overall"]), *sorted(m["by_category"].items())]:
                ci = "-" if row["ci_low"] is None else f"[{_fmt(row['ci_low'])}, {_fmt(row['ci_high'])}]"
                p = "-" if row["p_value"] is None else f"{row['p_value']:.3f}"
                lines.append(
                    f"| {name} | {row['n']} | {_fmt(row['base'])} | {_fmt(row['tuned'])} | "
                    f"{_fmt(row['diff'])} | {ci} | {p} | {row['verdict']} |"
                )
            lines.append("")
    if report.get("gguf_vs_tuned"):
        lines += [
            "## Quantisation loss (GGUF vs tuned HF model)",
            "",
            "| task | metric | n | tuned | GGUF | diff | 95% CI | verdict |",
            "|---|---|---:|---:|---:|---:|---|---|",
        ]
        for task, metrics in report["gguf_vs_tuned"].items():
            for metric, row in metrics.items():
                lines.append(
                    f"| {task} | {metric} | {row['n']} | {_fmt(row['base'])} | {_fmt(row['tuned'])} | "
                    f"{_fmt(row['diff'])} | [{_fmt(row['ci_low'])}, {_fmt(row['ci_high'])}] | "
                    f"{row['verdict']} |"
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


def _plot(tasks: dict[str, Any], path: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        (task, metric, m)
        for task, t in tasks.items()
        for metric, m in t["metrics"].items()
        if metric in ("acc", "key_point_coverage") and m["overall"]["diff"] is not None
    ]
    if not panels:
        return None
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 3.2 * len(panels)), dpi=100, squeeze=False)
    for ax, (task, metric, m) in zip(axes[:, 0], panels, strict=True):
        rows = [("all", m["overall"]), *sorted(m["by_category"].items())]
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
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
    return path
