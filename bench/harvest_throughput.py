"""Per-page cost of the whole harvest pipeline vs trafilatura's extraction alone, side by side.

On a fixed local corpus of realistic documentation pages (bench/corpus.py, 320 pages by default)
this measures, in alternating rounds on the same pages:

- baseline: ``trafilatura.extract`` with the same options Bastion uses (Markdown, tables,
  formatting), nothing else;
- ours: the harvest's per-page work: extraction, sections and token-budget chunks (real Llama 3
  tokenizer), quality gates, then dedup + instruction + record and the atomic JSONL write,
  through the same SQLite checkpoint the stage uses.

Prints the ratio ours / baseline. Goal (issue #3): at most 1.25.
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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import trafilatura  # noqa: E402

from bench.corpus import build_corpus  # noqa: E402
from bastion.manifest import now_iso  # noqa: E402
from bastion.recipe import load_recipe  # noqa: E402
from harvest.extract import TRAFILATURA_OPTIONS, extract_html  # noqa: E402
from harvest.pipeline import ChunkStore, PageProcessor, decide_records, max_record_tokens, write_outputs  # noqa: E402


def baseline(pages: list[tuple[str, str]]) -> float:
    start = time.perf_counter()
    for url, html in pages:
        trafilatura.extract(html, url=url, **TRAFILATURA_OPTIONS)
    return time.perf_counter() - start


def ours(pages: list[tuple[str, str]], processor: PageProcessor, workdir: Path) -> float:
    recipe = processor.recipe
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

    def count_tokens(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    processor = PageProcessor(recipe, count_tokens, max_record_tokens(recipe, count_tokens))
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        files = build_corpus(workdir / "corpus", n_pages=args.pages, seed=0)
        pages = [(f"https://docs.example.test/{p.relative_to(workdir / 'corpus')}", p.read_text()) for p in files]
        mb = sum(len(h) for _, h in pages) / 1e6
        print(f"corpus: {len(pages)} pages, {mb:.1f} MB of HTML")
        baseline(pages[:20])
        ours(pages[:20], processor, workdir)  # warm caches (tokenizer, textstat, py3langid)
        base_times, our_times = [], []
        for r in range(args.rounds):
            base_times.append(baseline(pages))
            our_times.append(ours(pages, processor, workdir))
            print(f"round {r + 1}: trafilatura alone {base_times[-1]:.2f} s, Bastion pipeline {our_times[-1]:.2f} s")
    b, o = statistics.median(base_times), statistics.median(our_times)
    ratio = o / b
    print(f"per page: trafilatura alone {1000 * b / len(pages):.2f} ms, Bastion pipeline {1000 * o / len(pages):.2f} ms")
    print(f"ratio (pipeline / extraction alone, median of {args.rounds} rounds): {ratio:.2f}x  "
          f"goal <= 1.25x: {'met' if ratio <= 1.25 else 'NOT met'}")


if __name__ == "__main__":
    main()
