"""robots.txt per origin, read with protego (Google's rules: wildcards, longest match,
crawl-delay, request-rate, sitemaps), fetched once per origin through the crawl's own fetcher.

What an answer means follows Google's crawler:
- 2xx: the file's rules (the first 500 KiB; the rest is ignored);
- 4xx other than 429 (and redirect trouble): no robots.txt, everything is allowed;
- 429, 5xx, timeout, connection or DNS failure: the host is treated as fully disallowed.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from urllib.parse import urljoin

from protego import Protego

from harvest.fetch import Fetcher
from harvest.urls import url_host, url_origin

log = logging.getLogger(__name__)

ROBOTS_MAX_BYTES = 500 * 1024
LONG_CRAWL_DELAY = 30.0


@dataclass
class RobotsRules:
    """The rules of one origin, and how they were obtained."""

    origin: str
    status: str  # "parsed" | "allow_all" | "disallow_all" | "ignored"
    reason: str = ""  # e.g. "http_404", "http_503", "timeout"
    parser: Protego | None = field(default=None, repr=False)

    def can_fetch(self, url: str, user_agent: str) -> bool:
        """May ``user_agent`` fetch ``url``?"""
        if self.status in ("allow_all", "ignored"):
            return True
        if self.status == "disallow_all":
            return False
        assert self.parser is not None
        return bool(self.parser.can_fetch(url, user_agent))

    def delay(self, user_agent: str) -> float | None:
        """Longest of crawl-delay and request-rate (seconds per request) for ``user_agent``."""
        if self.parser is None:
            return None
        delays: list[float] = []
        crawl_delay = self.parser.crawl_delay(user_agent)
        if crawl_delay is not None:
            delays.append(float(crawl_delay))
        rate = self.parser.request_rate(user_agent)
        if rate is not None and rate.requests:
            delays.append(float(rate.seconds) / float(rate.requests))
        return max(delays) if delays else None

    def sitemaps(self) -> list[str]:
        """``Sitemap:`` URLs in file order, relative ones resolved against the origin."""
        if self.parser is None:
            return []
        return [urljoin(self.origin + "/", s.strip()) for s in self.parser.sitemaps if s.strip()]


def rules_from_fetch(origin: str, outcome: str, reason: str | None, status: int | None, body: bytes) -> RobotsRules:
    """Google's reading of a robots.txt fetch outcome."""
    if outcome == "ok":
        text = body[:ROBOTS_MAX_BYTES].decode("utf-8", errors="replace")
        return RobotsRules(origin, "parsed", f"http_{status}", Protego.parse(text))
    reason = reason or "unknown"
    if status is not None and 400 <= status < 500 and status != 429:
        return RobotsRules(origin, "allow_all", reason)
    if reason.startswith("redirect_") or reason == "too_many_redirects":
        return RobotsRules(origin, "allow_all", reason)
    return RobotsRules(origin, "disallow_all", reason)


class RobotsCache:
    """robots.txt rules per origin, fetched at most once each (thread-safe). A crawl-delay or
    request-rate found raises the fetcher's pacing delay for that host at once.

    With ``respect=False`` nothing is fetched and everything is allowed (no crawl-delay, no
    sitemaps from robots.txt).
    """

    def __init__(self, fetcher: Fetcher, user_agent: str, *, respect: bool = True) -> None:
        self.fetcher = fetcher
        self.user_agent = user_agent
        self.respect = respect
        self._rules: dict[str, RobotsRules] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def rules(self, url: str) -> RobotsRules:
        """Rules of ``url``'s origin, fetching robots.txt the first time."""
        origin = url_origin(url)
        if not self.respect:
            return RobotsRules(origin, "ignored")
        with self._guard:
            cached = self._rules.get(origin)
            if cached is not None:
                return cached
            lock = self._locks.setdefault(origin, threading.Lock())
        with lock:
            with self._guard:
                cached = self._rules.get(origin)
            if cached is None:
                cached = self._fetch(origin)
                with self._guard:
                    self._rules[origin] = cached
        return cached

    def can_fetch(self, url: str) -> bool:
        """May this crawler fetch ``url``?"""
        return self.rules(url).can_fetch(url, self.user_agent)

    def delay(self, url: str) -> float | None:
        """robots.txt delay for ``url``'s origin (``None`` if the file sets none)."""
        return self.rules(url).delay(self.user_agent)

    def sitemaps(self, url: str) -> list[str]:
        """``Sitemap:`` URLs of ``url``'s origin."""
        return self.rules(url).sitemaps()

    def _fetch(self, origin: str) -> RobotsRules:
        robots_url = origin + "/robots.txt"
        result = self.fetcher.fetch(robots_url, content_types=None, max_bytes=ROBOTS_MAX_BYTES, truncate=True)
        rules = rules_from_fetch(origin, result.outcome, result.reason, result.status, result.body)
        delay = rules.delay(self.user_agent)
        self.fetcher.pacer.raise_delay(url_host(origin), delay)  # before any other request to the host
        if delay is not None and delay > LONG_CRAWL_DELAY:
            log.warning("%s asks for %.0f s between requests; the crawl of that host will be slow", robots_url, delay)
        log.info("robots.txt %s: %s (%s)", robots_url, rules.status, rules.reason)
        return rules
