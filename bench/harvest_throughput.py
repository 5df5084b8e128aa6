"""Per-page cost of the whole harvest pipeline vs trafilatura's extraction alone, side by side.

On a fixed local corpus of realistic documentation pages (bench/corpus.py, 320 pages by default)
this measures, in alternating rounds on the same pages:

- baseline: ``trafilatura.extract`` with the same options Bastion uses (Markdown, tables,
  formatting), nothing else;
- ours: the harvest's per-page work: extraction, sections and token-budget chunks (real Llama 3
  tokenizer), quality gates, then dedup + instruction + record and the atomic JSONL write,
  through the same SQLite checkpoint the stage uses.

Every round of ours builds its token counter and page processor afresh and empties the
process-wide memos, so that no round learns from an earlier one over the same pages. Within a
round the memos work as in a real harvest: a chunk text seen on an earlier page is not analysed
again. Note that the corpus recombines the demo corpus's sections, so more chunks repeat than on
most sites (about 58% of the passed chunks are exact repeats of an earlier one).

Prints the ratio ours / baseline (medians over the rounds). Goal (issue #3): at most 1.25.
Run: ``python bench/harvest_throughput.py [--pages N] [--rounds R]``.
"""

# ruff: noqa: T201  (a benchmark prints its results)
from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import trafilatura  # noqa: E402

from bastion.manifest import now_iso  # noqa: E402
from bastion.recipe import Recipe, load_recipe  # noqa: E402
from bench.corpus import build_corpus  # noqa: E402
from harvest import dedup, gates, instructions, sections  # noqa: E402
from harvest.extract import TRAFILATURA_OPTIONS, extract_html  # noqa: E402
from harvest.pipeline import ChunkStore, PageProcessor, decide_records, max_record_tokens, write_outputs  # noqa: E402
from harvest.tokens import TokenCounter  # noqa: E402


def baseline(pages: list[tuple[str, str]]) -> float:
    start = time.perf_counter()
    for url, html in pages:
        trafilatura.extract(html, url=url, **TRAFILATURA_OPTIONS)
    return time.perf_counter() - start


def forget_memos() -> None:
    """Empty the process-wide memos (words' syllables and hashes, keyword points, parsed blocks),
    so that every round is a fresh harvest that learns nothing from an earlier one."""
    gates._SYLLABLES.clear()
    dedup._WORD_HASHES.clear()
    instructions._WORD_POINTS.clear()
    sections._parse_blocks.cache_clear()
    sections.lower_words.cache_clear()


def ours(pages: list[tuple[str, str]], recipe: Recipe, tokenizer: Any, workdir: Path) -> float:
    # built as run_harvest builds them, afresh for every round, and the process-wide memos
    # emptied: nothing (token counts, gate analyses of repeated texts, ...) carries over from an
    # earlier round over the same pages
    forget_memos()
    count_tokens = TokenCounter(tokenizer)
    processor = PageProcessor(recipe, count_tokens, max_record_tokens(recipe, count_tokens))
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        store = ChunkStore(Path(tmp) / "state.sqlite")
        start = time.perf_counter()
        for url, html in pages:
            doc = extract_html(html, url, "bench")
            with store.transaction() as conn:
                processor.store(conn, doc, source="bench", url=url, fetched_at=now_iso())
        decide_records(recipe, store)
        write_outputs(recipe, store, Path(tmp))
        elapsed = time.perf_counter() - start
        store.close()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=320)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from transformers import AutoTokenizer

    from bastion.tiny_model import tiny_model_dir

    recipe = load_recipe("tiny-cpu.yaml")
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir())

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        files = build_corpus(workdir / "corpus", n_pages=args.pages, seed=0)
        pages = [(f"https://docs.example.test/{p.relative_to(workdir / 'corpus')}", p.read_text()) for p in files]
        mb = sum(len(h) for _, h in pages) / 1e6
        print(f"corpus: {len(pages)} pages, {mb:.1f} MB of HTML")
        baseline(pages[:20])
        ours(pages[:20], recipe, tokenizer, workdir)  # warm caches (tokenizer, textstat, py3langid)
        base_times, our_times = [], []
        for r in range(args.rounds):
            base_times.append(baseline(pages))
            our_times.append(ours(pages, recipe, tokenizer, workdir))
            print(f"round {r + 1}: trafilatura alone {base_times[-1]:.2f} s, Bastion pipeline {our_times[-1]:.2f} s")
    b, o = statistics.median(base_times), statistics.median(our_times)
    ratio = o / b
    print(
        f"per page: trafilatura alone {1000 * b / len(pages):.2f} ms, Bastion pipeline {1000 * o / len(pages):.2f} ms"
    )
    print(
        f"ratio (pipeline / extraction alone, median of {args.rounds} rounds): {ratio:.2f}x  "
        f"goal <= 1.25x: {'met' if ratio <= 1.25 else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
