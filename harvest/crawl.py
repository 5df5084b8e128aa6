"""The polite crawler: breadth-first, level by level, deterministic, resumable.

``crawl(source, politeness, user_agent, state, on_page)`` seeds the frontier with the start URLs
and the sitemap entries (the source's ``sitemaps`` plus robots.txt ``Sitemap:`` lines), then
takes one depth level at a time. Inside a level, URLs are fetched concurrently (one worker
thread per request in flight, at most ``max_concurrency``; at most ``per_host_concurrency`` per
host; request starts to one host spaced by the larger of ``delay_seconds`` and the robots.txt
crawl-delay/request-rate), but results are COMMITTED in rank order (depth, then discovery
order): the pages kept under ``max_pages`` and the order of the next level never depend on
timing, so two runs take the same pages.

Each commit is one SQLite transaction that marks the URL, inserts its outlinks and calls
``on_page(page, conn)``: a crawl killed at any moment loses nothing and duplicates nothing, and
rerunning it with the same state file continues (URLs in flight when it died are fetched again).

``crawl_sources`` crawls several sources at once, each in its own thread with its own connection
to the state file, under ONE politeness: a shared ``HostPacer`` (a host shared by two sources is
paced as one, robots.txt crawl-delays included) and shared ``Slots`` (``per_host_concurrency``
per host, ``max_concurrency`` requests in flight in all). Each source commits in its own rank
order, so the pages each source keeps are those of a crawl of that source alone.

Links whose path holds a date (a year, a year and month) or that carry a query string are
admitted a few per URL pattern (``urls.TrapBudget``), counted at commit time, in rank order, so
that which ones are admitted does not depend on timing.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import sqlite3
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

import lxml.etree
import lxml.html

from bastion.errors import BadInputError
from bastion.manifest import now_iso
from harvest.fetch import HTML_TYPES, PDF_TYPE, FetchCancelled, Fetcher, FetchResult, HostPacer, decode_text
from harvest.robots import RobotsCache
from harvest.state import CrawlState, FrontierRow, Seed
from harvest.urls import Scope, TrapBudget, UrlError, normalize_url, url_host

log = logging.getLogger(__name__)

MAX_SITEMAP_DOCUMENTS = 20
MAX_SITEMAP_BYTES = 50 * 1024 * 1024  # the sitemap protocol's own limit, uncompressed
START_RANK, SITEMAP_RANK = -2, -1


@dataclass
class FetchedPage:
    """A page handed to ``on_page``."""

    url: str  # final URL (after redirects), normalised
    requested_url: str
    status: int
    content_type: str
    body: bytes
    text: str | None  # decoded HTML; None for PDF
    fetched_at: str  # ISO 8601 UTC
    depth: int
    source: str
    host: str
    charset: str | None = None


@dataclass
class CrawlStats:
    """What a crawl of one source came to (whole crawl, resumed runs included)."""

    source: str
    fetched: int = 0
    refused: dict[str, int] = field(default_factory=dict)  # reason -> URLs
    failed: dict[str, int] = field(default_factory=dict)  # reason -> URLs
    not_followed: dict[str, int] = field(default_factory=dict)  # never requested: off_domain, robots, trap_*...
    requested_failed: dict[str, int] = field(default_factory=dict)  # requested, no page: http_404, timeout...
    per_host: dict[str, int] = field(default_factory=dict)  # host -> pages fetched
    hosts: dict[str, dict[str, int]] = field(default_factory=dict)  # host -> fetched/refused/failed/pending
    pending: int = 0  # left in the frontier (max_pages or max_depth reached)
    pages_this_run: int = 0
    requests_this_run: int = 0
    resumed: bool = False
    elapsed_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-ready)."""
        return json.loads(json.dumps(self.__dict__))


OnPage = Callable[[FetchedPage, sqlite3.Connection], None]


@dataclass
class _Settings:
    """A source plus politeness, defaults filled as in the recipe schema."""

    name: str
    start_urls: list[str]
    sitemaps: list[str]
    max_pages: int
    max_depth: int
    allow_pdf: bool
    respect_robots: bool
    per_host: int
    max_concurrency: int

    @classmethod
    def from_recipe(cls, source: dict[str, Any], politeness: dict[str, Any]) -> _Settings:
        return cls(
            name=str(source["name"]),
            start_urls=list(source.get("start_urls") or []),
            sitemaps=list(source.get("sitemaps") or []),
            max_pages=int(source.get("max_pages", 200)),
            max_depth=int(source.get("max_depth", 3)),
            allow_pdf=bool(source.get("allow_pdf", False)),
            respect_robots=bool(politeness.get("respect_robots_txt", True)),
            per_host=int(politeness.get("per_host_concurrency", 1)),
            max_concurrency=int(politeness.get("max_concurrency", 8)),
        )

    def fingerprint(self, source: dict[str, Any]) -> str:
        """What must not change between a crawl and its resumption (the seeds and the scope)."""
        keys = ("start_urls", "sitemaps", "allowed_domains", "path_prefixes")
        payload = json.dumps({k: source.get(k) or [] for k in keys}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()


@dataclass
class _Work:
    """A worker's answer for one frontier row."""

    row: FrontierRow
    status: str  # fetched | refused | failed
    reason: str | None = None
    page: FetchedPage | None = None
    links: list[Seed] = field(default_factory=list)
    http_status: int | None = None
    final_url: str | None = None
    content_type: str | None = None
    requests: int = 0


# -- links and sitemaps ---------------------------------------------------------------------------


def extract_links(html: str, base_url: str) -> list[str]:
    """Normalised ``<a>``/``<area>`` targets in document order, without duplicates.

    Honours ``<base href>``, ``rel="nofollow"`` and ``<meta name="robots" content="nofollow">``
    (no links at all). Unparseable links are skipped; other schemes are kept for the caller to refuse.
    """
    try:
        doc = lxml.html.document_fromstring(html.encode("utf-8"), parser=lxml.html.HTMLParser(encoding="utf-8"))
    except (lxml.etree.LxmlError, ValueError):
        return []
    for meta in doc.iter("meta"):
        if (meta.get("name") or "").strip().lower() == "robots":
            content = (meta.get("content") or "").lower()
            if "nofollow" in content or "none" in content.replace(",", " ").split():
                return []
    base = base_url
    for el in doc.iter("base"):
        if el.get("href"):
            try:
                base = normalize_url(el.get("href"), base=base_url)
            except UrlError:
                pass
            break
    links: list[str] = []
    seen: set[str] = set()
    for el in doc.iter("a", "area"):
        href = el.get("href")
        if not href or "nofollow" in (el.get("rel") or "").lower().split():
            continue
        try:
            url = normalize_url(href, base=base)
        except UrlError:
            continue
        if url not in seen:
            seen.add(url)
            links.append(url)
    return links


def parse_sitemap(body: bytes) -> tuple[list[str], list[str]]:
    """``(page URLs, child sitemap URLs)`` of a sitemap, sitemap index, gzipped sitemap or plain
    text list. Entities and network access are disabled (no XXE).

    The crawler fetches sitemaps itself (politeness, robots.txt, address checks), so trafilatura's
    ``sitemap_search``, which fetches with its own downloader, does not fit; a ``<loc>`` is a child
    sitemap when its parent element is ``<sitemap>`` (not by its file extension)."""
    if body[:2] == b"\x1f\x8b":
        try:
            with gzip.GzipFile(fileobj=io.BytesIO(body)) as gz:
                body = gz.read(MAX_SITEMAP_BYTES)
        except (OSError, EOFError):
            return [], []
    stripped = body.lstrip()
    if not stripped.startswith(b"<"):
        lines = stripped.decode("utf-8", errors="replace").splitlines()
        return [ln.strip() for ln in lines if ln.strip().startswith(("http://", "https://"))], []
    parser = lxml.etree.XMLParser(resolve_entities=False, no_network=True, recover=True, huge_tree=False)
    try:
        root = lxml.etree.fromstring(stripped, parser=parser)
    except lxml.etree.XMLSyntaxError:
        return [], []
    if root is None:
        return [], []
    pages: list[str] = []
    children: list[str] = []
    for loc in root.iter("{*}loc", "loc"):
        parent = loc.getparent()
        text = (loc.text or "").strip()
        if not text or parent is None:
            continue
        kind = lxml.etree.QName(parent).localname
        (children if kind == "sitemap" else pages).append(text)
    return pages, children


# -- shared politeness ----------------------------------------------------------------------------


class Slots:
    """Requests in flight: at most ``per_host`` to one host and ``total`` in all, shared by every
    crawler of one harvest (thread-safe). ``wait`` returns when a slot is given back (or after
    ``timeout``)."""

    def __init__(self, total: int, per_host: int) -> None:
        self.total = max(1, total)
        self.per_host = max(1, per_host)
        self._in_host: Counter[str] = Counter()
        self._in_flight = 0
        self._cond = threading.Condition()

    def take(self, host: str) -> bool:
        """Take a slot for ``host`` if one is free."""
        with self._cond:
            if self._in_flight >= self.total or self._in_host[host] >= self.per_host:
                return False
            self._in_flight += 1
            self._in_host[host] += 1
            return True

    def give(self, host: str) -> None:
        with self._cond:
            self._in_flight -= 1
            self._in_host[host] -= 1
            self._cond.notify_all()

    def full(self) -> bool:
        with self._cond:
            return self._in_flight >= self.total

    def wait(self, timeout: float) -> None:
        with self._cond:
            self._cond.wait(timeout)


@dataclass
class Politeness:
    """What every crawler of one harvest shares: the host pacer, the request slots, and the event
    that stops them all."""

    pacer: HostPacer
    slots: Slots
    stop: threading.Event

    @classmethod
    def from_recipe(cls, politeness: dict[str, Any]) -> Politeness:
        stop = threading.Event()
        return cls(
            HostPacer(float(politeness.get("delay_seconds", 1.0)), stop),
            Slots(int(politeness.get("max_concurrency", 8)), int(politeness.get("per_host_concurrency", 1))),
            stop,
        )


class CrawlStopped(Exception):
    """Another source's crawl failed: this one stops too."""


# -- the crawler ----------------------------------------------------------------------------------


class _Crawler:
    """One crawl of one source (see :func:`crawl`)."""

    def __init__(
        self,
        source: dict[str, Any],
        politeness: dict[str, Any],
        user_agent: str,
        state: CrawlState,
        on_page: OnPage,
        progress: Callable[[str], None] | None,
        shared: Politeness | None = None,
    ) -> None:
        self.source = source
        self.cfg = _Settings.from_recipe(source, politeness)
        self.state = state
        self.on_page = on_page
        self.progress = progress
        self.user_agent = user_agent
        self.scope = Scope.for_source(source, self.cfg.start_urls or self.cfg.sitemaps)
        self.shared = shared or Politeness.from_recipe(politeness)
        self.fetcher = Fetcher(user_agent, politeness, pacer=self.shared.pacer)
        self.traps = TrapBudget()
        self.robots = RobotsCache(self.fetcher, user_agent, respect=self.cfg.respect_robots)
        self.content_types = HTML_TYPES | ({PDF_TYPE} if self.cfg.allow_pdf else set())
        self.pages_this_run = 0

    # -- worker side (threads) ---------------------------------------------------------------
    def hop_check(self, url: str) -> str | None:
        """Rules a redirect target must pass: scope, then robots.txt of its origin."""
        reason = self.scope.refusal(url)
        if reason:
            return reason
        return None if self.robots.can_fetch(url) else "robots"

    def work(self, row: FrontierRow) -> _Work:
        """Fetch one frontier URL and prepare everything its commit needs (never raises, except
        :class:`FetchCancelled` when the crawl is being torn down)."""
        try:
            return self._work(row)
        except FetchCancelled:
            raise
        except Exception:  # a bug or a pathological page must not end a long crawl
            log.exception("unexpected error while crawling %s", row.url)
            return _Work(row, "failed", "internal_error")

    def _work(self, row: FrontierRow) -> _Work:
        reason = self.fetcher.url_refusal(row.url)
        if reason:
            return _Work(row, "refused", reason)
        if not self.robots.can_fetch(row.url):  # first call per origin fetches robots.txt, sets its delay
            return _Work(row, "refused", "robots")
        result = self.fetcher.fetch(row.url, content_types=self.content_types, hop_check=self.hop_check)
        status = "fetched" if result.ok else result.outcome
        work = _Work(
            row,
            status,
            result.reason,
            http_status=result.status,
            final_url=result.url,
            content_type=result.content_type,
            requests=result.requests,
        )
        if result.ok:
            work.page = self._page(row, result)
            if work.page.text is not None and row.depth < self.cfg.max_depth:
                work.links = self._outlinks(work.page.text, result.url)
        return work

    def _page(self, row: FrontierRow, result: FetchResult) -> FetchedPage:
        content_type = result.content_type or "text/html"
        text, charset = (None, None)
        if content_type in HTML_TYPES:
            text, charset = decode_text(result.body, result.charset)
        return FetchedPage(
            url=result.url,
            requested_url=row.url,
            status=result.status or 200,
            content_type=content_type,
            body=result.body,
            text=text,
            fetched_at=result.fetched_at,
            depth=row.depth,
            source=self.cfg.name,
            host=url_host(result.url),
            charset=charset,
        )

    def _outlinks(self, text: str, base_url: str) -> list[Seed]:
        """Links of a page as frontier entries: pending if they pass the link rules, else refused."""
        seeds = []
        for url in extract_links(text, base_url):
            reason = self.scope.link_refusal(url)
            seeds.append(Seed(url, url_host(url), "refused" if reason else "pending", reason))
        return seeds

    # -- seeding ---------------------------------------------------------------------------------
    def seed(self) -> None:
        """Put start URLs and sitemap entries in the frontier (once per state file and source)."""
        name = self.cfg.name
        fingerprint = self.cfg.fingerprint(self.source)
        if self.state.is_seeded(name):
            if self.state.get_meta(name, "fingerprint") != fingerprint:
                raise BadInputError(
                    f"crawl state {self.state.path} holds a crawl of source '{name}' with other start URLs, "
                    "sitemaps or scope; delete that file (or use another) to start this crawl afresh"
                )
            return
        starts = self._start_seeds()
        sitemap_seeds = self._sitemap_seeds()
        now = now_iso()
        with self.state.transaction() as conn:
            CrawlState.add_urls(conn, name, 0, START_RANK, starts, now)
            CrawlState.add_urls(conn, name, 0, SITEMAP_RANK, sitemap_seeds, now)
            CrawlState.set_meta(conn, name, "fingerprint", fingerprint)
            CrawlState.set_meta(conn, name, "seeded", True)
        log.info("%s: seeded %d start URLs and %d sitemap URLs", name, len(starts), len(sitemap_seeds))

    def _start_seeds(self) -> list[Seed]:
        seeds: list[Seed] = []
        for raw in self.cfg.start_urls:
            try:
                url = normalize_url(raw)
            except UrlError as exc:
                raise BadInputError(f"source '{self.cfg.name}': start URL {raw!r} is not a URL ({exc})") from exc
            reason = self.scope.refusal(url)
            seeds.append(Seed(url, url_host(url), "refused" if reason else "pending", reason))
        return seeds

    def _sitemap_seeds(self) -> list[Seed]:
        """In-scope page URLs of every sitemap (source's, then robots.txt's), capped."""
        documents = self._sitemap_documents()
        cap = max(100, 10 * self.cfg.max_pages)
        seeds: list[Seed] = []
        seen: set[str] = set()
        queue: deque[str] = deque(documents)
        fetched: set[str] = set()
        skipped = 0
        while queue and len(fetched) < MAX_SITEMAP_DOCUMENTS and len(seeds) < cap:
            doc_url = queue.popleft()
            if doc_url in fetched:
                continue
            fetched.add(doc_url)
            result = self.fetcher.fetch(doc_url, content_types=None, max_bytes=MAX_SITEMAP_BYTES)
            if not result.ok:
                log.warning("sitemap %s not read: %s", doc_url, result.reason)
                continue
            pages, children = parse_sitemap(result.body)
            queue.extend(self._normalized(children, base=result.url))
            for url in self._normalized(pages, base=result.url):  # relative <loc>: resolved, leniently
                if url in seen:
                    continue
                seen.add(url)
                if self.scope.link_refusal(url):
                    skipped += 1
                elif len(seeds) < cap:
                    seeds.append(Seed(url, url_host(url)))
        if queue:
            log.warning(
                "sitemaps of %s: stopped after %d documents / %d URLs (cap)", self.cfg.name, len(fetched), len(seeds)
            )
        if skipped:
            log.info("sitemaps of %s: %d URLs out of scope or filtered", self.cfg.name, skipped)
        return seeds

    def _sitemap_documents(self) -> list[str]:
        docs = list(self._normalized(self.cfg.sitemaps))
        origins: list[str] = []
        for url in self._normalized(self.cfg.start_urls + self.cfg.sitemaps):
            if self.fetcher.url_refusal(url) is None and url not in origins:
                origins.append(url)
        for url in origins:
            docs += self._normalized(self.robots.sitemaps(url))
        return list(dict.fromkeys(docs))

    @staticmethod
    def _normalized(urls: Iterable[str], base: str | None = None) -> Iterable[str]:
        for raw in urls:
            try:
                yield normalize_url(raw, base=base)
            except UrlError:
                log.debug("skipping unparseable URL %r", raw)

    # -- levels ----------------------------------------------------------------------------------
    def run(self) -> None:
        """Crawl level after level until max_pages, max_depth or an empty frontier."""
        name = self.cfg.name
        self.traps.load(self.state.frontier_urls(name))
        with ThreadPoolExecutor(max_workers=self.cfg.max_concurrency, thread_name_prefix="crawl") as pool:
            try:
                while self.state.count(name, "fetched") < self.cfg.max_pages:
                    level = self.state.next_level(name, self.cfg.max_depth)
                    if level is None:
                        break
                    self.state.assign_ranks(name, level)
                    self._run_level(pool, self.state.pending(name, level))
            finally:
                self.fetcher.close()  # wakes and stops workers still waiting (error paths)

    def _run_level(self, pool: ThreadPoolExecutor, rows: list[FrontierRow]) -> None:
        """Fetch one level concurrently, committing results strictly in rank order."""
        pages = self.state.count(self.cfg.name, "fetched")
        window = max(4, 2 * self.cfg.max_concurrency)
        dispatched = [False] * len(rows)
        results: dict[int, _Work] = {}
        futures: dict[Future[_Work], int] = {}
        slots = self.shared.slots
        head = 0
        try:
            while head < len(rows) and pages < self.cfg.max_pages:
                if self.shared.stop.is_set():
                    raise CrawlStopped(self.cfg.name)
                if head in results:
                    pages += self._commit(results.pop(head), pages)
                    head += 1
                    continue
                buffered = sum(1 for w in results.values() if w.status == "fetched")
                blocked = False  # a row waits for a slot that another crawler may give back
                for i in range(head, min(len(rows), head + window)):
                    if len(futures) >= self.cfg.max_concurrency:
                        break
                    if dispatched[i]:
                        continue
                    if i != head and pages + len(futures) + buffered >= self.cfg.max_pages:
                        break
                    row = rows[i]
                    if CrawlState.is_fetched(self.state.conn, self.cfg.name, row.url):
                        dispatched[i] = True
                        results[i] = _Work(row, "refused", "duplicate")
                        continue
                    if not slots.take(row.host):
                        blocked = True
                        if slots.full():
                            break
                        continue
                    dispatched[i] = True
                    futures[pool.submit(self.work, row)] = i
                if head in results:
                    continue
                if not futures:
                    if not blocked:
                        raise RuntimeError(f"crawler stalled at {rows[head].url} (nothing in flight)")
                    slots.wait(0.05)
                    continue
                done, _ = wait(list(futures), timeout=0.05 if blocked else None, return_when=FIRST_COMPLETED)
                for fut in done:
                    i = futures.pop(fut)
                    slots.give(rows[i].host)
                    results[i] = fut.result()
        except BaseException:
            self.shared.stop.set()  # wakes workers waiting for their turn; other sources stop too
            raise
        finally:
            for fut in futures:  # fetched beyond max_pages (or stopping): stay pending, never committed
                fut.cancel()
            wait(list(futures))
            for i in futures.values():
                slots.give(rows[i].host)

    def _commit(self, work: _Work, pages: int) -> int:
        """Record one result, its outlinks and the page callback in one transaction; 1 if a page."""
        name, now = self.cfg.name, now_iso()
        row = work.row
        with self.state.transaction() as conn:
            if work.status == "fetched" and CrawlState.is_fetched(conn, name, work.final_url or row.url):
                work.status, work.reason, work.page, work.links = "refused", "duplicate", None, []
            CrawlState.mark(
                conn,
                name,
                row.url,
                work.status,
                work.reason,
                now,
                http_status=work.http_status,
                final_url=work.final_url,
                content_type=work.content_type,
                requests=work.requests,
            )
            if work.page is not None:
                links = [self._budgeted(seed) for seed in work.links]
                CrawlState.add_urls(conn, name, row.depth + 1, row.rank, links, now)
                self.on_page(work.page, conn)
        if work.page is None:
            log.debug("%s %s: %s", work.status, row.url, work.reason)
            return 0
        self.pages_this_run += 1
        log.debug("fetched %s (depth %d, %d links)", work.page.url, row.depth, len(work.links))
        if self.progress is not None:
            self.progress(f"{name}: {pages + 1}/{self.cfg.max_pages} pages, depth {row.depth}: {work.page.url}")
        return 1

    def _budgeted(self, seed: Seed) -> Seed:
        """A pending link refused once its URL pattern has used its budget (``TrapBudget``)."""
        if seed.status != "pending":
            return seed
        reason = self.traps.admit(seed.url)
        return Seed(seed.url, seed.host, "refused", reason) if reason else seed

    # -- stats -----------------------------------------------------------------------------------
    def stats(self, resumed: bool, started: float) -> CrawlStats:
        """Totals from the state file (so a resumed crawl reports the whole crawl)."""
        stats = CrawlStats(
            source=self.cfg.name,
            resumed=resumed,
            pages_this_run=self.pages_this_run,
            requests_this_run=self.fetcher.requests_made,
            elapsed_seconds=round(time.monotonic() - started, 3),
        )
        refused: Counter[str] = Counter()
        failed: Counter[str] = Counter()
        not_followed: Counter[str] = Counter()
        requested_failed: Counter[str] = Counter()
        for host, status, reason, requested, n in self.state.tally(self.cfg.name):
            host = host or "(no host)"  # mailto:, javascript: links
            counts = stats.hosts.setdefault(host, {"fetched": 0, "refused": 0, "failed": 0, "pending": 0})
            counts[status] += n
            if status == "fetched":
                stats.fetched += n
                stats.per_host[host] = stats.per_host.get(host, 0) + n
            elif status in ("refused", "failed"):
                (refused if status == "refused" else failed)[reason or "unknown"] += n
                (requested_failed if requested else not_followed)[reason or "unknown"] += n
            else:
                stats.pending += n
        stats.refused, stats.failed = dict(sorted(refused.items())), dict(sorted(failed.items()))
        stats.not_followed = dict(sorted(not_followed.items()))
        stats.requested_failed = dict(sorted(requested_failed.items()))
        return stats


def crawl(
    source: dict[str, Any],
    politeness: dict[str, Any],
    user_agent: str,
    state: CrawlState,
    on_page: OnPage,
    *,
    progress: Callable[[str], None] | None = None,
    shared: Politeness | None = None,
) -> CrawlStats:
    """Crawl one web source politely; call ``on_page(page, conn)`` once per page, inside the
    transaction that records it. Resumes from ``state`` if it already holds this source.

    ``source`` and ``politeness`` are the recipe's dicts (``harvest.sources[i]``,
    ``harvest.politeness``); missing keys take the schema defaults. Raises
    :class:`~bastion.errors.BadInputError` for unusable start URLs or a state file seeded with
    another configuration of the source; exceptions from ``on_page`` propagate (that page's
    transaction is rolled back, so a rerun retries it).
    """
    started = time.monotonic()
    crawler = _Crawler(source, politeness or {}, user_agent, state, on_page, progress, shared)
    resumed = state.is_seeded(crawler.cfg.name)
    try:
        crawler.seed()
        crawler.run()
    finally:
        crawler.fetcher.close()
        if shared is None:
            crawler.shared.stop.set()
    stats = crawler.stats(resumed, started)
    log.info(
        "%s: %d pages (%d this run, %d requests); %d links not followed, %d requested and failed; "
        "%d left in the frontier",
        stats.source,
        stats.fetched,
        stats.pages_this_run,
        stats.requests_this_run,
        sum(stats.not_followed.values()),
        sum(stats.requested_failed.values()),
        stats.pending,
    )
    return stats


def crawl_sources(
    sources: list[dict[str, Any]],
    politeness: dict[str, Any],
    user_agent: str,
    state_path: Any,
    on_page: OnPage,
    *,
    progress: Callable[[str, str], None] | None = None,
) -> list[CrawlStats]:
    """Crawl every source at once, under one politeness (see the module docstring); return each
    source's statistics, in the order of ``sources``.

    Each source runs :func:`crawl` in its own thread with its own connection to the state file at
    ``state_path``; ``on_page(page, conn)`` is called inside the transaction that records the page
    (SQLite lets one transaction write at a time, so ``on_page`` never runs twice at once).
    ``progress(source name, message)`` is called once per page. When one source's crawl fails,
    the others stop and the first error is raised.
    """
    politeness = politeness or {}
    shared = Politeness.from_recipe(politeness)

    def one(source: dict[str, Any]) -> CrawlStats:
        state = CrawlState(state_path)
        name = str(source["name"])
        tick = (lambda message: progress(name, message)) if progress is not None else None
        try:
            return crawl(source, politeness, user_agent, state, on_page, progress=tick, shared=shared)
        except BaseException:
            shared.stop.set()
            raise
        finally:
            state.close()

    if not sources:
        return []
    with ThreadPoolExecutor(max_workers=len(sources), thread_name_prefix="source") as pool:
        futures = [pool.submit(one, source) for source in sources]
        try:
            wait(futures)
        except BaseException:  # Ctrl-C: stop every crawl, then leave
            shared.stop.set()
            raise
        errors = [f.exception() for f in futures if f.exception() is not None]
        first = next((e for e in errors if not isinstance(e, CrawlStopped | FetchCancelled)), None)
        if first is not None or errors:
            raise first or errors[0]  # type: ignore[misc]
        return [f.result() for f in futures]
