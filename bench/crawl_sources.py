"""All sources at once: seven loopback hosts shaped like the flagship, wall time vs the politeness floor.

The flagship recipe harvests seven sources, one host each, with 400, 400, 300, 200, 10, 60 and 120
pages. Here each is a real threaded HTTP server (tests/fixture_server.py) on its own loopback
address (127.0.0.2 ... 127.0.0.8), with the page counts scaled by ``--scale`` (0.1: 40, 40, 30,
20, 2, 6, 12 pages; at least 2), an index page linking to every other page, each page linking
back to the index and to its neighbours, a robots.txt that allows everything and ``--latency``
(50 ms) before every response. Each host is its own recipe source, as in the flagship.

Politeness: ``delay_seconds`` ``--delay`` (0.5 s), ``per_host_concurrency`` 1, ``max_concurrency``
8 (the schema's default), robots.txt respected.

Measured, in one harvest-style crawl of the seven sources (``harvest.crawl.crawl_sources``, the
function ``run_harvest`` calls; before it existed, one ``crawl`` per source in recipe order):

- wall time against the politeness floor, the busiest host's requests x delay (its robots.txt
  and pages, one delay apart, plus the last response's latency). Goal: at most 1.15x the floor;
- spacing: the smallest gap between two requests to the same host, from the server's kernel
  receive timestamps. Goal: never below the delay (5 ms of timestamp granularity allowed).

Run: ``python bench/crawl_sources.py [--scale 0.1] [--delay 0.5] [--latency 0.05]``.
"""

# ruff: noqa: T201  (a benchmark prints its results)
from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from fixture_server import FixtureServer, doc_site  # noqa: E402

from bastion.run_folder import RunFolder  # noqa: E402
from harvest import crawl as crawl_module  # noqa: E402
from harvest.state import CrawlState  # noqa: E402

UA = "BastionBenchBot/0.1 (+https://example.invalid/bot)"
FLAGSHIP_PAGES = (400, 400, 300, 200, 10, 60, 120)
GOAL = 1.15
GAP_TOLERANCE = 0.005


def crawl_all(sources: list[dict[str, Any]], politeness: dict[str, Any], state_path: Path, on_page: Any) -> list[Any]:
    """The harvest's crawl of every source: ``crawl_sources`` when it exists, else one after another."""
    together = getattr(crawl_module, "crawl_sources", None)
    if together is not None:
        return list(together(sources, politeness, UA, state_path, on_page))
    stats = []
    for source in sources:  # the harvest before crawl_sources: one source after another
        state = CrawlState(state_path)
        try:
            stats.append(crawl_module.crawl(source, politeness, UA, state, on_page))
        finally:
            state.close()
    return stats


def run(scale: float, delay: float, latency: float) -> None:
    counts = [max(2, round(n * scale)) for n in FLAGSHIP_PAGES]
    politeness: dict[str, Any] = {
        "delay_seconds": delay,
        "per_host_concurrency": 1,
        "max_concurrency": 8,
        "respect_robots_txt": True,
        "allow_private_addresses": True,
        "timeout_seconds": 5.0,
        "max_retries": 1,
        "backoff_seconds": 0.1,
        "max_backoff_seconds": 1.0,
    }
    fetched: list[str] = []
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        servers = [
            stack.enter_context(FixtureServer(doc_site(f"s{k}", n, latency), host=f"127.0.0.{k + 2}"))
            for k, n in enumerate(counts)
        ]
        sources = [
            {
                "name": f"source-{k}",
                "kind": "web",
                "start_urls": [srv.url("/")],
                "allowed_domains": [srv.host],
                "max_pages": n,
                "max_depth": 2,
            }
            for k, (srv, n) in enumerate(zip(servers, counts, strict=True))
        ]
        started = time.perf_counter()
        folder = RunFolder(Path(tmp))
        folder.data_dir.mkdir()
        crawl_all(sources, politeness, folder.harvest_state, lambda p, conn: fetched.append(p.url))
        elapsed = time.perf_counter() - started
        hits = [sorted(h.time for h in srv.hits) for srv in servers]
    gaps = [b - a for times in hits for a, b in zip(times, times[1:], strict=False)]
    busiest = max(len(times) for times in hits)
    floor = (busiest - 1) * delay + latency
    ratio = elapsed / floor
    min_gap = min(gaps)
    violated = min_gap < delay - GAP_TOLERANCE
    mode = "crawl_sources (all at once)" if hasattr(crawl_module, "crawl_sources") else "one source after another"
    print(
        f"7 sources, pages {counts} (flagship x {scale}), delay {delay} s, {latency * 1000:.0f} ms per response, "
        f"per_host_concurrency 1, max_concurrency 8; {mode}"
    )
    print(f"pages fetched: {len(fetched)}/{sum(counts)}; requests per host: {[len(t) for t in hits]}")
    print(
        f"wall time {elapsed:.2f} s, politeness floor {floor:.2f} s (busiest host: {busiest} requests x {delay} s); "
        f"ratio {ratio:.3f}  goal <= {GOAL}: {'met' if ratio <= GOAL else 'NOT met'}"
    )
    print(
        f"min gap between two requests to one host (server side): {min_gap * 1000:.1f} ms, "
        f"delay {delay * 1000:.0f} ms; "
        f"goal never below: {'NOT met' if violated else 'met'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=0.1, help="share of the flagship's page counts")
    parser.add_argument("--delay", type=float, default=0.5, help="politeness delay_seconds")
    parser.add_argument("--latency", type=float, default=0.05, help="server delay before every response")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    run(args.scale, args.delay, args.latency)


if __name__ == "__main__":
    main()
