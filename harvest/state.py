"""The crawl's memory: a SQLite file (WAL, synchronous=FULL) holding the frontier and every URL's
outcome, so that a crawl killed at any moment resumes where it stopped.

One row per (source, normalised URL) in ``crawl_frontier``:

- ``status``: ``pending`` (to fetch), ``fetched``, ``refused`` or ``failed`` (with ``reason``);
- ``depth``, ``parent_rank``, ``link_index``: where the URL was first found; ``rank``: its place
  in its depth level (ordered by parent rank, then link position), fixed when the level starts.

The crawler marks a URL done, inserts its outlinks and calls the page callback in ONE
transaction (:meth:`CrawlState.transaction`), so work is never half-recorded. Other code can put
its own tables in the same file and write them in that transaction.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS crawl_frontier (
    source TEXT NOT NULL,
    url TEXT NOT NULL,
    host TEXT NOT NULL,
    depth INTEGER NOT NULL,
    parent_rank INTEGER NOT NULL,
    link_index INTEGER NOT NULL,
    rank INTEGER,
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'fetched', 'refused', 'failed')),
    reason TEXT,
    http_status INTEGER,
    final_url TEXT,
    content_type TEXT,
    requests INTEGER NOT NULL DEFAULT 0,
    updated_at TEXT,
    PRIMARY KEY (source, url)
);
CREATE INDEX IF NOT EXISTS crawl_frontier_level ON crawl_frontier (source, status, depth, rank);
CREATE INDEX IF NOT EXISTS crawl_frontier_final ON crawl_frontier (source, final_url);
CREATE TABLE IF NOT EXISTS crawl_meta (
    source TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (source, key)
);
"""

DONE_STATUSES = ("fetched", "refused", "failed")


@dataclass(frozen=True)
class FrontierRow:
    """A URL waiting in the frontier."""

    url: str
    host: str
    depth: int
    rank: int


@dataclass(frozen=True)
class Seed:
    """A URL entering the frontier: a start URL, a sitemap entry or an outlink."""

    url: str
    host: str
    status: str = "pending"
    reason: str | None = None


def _round_robin_by_host(rows: list[tuple[str, str]]) -> list[str]:
    """URLs ordered by their position within their host, then by the host's first appearance."""
    per_host: dict[str, list[str]] = {}
    for url, host in rows:
        per_host.setdefault(host, []).append(url)
    queues = list(per_host.values())
    out: list[str] = []
    for position in range(max((len(q) for q in queues), default=0)):
        out.extend(q[position] for q in queues if position < len(q))
    return out


class CrawlState:
    """Crawl state in the SQLite file at ``path`` (created if missing).

    ``conn`` is the state's own connection (used by the crawler, one thread); :meth:`connect`
    opens more, configured the same way, for other code.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn: sqlite3.Connection | None = None

    # -- connections ------------------------------------------------------------------------
    def connect(self) -> sqlite3.Connection:
        """A new connection to the state file: autocommit mode (use :meth:`transaction`), WAL,
        synchronous=FULL, 30 s busy timeout; the crawl tables exist."""
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.executescript(SCHEMA)
        return conn

    @property
    def conn(self) -> sqlite3.Connection:
        """The state's own connection (opened on first use)."""
        if self._conn is None:
            self._conn = self.connect()
        return self._conn

    @contextmanager
    def transaction(self, conn: sqlite3.Connection | None = None) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` on ``conn`` (default: the state's own), rolled back
        on any exception."""
        conn = conn or self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def close(self) -> None:
        """Close the state's own connection."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> CrawlState:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- meta -------------------------------------------------------------------------------
    def get_meta(self, source: str, key: str) -> object | None:
        """A JSON value stored for ``source`` (``None`` if absent)."""
        row = self.conn.execute("SELECT value FROM crawl_meta WHERE source = ? AND key = ?", (source, key)).fetchone()
        return json.loads(row[0]) if row else None

    @staticmethod
    def set_meta(conn: sqlite3.Connection, source: str, key: str, value: object) -> None:
        """Store a JSON value for ``source`` (inside the caller's transaction)."""
        conn.execute(
            "INSERT OR REPLACE INTO crawl_meta (source, key, value) VALUES (?, ?, ?)",
            (source, key, json.dumps(value, sort_keys=True)),
        )

    # -- frontier writes (inside a transaction) ------------------------------------------------
    @staticmethod
    def add_urls(
        conn: sqlite3.Connection, source: str, depth: int, parent_rank: int, seeds: Iterable[Seed], now: str
    ) -> int:
        """Insert URLs found at ``depth`` (first finder wins); returns how many were new."""
        added = 0
        for index, seed in enumerate(seeds):
            cur = conn.execute(
                "INSERT OR IGNORE INTO crawl_frontier (source, url, host, depth, parent_rank, link_index, "
                "status, reason, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (source, seed.url, seed.host, depth, parent_rank, index, seed.status, seed.reason, now),
            )
            added += cur.rowcount
        return added

    @staticmethod
    def mark(
        conn: sqlite3.Connection,
        source: str,
        url: str,
        status: str,
        reason: str | None,
        now: str,
        *,
        http_status: int | None = None,
        final_url: str | None = None,
        content_type: str | None = None,
        requests: int = 0,
    ) -> None:
        """Record a URL's outcome."""
        conn.execute(
            "UPDATE crawl_frontier SET status = ?, reason = ?, http_status = ?, final_url = ?, "
            "content_type = ?, requests = requests + ?, updated_at = ? WHERE source = ? AND url = ?",
            (status, reason, http_status, final_url, content_type, requests, now, source, url),
        )

    @staticmethod
    def is_fetched(conn: sqlite3.Connection, source: str, final_url: str) -> bool:
        """Has a page with this final URL already been handed over?"""
        row = conn.execute(
            "SELECT 1 FROM crawl_frontier WHERE source = ? AND final_url = ? AND status = 'fetched' LIMIT 1",
            (source, final_url),
        ).fetchone()
        return row is not None

    # -- frontier reads -----------------------------------------------------------------------
    def is_seeded(self, source: str) -> bool:
        """Has the frontier of ``source`` been seeded (start URLs and sitemaps)?"""
        return bool(self.get_meta(source, "seeded"))

    def count(self, source: str, status: str) -> int:
        """Number of URLs of ``source`` with ``status``."""
        return int(
            self.conn.execute(
                "SELECT COUNT(*) FROM crawl_frontier WHERE source = ? AND status = ?", (source, status)
            ).fetchone()[0]
        )

    def next_level(self, source: str, max_depth: int) -> int | None:
        """Shallowest depth (≤ ``max_depth``) with pending URLs, or ``None``."""
        row = self.conn.execute(
            "SELECT MIN(depth) FROM crawl_frontier WHERE source = ? AND status = 'pending' AND depth <= ?",
            (source, max_depth),
        ).fetchone()
        return None if row[0] is None else int(row[0])

    def assign_ranks(self, source: str, depth: int) -> None:
        """Fix the order of a level once, in one transaction: discovery order (parent rank, then link
        position), interleaved round-robin across hosts so that the crawler's look-ahead window always
        holds work for every host (otherwise one host's block of links serialises a multi-host crawl)."""
        with self.transaction() as conn:
            missing = conn.execute(
                "SELECT COUNT(*) FROM crawl_frontier WHERE source = ? AND depth = ? AND rank IS NULL", (source, depth)
            ).fetchone()[0]
            if not missing:
                return
            rows = conn.execute(
                "SELECT url, host FROM crawl_frontier WHERE source = ? AND depth = ? "
                "ORDER BY parent_rank, link_index, url",
                (source, depth),
            ).fetchall()
            urls = _round_robin_by_host(rows)
            conn.executemany(
                "UPDATE crawl_frontier SET rank = ? WHERE source = ? AND url = ?",
                [(i, source, url) for i, url in enumerate(urls)],
            )

    def pending(self, source: str, depth: int) -> list[FrontierRow]:
        """Pending URLs of one level, in rank order."""
        rows = self.conn.execute(
            "SELECT url, host, depth, rank FROM crawl_frontier WHERE source = ? AND "
            "depth = ? AND status = 'pending' ORDER BY rank",
            (source, depth),
        )
        return [FrontierRow(url, host, int(d), int(rank)) for url, host, d, rank in rows]

    def frontier_urls(self, source: str) -> list[tuple[str, str, str | None]]:
        """``(url, status, reason)`` of every URL of ``source``, in the order they were ranked."""
        rows = self.conn.execute(
            "SELECT url, status, reason FROM crawl_frontier WHERE source = ? ORDER BY depth, rank, parent_rank, "
            "link_index, url",
            (source,),
        )
        return [(str(u), str(s), r) for u, s, r in rows]

    def outcome(self, source: str, url: str) -> dict[str, object] | None:
        """Everything recorded about one URL, or ``None``."""
        cur = self.conn.execute("SELECT * FROM crawl_frontier WHERE source = ? AND url = ?", (source, url))
        row = cur.fetchone()
        if row is None:
            return None
        return dict(zip([c[0] for c in cur.description], row, strict=True))

    def outcomes(self, source: str) -> list[dict[str, object]]:
        """Every URL row of ``source`` (depth, then rank)."""
        cur = self.conn.execute("SELECT * FROM crawl_frontier WHERE source = ? ORDER BY depth, rank, url", (source,))
        names = [c[0] for c in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur]

    def tally(self, source: str) -> list[tuple[str, str, str | None, bool, int]]:
        """``(host, status, reason, requested, count)`` groups of ``source``; ``requested``: the
        URLs were requested at least once (a refusal before any request is False)."""
        rows = self.conn.execute(
            "SELECT host, status, reason, requests > 0, COUNT(*) FROM crawl_frontier WHERE source = ? "
            "GROUP BY host, status, reason, requests > 0 ORDER BY host, status, reason, requests > 0",
            (source,),
        )
        return [(h, s, r, bool(q), int(n)) for h, s, r, q, n in rows]
