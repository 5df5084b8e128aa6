"""The polite fetcher: one GET with size, type, redirect, retry and pacing rules.

Why httpx rather than requests: the crawler shares ONE client between its worker threads, and
``httpx.Client`` is documented as thread-safe (its connection pool locks internally) while
``requests.Session`` is not; httpx's ``Timeout`` bounds connect, read, write and pool waits
separately; ``Client.stream`` + ``iter_bytes`` yields *decoded* bytes, so the size cap also
stops compression bombs; redirects are off by default, which is what manual, checked hops need.

Every outcome is a :class:`FetchResult`; nothing raises for network or HTTP trouble. Outcomes
are ``ok``, ``refused`` (a rule said no: ``too_large``, ``content_type``, ``redirect_*``,
``private_address``, ``scheme``...) or ``failed`` (the site did not deliver: ``http_404``,
``http_500`` after retries, ``timeout``, ``connection_error``).
"""

from __future__ import annotations

import email.utils
import logging
import re
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any
from urllib.parse import urljoin

import charset_normalizer
import httpx

from bastion.manifest import now_iso
from harvest.urls import UrlError, address_refusal, normalize_url, scheme_refusal, url_host

log = logging.getLogger(__name__)
if logging.getLogger("httpx").level == logging.NOTSET:
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request is noise here

HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
PDF_TYPE = "application/pdf"
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 5

HopCheck = Callable[[str], "str | None"]


class FetchCancelled(Exception):
    """The fetcher was closed while a request waited for its turn or its backoff."""


class HostPacer:
    """Spaces request *starts* to one host by at least that host's delay, across threads.

    Threads wanting the same host queue on that host's lock; the holder sleeps until the last
    start plus the delay, records the time it starts, and returns. A start is recorded only when
    it is at least ``delay`` after the previous one, whatever the number of threads, and a delay
    raised meanwhile (robots.txt crawl-delay) applies to the wait in progress. :meth:`touch`
    moves the last start to the moment the request's headers were written to the socket (after
    connection set-up and any scheduling hiccup), so the spacing holds as the server sees it.
    """

    def __init__(self, default_delay: float, stop: threading.Event | None = None) -> None:
        self.default_delay = max(0.0, float(default_delay))
        self._delays: dict[str, float] = {}
        self._last_start: dict[str, float] = {}
        self._host_locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._stop = stop or threading.Event()
        self.starts: dict[str, list[float]] = {}

    def delay(self, host: str) -> float:
        """Current minimum delay between two request starts to ``host``."""
        with self._guard:
            return self._delays.get(host, self.default_delay)

    def raise_delay(self, host: str, delay: float | None) -> None:
        """Make ``host``'s delay at least ``delay`` (never lowers it)."""
        if delay is None:
            return
        with self._guard:
            self._delays[host] = max(self._delays.get(host, self.default_delay), float(delay))

    def touch(self, host: str, when: float | None = None) -> None:
        """Record that a request to ``host`` actually started at ``when`` (default: now)."""
        when = time.monotonic() if when is None else when
        with self._guard:
            self._last_start[host] = max(self._last_start.get(host, when), when)

    def wait_turn(self, host: str) -> float:
        """Block until ``host`` may be hit; return the (monotonic) start time recorded."""
        with self._guard:
            lock = self._host_locks.setdefault(host, threading.Lock())
        with lock:
            while True:
                with self._guard:
                    last = self._last_start.get(host)
                    delay = self._delays.get(host, self.default_delay)
                now = time.monotonic()
                if last is None or now >= last + delay:
                    break
                if self._stop.wait(last + delay - now):
                    raise FetchCancelled("fetcher closed")
            with self._guard:
                self._last_start[host] = now
                self.starts.setdefault(host, []).append(now)
            return now


@dataclass
class FetchResult:
    """What one fetch (redirects and retries included) came to."""

    requested_url: str
    url: str
    outcome: str  # "ok" | "refused" | "failed"
    reason: str | None = None
    status: int | None = None
    content_type: str | None = None
    charset: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    redirects: list[str] = field(default_factory=list)
    requests: int = 0
    fetched_at: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"


@dataclass
class _Response:
    """One HTTP exchange without redirects, or the reason it went wrong."""

    status: int | None = None
    headers: httpx.Headers | None = None
    body: bytes = b""
    error: str | None = None  # timeout | connection_error | too_large | content_type | ...
    retry_after: float | None = None


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date); ``None`` if absent
    or unreadable. Dates in the past give 0."""
    if not value:
        return None
    value = value.strip()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


def parse_content_type(value: str | None) -> tuple[str | None, str | None]:
    """``(media type, charset)`` from a Content-Type header, both lower-cased."""
    if not value:
        return None, None
    media, _, params = value.partition(";")
    charset = None
    for param in params.split(";"):
        key, _, val = param.partition("=")
        if key.strip().lower() == "charset":
            charset = val.strip().strip("'\"").lower() or None
    return media.strip().lower() or None, charset


_META_CHARSET_RE = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.IGNORECASE)
# WHATWG: pages labelled latin-1/ascii are decoded as windows-1252.
_CHARSET_ALIASES = {
    "iso-8859-1": "cp1252",
    "iso8859-1": "cp1252",
    "latin1": "cp1252",
    "latin-1": "cp1252",
    "us-ascii": "cp1252",
    "ascii": "cp1252",
    "l1": "cp1252",
}


def _try_decode(body: bytes, charset: str | None) -> str | None:
    """Strict decode with ``charset``; ``None`` if unknown codec or invalid bytes."""
    if not charset:
        return None
    codec = _CHARSET_ALIASES.get(charset.lower(), charset)
    try:
        return body.decode(codec)
    except (LookupError, UnicodeDecodeError):
        return None


def decode_text(body: bytes, declared: str | None = None) -> tuple[str, str]:
    """Decode a page, never failing: ``(text, charset used)``.

    Order: the HTTP charset, a ``<meta charset>`` in the first 4 KB, UTF-8 (each strictly: a
    declared charset that does not fit the bytes, such as latin-1 bytes labelled UTF-8, is
    skipped), then charset detection with charset_normalizer: windows-1252 first when it reads
    the bytes without mess (the web's default for undeclared Western pages, and where generic
    detection is weakest on short texts), else the best guess; finally UTF-8 with replacements.
    """
    if body.startswith(b"\xef\xbb\xbf"):
        return body[3:].decode("utf-8", errors="replace"), "utf-8-sig"
    candidates: list[str] = []
    if declared:
        candidates.append(declared)
    meta = _META_CHARSET_RE.search(body[:4096])
    if meta:
        candidates.append(meta.group(1).decode("ascii", "ignore"))
    candidates.append("utf-8")
    for charset in candidates:
        text = _try_decode(body, charset)
        if text is not None:
            return text, charset.lower()
    for isolation in (["cp1252"], None):
        best = charset_normalizer.from_bytes(body, cp_isolation=isolation).best()
        if best is not None and _keeps_markup(body, str(best)):
            log.debug("decoded with detected charset %s (declared %s)", best.encoding, declared)
            return str(best), best.encoding
    return body.decode("utf-8", errors="replace"), "utf-8-replace"


def _keeps_markup(body: bytes, text: str) -> bool:
    """A guess that turns ASCII markup (``<html>...``) into something else is wrong (UTF-16 guesses)."""
    return not body.lstrip()[:1] == b"<" or text.lstrip()[:1] == "<"


def _looks_like_html(body: bytes) -> bool:
    head = body[:1024].lstrip().lower()
    return head.startswith((b"<!doctype html", b"<html", b"<head", b"<body")) or b"<html" in head


class Fetcher:
    """GETs pages for one crawl: user agent, timeout, size and type limits, checked redirects,
    retries with exponential backoff (``Retry-After`` wins, capped), per-host pacing.

    ``politeness`` is the recipe's ``harvest.politeness`` section (defaults filled or not).
    Thread-safe: worker threads share one instance.
    """

    def __init__(
        self,
        user_agent: str,
        politeness: dict[str, Any] | None = None,
        *,
        pacer: HostPacer | None = None,
        client: httpx.Client | None = None,
        trust_env: bool = True,
    ) -> None:
        p = politeness or {}
        self.user_agent = user_agent
        self.timeout = float(p.get("timeout_seconds", 20))
        self.max_retries = int(p.get("max_retries", 4))
        self.backoff = float(p.get("backoff_seconds", 1.0))
        self.max_backoff = float(p.get("max_backoff_seconds", 120))
        self.max_bytes = int(p.get("max_response_bytes", 5_000_000))
        self.allow_private = bool(p.get("allow_private_addresses", False))
        self._stop = threading.Event()
        self.pacer = pacer or HostPacer(float(p.get("delay_seconds", 1.0)), self._stop)
        self._client = client or httpx.Client(
            headers={
                "User-Agent": user_agent,
                "Accept": "text/html,application/xhtml+xml;q=0.9,application/pdf;q=0.8,*/*;q=0.1",
            },
            timeout=httpx.Timeout(self.timeout),
            follow_redirects=False,
            trust_env=trust_env,
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
        )
        self._lock = threading.Lock()
        self.requests_made = 0

    # -- lifecycle -------------------------------------------------------------------------
    def close(self) -> None:
        """Stop waiting requests and close connections."""
        self._stop.set()
        self._client.close()

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- checks ----------------------------------------------------------------------------
    def url_refusal(self, url: str) -> str | None:
        """Scheme and network-address checks for one URL (resolves the host)."""
        return scheme_refusal(url) or address_refusal(url, allow_private=self.allow_private)

    # -- public ----------------------------------------------------------------------------
    def fetch(
        self,
        url: str,
        *,
        content_types: Collection[str] | None = HTML_TYPES,
        hop_check: HopCheck | None = None,
        max_bytes: int | None = None,
        truncate: bool = False,
    ) -> FetchResult:
        """GET ``url`` following up to 5 redirects, each hop checked.

        ``content_types``: accepted media types (``None`` accepts any). ``hop_check(url)``
        returns a refusal reason for a redirect target (scope, robots) or ``None``.
        ``truncate``: keep the first ``max_bytes`` instead of refusing a larger body (robots.txt).
        """
        limit = max_bytes or self.max_bytes
        result = FetchResult(requested_url=url, url=url, outcome="failed")
        current, seen = url, {url}  # raw URLs requested: /a -> /a;jsessionid=1 is no loop
        for _hop in range(MAX_REDIRECTS + 1):
            refusal = self.url_refusal(current)
            if refusal:
                return self._finish(result, "refused", refusal)
            resp = self._request_with_retries(current, content_types, limit, truncate, result)
            if resp.status in REDIRECT_STATUSES and resp.headers is not None and "location" in resp.headers:
                result.redirects.append(current)
                target, reason = self._redirect_target(current, resp.headers["location"], seen, hop_check)
                if reason or target is None:
                    result.status = resp.status
                    return self._finish(result, "refused", reason or "redirect_bad_url")
                seen.add(target)
                current = target
                result.url = normalize_url(target)
                continue
            return self._complete(result, resp, content_types)
        return self._finish(result, "refused", "too_many_redirects")

    # -- internals -------------------------------------------------------------------------
    def _redirect_target(
        self, current: str, location: str, seen: set[str], hop_check: HopCheck | None
    ) -> tuple[str | None, str | None]:
        """The URL to request next (``Location`` resolved, fragment dropped) and a refusal reason.

        Rules are checked on the normalised target; the raw target is what the server asked for.
        """
        try:
            target = urljoin(current, location.strip()).split("#", 1)[0]
            normalized = normalize_url(target)
        except (UrlError, ValueError):
            return None, "redirect_bad_url"
        if scheme_refusal(normalized):
            return None, "redirect_scheme"
        if target in seen:
            return None, "redirect_loop"
        if len(seen) > MAX_REDIRECTS:
            return None, "too_many_redirects"
        if hop_check is not None:
            reason = hop_check(normalized)
            if reason:
                return None, reason if reason.startswith(("redirect_", "robots")) else f"redirect_{reason}"
        return target, None

    def _complete(self, result: FetchResult, resp: _Response, content_types: Collection[str] | None) -> FetchResult:
        """Turn the last hop's response into the final result."""
        result.status = resp.status
        if resp.headers is not None:
            result.headers = {k.lower(): v for k, v in resp.headers.items()}
            result.content_type, result.charset = parse_content_type(resp.headers.get("content-type"))
        if resp.error:
            outcome = "refused" if resp.error in ("too_large", "content_type", "bad_url") else "failed"
            return self._finish(result, outcome, resp.error)
        assert resp.status is not None
        if resp.status in REDIRECT_STATUSES:  # a redirect without Location
            return self._finish(result, "failed", "redirect_without_location")
        if not 200 <= resp.status < 300:
            return self._finish(result, "failed", f"http_{resp.status}")
        result.body = resp.body
        if result.content_type is None and content_types is not None and _looks_like_html(resp.body):
            result.content_type = "text/html"
        return self._finish(result, "ok", None)

    @staticmethod
    def _finish(result: FetchResult, outcome: str, reason: str | None) -> FetchResult:
        result.outcome, result.reason = outcome, reason
        result.fetched_at = now_iso()
        if outcome != "ok":
            log.debug("%s %s: %s", outcome, result.requested_url, reason)
        return result

    def _request_with_retries(
        self, url: str, content_types: Collection[str] | None, limit: int, truncate: bool, result: FetchResult
    ) -> _Response:
        """One hop, retried on timeouts, connection errors, 429 and 5xx."""
        resp = _Response(error="connection_error")
        for attempt in range(self.max_retries + 1):
            resp = self._request_once(url, content_types, limit, truncate)
            result.requests += 1
            if not self._retryable(resp) or attempt == self.max_retries:
                break
            wait = self._backoff(attempt, resp.retry_after)
            log.info(
                "retrying %s in %.2fs (%s, attempt %d of %d)",
                url,
                wait,
                resp.error or f"http_{resp.status}",
                attempt + 2,
                self.max_retries + 1,
            )
            if self._stop.wait(wait):
                raise FetchCancelled("fetcher closed")
        return resp

    @staticmethod
    def _retryable(resp: _Response) -> bool:
        if resp.error in ("timeout", "connection_error"):
            return True
        return resp.error is None and resp.status is not None and (resp.status == 429 or resp.status >= 500)

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        """``backoff * 2**attempt``; a Retry-After header wins; both capped at max_backoff."""
        wait = retry_after if retry_after is not None else self.backoff * (2**attempt)
        return max(0.0, min(wait, self.max_backoff))

    def _request_once(self, url: str, content_types: Collection[str] | None, limit: int, truncate: bool) -> _Response:
        """One GET, paced, streamed, without following redirects."""
        host = url_host(url)
        self.pacer.wait_turn(host)
        with self._lock:
            self.requests_made += 1
        deadline = time.monotonic() + self.timeout

        def trace(event: str, info: dict[str, Any]) -> None:  # httpcore's hook, on this thread
            if event.endswith("send_request_headers.complete"):  # the request is on the wire
                self.pacer.touch(host)

        try:
            with self._client.stream("GET", url, extensions={"trace": trace}) as response:
                return self._read(response, content_types, limit, truncate, deadline)
        except httpx.TimeoutException:
            return _Response(error="timeout")
        except httpx.DecodingError:  # a body that does not match its Content-Encoding
            return _Response(error="decoding_error")
        except (httpx.HTTPError, httpx.StreamError) as exc:  # refused, reset, protocol errors
            log.debug("connection error on %s: %s", url, exc)
            return _Response(error="connection_error")
        except httpx.InvalidURL:
            return _Response(error="bad_url")

    def _read(
        self,
        response: httpx.Response,
        content_types: Collection[str] | None,
        limit: int,
        truncate: bool,
        deadline: float,
    ) -> _Response:
        """Check status and headers, then stream the body up to ``limit`` bytes before ``deadline``."""
        out = _Response(status=response.status_code, headers=response.headers)
        status = response.status_code
        if not 200 <= status < 300:
            out.retry_after = parse_retry_after(response.headers.get("retry-after"))
            return out
        media, _ = parse_content_type(response.headers.get("content-type"))
        if content_types is not None and media is not None and media not in content_types:
            out.error = "content_type"
            return out
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit and not truncate:
            out.error = "too_large"
            return out
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_bytes():  # as received: no buffering up to a chunk size
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                if truncate:
                    break
                out.error = "too_large"
                return out
            if time.monotonic() > deadline:
                out.error = "timeout"
                return out
        body = b"".join(chunks)
        out.body = body[:limit] if truncate else body
        if content_types is not None and media is None and not _looks_like_html(out.body):
            out.error = "content_type"
        return out
