"""Polite crawl throughput over several hosts vs the politeness limit, and server-side spacing.

Several loopback hosts (127.0.0.2, 127.0.0.3, ... each a real threaded HTTP server from
tests/fixture_server.py) serve the same realistic documentation-site shape: an index page
linking to every other page of its host (so depth 1 holds almost the whole crawl), each page
linking back to the index and to its previous/next page (navigation, already known URLs), and a
robots.txt that allows everything. Every response, robots.txt included, is delayed by
``--latency`` (50 ms) to stand in for network and server time.

ONE source lists every host (start URLs = the index pages, ``allowed_domains`` = all hosts):
``crawl()`` crawls one source at a time, so one multi-host source is how different hosts are
fetched concurrently. Politeness: ``delay_seconds`` 0.2, ``per_host_concurrency`` 1,
``max_concurrency`` = number of hosts, robots.txt respected.

Measured, in one crawl:

- throughput: pages handed to ``on_page`` per second of ``crawl()`` wall time, against the
  politeness limit ``hosts / delay_seconds`` (20 pages/s for 4 hosts at 0.2 s). Goal: ratio
  >= 0.8 (robots.txt, the first page of each host and the last response's latency cost a few
  percent of an ideal crawl at these sizes; the rest is the crawler's scheduling);
- spacing: the smallest gap between two consecutive requests to the same host, from the
  server's kernel receive timestamps (robots.txt included). Goal: never below the delay; a gap
  below ``delay - 5 ms`` (timestamp granularity) is a politeness violation;
- per host: when its index and its linked pages were requested, and how many hosts were busy at
  once during depth 1 (sum of the per-host spans of linked-page requests / span of all of them):
  about 1 means the hosts were crawled one after another, about ``hosts`` all in parallel.

Bounded: fixed page counts, loopback only; a fully serial crawl of the default shape still ends
in about 35 s. Run: ``python bench/crawl_politeness.py [--hosts 4] [--pages 40] [--delay 0.2]``.
"""

# ruff: noqa: T201  (a benchmark prints its results)
from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from fixture_server import FixtureServer, Hit, doc_site  # noqa: E402

from bastion.run_folder import RunFolder  # noqa: E402
from harvest.crawl import FetchedPage, crawl  # noqa: E402
from harvest.state import CrawlState  # noqa: E402

UA = "BastionBenchBot/0.1 (+https://example.invalid/bot)"
RATIO_GOAL = 0.8
GAP_TOLERANCE = 0.005  # kernel timestamps: only granularity to absorb


@dataclass(frozen=True)
class HostReport:
    """What one host's server saw."""

    host: str
    requests: int
    pages: int
    index: float  # the index page's request, seconds after the crawl started
    first: float  # first linked (depth 1) page request, seconds after the crawl started
    last: float  # last linked page request, seconds after the crawl started
    min_gap: float


def gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in zip(times, times[1:], strict=False)]


def host_report(srv: FixtureServer, started: float) -> HostReport:
    hits: list[Hit] = sorted(srv.hits, key=lambda h: h.time)
    index = [h.time - started for h in hits if h.path == "/"]
    linked = [h.time - started for h in hits if h.path not in ("/", "/robots.txt")]
    between = gaps([h.time for h in hits])
    return HostReport(
        srv.host,
        len(hits),
        len(index) + len(linked),
        min(index, default=0.0),
        min(linked, default=0.0),
        max(linked, default=0.0),
        min(between, default=float("inf")),
    )


def run(n_hosts: int, n_pages: int, delay: float, latency: float) -> None:
    politeness: dict[str, Any] = {
        "delay_seconds": delay,
        "per_host_concurrency": 1,
        "max_concurrency": n_hosts,
        "respect_robots_txt": True,
        "allow_private_addresses": True,
        "timeout_seconds": 5.0,
        "max_retries": 1,
        "backoff_seconds": 0.1,
        "max_backoff_seconds": 1.0,
    }
    total = n_hosts * n_pages
    pages: list[FetchedPage] = []
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        servers = [
            stack.enter_context(FixtureServer(doc_site(f"h{k}", n_pages, latency), host=f"127.0.0.{k + 2}"))
            for k in range(n_hosts)
        ]
        source = {
            "name": "bench",
            "kind": "web",
            "start_urls": [s.url("/") for s in servers],
            "allowed_domains": [s.host for s in servers],
            "max_pages": total,
            "max_depth": 2,
        }
        folder = RunFolder(Path(tmp))
        folder.data_dir.mkdir()
        state = CrawlState(folder.harvest_state)
        started_wall, t0 = time.time(), time.perf_counter()
        stats = crawl(source, politeness, UA, state, lambda p, conn: pages.append(p))
        elapsed = time.perf_counter() - t0
        state.close()
        reports = [host_report(s, started_wall) for s in servers]

    limit = n_hosts / delay
    rate = len(pages) / elapsed
    ratio = rate / limit
    ideal = n_pages * delay + latency  # per host: robots.txt + n_pages requests, n_pages gaps
    print(
        f"{n_hosts} hosts x {n_pages} pages (index + {n_pages - 1} linked), {latency * 1000:.0f} ms per "
        f"response, delay {delay} s, per_host_concurrency 1, max_concurrency {n_hosts}"
    )
    print(
        f"crawl: {len(pages)}/{total} pages in {elapsed:.2f} s ({stats.requests_this_run} requests, "
        f"failed {stats.failed or 0}, refused {stats.refused or 0}); an ideal polite crawl takes ~{ideal:.2f} s"
    )
    for r in reports:
        print(
            f"  {r.host}: {r.requests} requests ({r.pages} pages): index at {r.index:5.2f} s, linked pages "
            f"from {r.first:6.2f} s to {r.last:6.2f} s, min gap {r.min_gap * 1000:.1f} ms"
        )
    span = max(r.last for r in reports) - min(r.first for r in reports)
    busy = sum(r.last - r.first for r in reports) / span if span > 0 else float("nan")
    print(f"hosts busy at once during depth 1 (sum of per-host spans / depth-1 span): {busy:.2f} of {n_hosts}")
    min_gap = min(r.min_gap for r in reports)
    violated = min_gap < delay - GAP_TOLERANCE
    print(
        f"throughput: {rate:.2f} pages/s, politeness limit {limit:.2f} pages/s ({n_hosts} hosts / {delay} s), "
        f"ratio {ratio:.3f}  goal >= {RATIO_GOAL}: {'met' if ratio >= RATIO_GOAL else 'NOT met'}"
    )
    print(
        f"min gap between two requests to one host (server side): {min_gap * 1000:.1f} ms, delay "
        f"{delay * 1000:.0f} ms; any gap < delay - {GAP_TOLERANCE * 1000:.0f} ms: {'YES' if violated else 'no'}  "
        f"goal never: {'NOT met' if violated else 'met'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=4, help="loopback hosts 127.0.0.2... (at most 250)")
    parser.add_argument("--pages", type=int, default=40, help="pages per host, index included")
    parser.add_argument("--delay", type=float, default=0.2, help="politeness delay_seconds")
    parser.add_argument("--latency", type=float, default=0.05, help="server delay before every response")
    args = parser.parse_args()
    if not 1 <= args.hosts <= 250 or args.pages < 2:
        parser.error("--hosts must be 1..250 and --pages at least 2")
    logging.basicConfig(level=logging.WARNING)
    run(args.hosts, args.pages, args.delay, args.latency)


if __name__ == "__main__":
    main()
