"""The data-quality report: quality.json, quality.md and histograms (PNG)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from bastion.atomic import write_json, write_text
from bastion.run_folder import RunFolder

log = logging.getLogger(__name__)


def write_report(folder: RunFolder, stats: dict[str, Any], *, histograms: bool = True) -> list[Path]:
    """Write quality.json, quality.md and (optionally) the PNG histograms beside them; return the paths."""
    written = []
    if histograms:
        written += _histograms(folder.quality_md.parent, stats)
    summary = {k: v for k, v in stats.items() if k not in ("word_counts", "grades")}
    summary["histograms"] = [p.name for p in written]
    write_json(folder.quality_json, summary)
    write_text(folder.quality_md, render_markdown(summary))
    return [folder.quality_json, folder.quality_md, *written]


def _histograms(report_dir: Path, stats: dict[str, Any]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = []
    for key, title, xlabel, name in (
        ("word_counts", "Record length", "words per record", "length_hist.png"),
        ("grades", "Readability of kept records", "Flesch-Kincaid grade (prose only)", "grade_hist.png"),
    ):
        values = [v for v in stats.get(key, []) if v is not None]
        fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
        if values:
            ax.hist(values, bins=min(30, max(5, len(values) // 3)), color="#3b6ea5", edgecolor="white")
        else:
            ax.text(0.5, 0.5, "no records", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(f"{title} (n={len(values)})")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("records")
        fig.tight_layout()
        tmp = report_dir / f".{name}.tmp.png"
        fig.savefig(tmp)
        plt.close(fig)
        tmp.replace(report_dir / name)
        out.append(report_dir / name)
    return out


def _heldout(h: dict[str, Any]) -> str:
    if not h.get("pages"):
        return "None (harvest.heldout.fraction is 0, or too few pages).\n"
    return (
        f"- pages set aside whole (never trained on): {h['pages']} (fraction {h['fraction']}), "
        f"{h['words']} words, {h['sections_of_heldout_pages']} passing sections\n"
        f"- training sections dropped for sharing a word sequence with them: {h['overlapping_sections_dropped']}\n"
    )


def _table(rows: dict[str, Any], head: tuple[str, str]) -> str:
    if not rows:
        return "_none_\n"
    lines = [f"| {head[0]} | {head[1]} |", "|---|---:|"]
    lines += [f"| {k} | {v} |" for k, v in sorted(rows.items(), key=lambda kv: (-_num(kv[1]), kv[0]))]
    return "\n".join(lines) + "\n"


def _num(value: Any) -> float:
    return float(value) if isinstance(value, int | float) else 0.0


def render_markdown(s: dict[str, Any]) -> str:
    """The human-readable report."""
    pages, sections, dedup = s["pages"], s["sections"], s["dedup"]
    records, diversity = s["records"], s["diversity"]
    parts = [
        f"# Data quality: {s['recipe']}\n",
        f"Generated {s['generated']}. Records kept: **{records['kept']}** "
        f"from {pages['fetched']} pages ({sections['total']} sections, {sections['chunks']} chunks).\n",
        "## Pages\n",
        f"- fetched: {pages['fetched']}\n"
        f"- links not followed (never requested): {sum(pages['not_followed'].values())}\n"
        f"- requested and failed: {sum(pages['failed'].values())}\n"
        f"- pages with no extractable text: {pages['no_text']}\n",
        "### Not followed, by reason\n",
        "Links found but never requested: off the allowed domains or path prefixes, disallowed by "
        "robots.txt, crawler traps, files that are not pages, pages already fetched.\n\n",
        _table(pages["not_followed"], ("reason", "links")),
        "### Requested and failed, by HTTP status or error\n",
        _table(pages["failed"], ("status or error", "URLs")),
        "### Pages per domain\n",
        _table(pages["per_domain"], ("domain", "pages")),
        "## Quality gates\n",
        f"Chunks checked: {sections['chunks']}; passed: {sections['passed']}.\n\n",
        _table(sections["rejected"], ("rejected by", "chunks")),
        "## Duplicates\n",
        f"- exact duplicates removed: {dedup['exact']}\n- near-duplicates removed (MinHash LSH, "
        f"Jaccard >= {dedup['threshold']}): {dedup['near']}\n",
        "## Held-out pages\n",
        _heldout(s.get("heldout") or {}),
        "## Records\n",
        _table(records["per_source"], ("source", "records")),
        f"\nWords per record: min {records['words_min']}, median {records['words_median']}, "
        f"max {records['words_max']}. Grade (prose): median {records['grade_median']}.\n",
        "## Instruction diversity\n",
        f"- distinct templates: {diversity.get('distinct_templates', 0)}\n"
        f"- template entropy: {diversity.get('template_entropy_bits', 0)} bits\n"
        f"- intent entropy: {diversity.get('intent_entropy_bits', 0)} bits\n\n",
        _table(diversity.get("intent_counts", {}), ("intent", "records")),
    ]
    if s.get("histograms"):
        parts.append("\n" + "\n".join(f"![{p}]({p})" for p in s["histograms"]) + "\n")
    return "\n".join(parts)
