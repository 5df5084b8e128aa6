"""URL rules of the crawler: normalisation, crawler traps, scope, schemes and network addresses.

Every function is pure except :func:`resolve_host` and :func:`address_refusal`, which resolve the
host name. A refusal is a short reason string (``off_domain``, ``trap_calendar``,
``private_address``...) that ends up in the crawl state and the harvest report; ``None`` means the
URL passes. courlan's ``is_not_crawlable`` names login and contact pages.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
import string
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import SplitResult, parse_qsl, quote, urlencode, urljoin, urlsplit, urlunsplit

from courlan import is_not_crawlable

log = logging.getLogger(__name__)

HTTP_SCHEMES = frozenset({"http", "https"})
DEFAULT_PORTS = {"http": 80, "https": 443}

# Query parameters that only track visitors or carry a session: they never change the page.
TRACKING_PARAM_RE = re.compile(
    r"^(?:utm_[a-z0-9_]*|gclid|gclsrc|dclid|fbclid|msclkid|yclid|twclid|igshid|mc_cid|mc_eid|_ga|_gl|"
    r"_hsenc|_hsmi|mkt_tok|oly_anon_id|oly_enc_id|vero_id|"
    r"sessionid|session_id|jsessionid|phpsessid|sid|aspsessionid[a-z]*|cfid|cftoken)$",
    re.IGNORECASE,
)
# ;jsessionid=... style session ids embedded in the path (Java servlet containers).
PATH_SESSION_RE = re.compile(r";(?:jsessionid|phpsessid|sid|sessionid)=[^/?#]*", re.IGNORECASE)

# Calendar traps: a full date in the path, or date-like query parameters.
CALENDAR_PATH_RE = re.compile(r"/(?:19|20)\d\d[/-](?:0?[1-9]|1[0-2])[/-](?:0?[1-9]|[12]\d|3[01])(?:/|$)")
CALENDAR_PARAMS = frozenset(
    {
        "date",
        "day",
        "month",
        "year",
        "week",
        "calendar",
        "cal",
        "ical",
        "from_date",
        "to_date",
        "start_date",
        "end_date",
    }
)

# Date-like path segments: a year, a year and month ("2024-02", "202402"), a month or day after one.
YEAR_SEGMENT_RE = re.compile(r"^(?:19|20)\d\d$")
YEAR_MONTH_RE = re.compile(r"(?<!\d)(?:19|20)\d\d[-_.]?(?:0[1-9]|1[0-2])(?:[-_.]?(?:0[1-9]|[12]\d|3[01]))?(?!\d)")
MONTH_OR_DAY_RE = re.compile(r"^(?:0?[1-9]|[12]\d|3[01])$")
MAX_URLS_PER_DATE_PATTERN = 3  # distinct URLs admitted per date pattern ("/events/archive/<date>/")
MAX_URLS_PER_QUERY_PATTERN = 10  # distinct URLs admitted per path and set of query parameter names

# Links to files that are never documentation pages: not worth a request.
BINARY_EXTENSION_RE = re.compile(
    r"\.(?:png|jpe?g|gif|bmp|ico|svg|webp|tiff?|avif|mp[34]|m4[av]|avi|mov|mkv|webm|ogg|wav|flac|aac|"
    r"zip|tar|gz|tgz|bz2|xz|7z|rar|jar|war|exe|msi|dmg|deb|rpm|iso|apk|bin|"
    r"css|js|mjs|map|woff2?|ttf|otf|eot|"
    r"docx?|xlsx?|pptx?|odt|ods|odp|epub|ps|eps|psd|ai|swf|"
    r"json|rss|atom|csv|ics)$",
    re.IGNORECASE,
)

_PCT_RE = re.compile(r"%([0-9A-Fa-f]{2})")
_UNRESERVED = frozenset(string.ascii_letters + string.digits + "-._~")

MAX_URL_LENGTH = 2000
MAX_OTHER_SCHEME_LENGTH = 300
MAX_QUERY_PARAMS = 8
MAX_SEGMENT_REPEATS = 2


class UrlError(ValueError):
    """A string that cannot be used as a URL."""


def normalize_url(url: str, base: str | None = None) -> str:
    """Canonical form of ``url`` (resolved against ``base``): one page, one string.

    Lowercases scheme and host (IDNA-encoded), drops the default port, the fragment, ``;jsessionid=``
    path parameters and tracking/session query parameters, resolves ``.``/``..`` segments,
    normalises percent-encoding and sorts the query by parameter name. Non-http(s) URLs come back
    with only their scheme lowercased, so that :func:`scheme_refusal` can name them.
    Raises :class:`UrlError` for strings that are not URLs.

    Not ``courlan.normalize_url``: the crawler needs one string per page, and courlan's keeps the
    fragment and ``.``/``..`` segments (the same page twice), keeps ``;jsessionid=`` (encoded), leaves
    ``%7e`` as is, decodes IDNA hosts to Unicode and drops parameters such as ``ref`` or
    ``source`` that select a different page on documentation sites (``?ref=v2``).
    """
    raw = (url or "").strip()
    if not raw:
        raise UrlError("empty URL")
    try:
        joined = urljoin(base, raw) if base else raw
        parts = urlsplit(joined)
    except ValueError as exc:
        raise UrlError(f"cannot parse URL {raw!r}: {exc}") from exc
    scheme = parts.scheme.lower()
    if scheme not in HTTP_SCHEMES:
        if not scheme:
            raise UrlError(f"URL {raw!r} has no scheme")
        return f"{scheme}:{joined.split(':', 1)[1]}"[:MAX_OTHER_SCHEME_LENGTH]  # data: URLs can be huge
    netloc = _normalize_netloc(parts, raw)
    path = _normalize_path(parts.path)
    query = _normalize_query(parts.query)
    return urlunsplit((scheme, netloc, path, query, ""))


def _normalize_netloc(parts: SplitResult, raw: str) -> str:
    """Lowercase IDNA host plus a non-default port; user info is dropped."""
    try:
        host = parts.hostname
        port = parts.port
    except ValueError as exc:
        raise UrlError(f"bad port in URL {raw!r}") from exc
    if not host:
        raise UrlError(f"URL {raw!r} has no host")
    host = host.rstrip(".").lower()
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    else:
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise UrlError(f"bad host name in URL {raw!r}") from exc
    scheme = parts.scheme.lower()
    if port is not None and port != DEFAULT_PORTS[scheme]:
        return f"{host}:{port}"
    return host


def _normalize_path(path: str) -> str:
    """Resolve dot segments, drop session path parameters, normalise percent-encoding."""
    path = PATH_SESSION_RE.sub("", path)
    segments: list[str] = []
    for seg in path.lstrip("/").split("/"):
        if seg == ".":
            continue
        if seg == "..":
            if segments:
                segments.pop()
            continue
        segments.append(seg)
    trailing = path.endswith(("/.", "/..")) and bool(segments) and segments[-1] != ""
    cleaned = "/" + "/".join(segments) + ("/" if trailing else "")
    return _normalize_percent(cleaned, safe="/:@!$&'()*+,;=")


def _normalize_percent(part: str, *, safe: str) -> str:
    """Decode escapes of unreserved characters, upper-case the others, encode the rest (UTF-8)."""

    def fix(match: re.Match[str]) -> str:
        char = chr(int(match.group(1), 16))
        return char if char in _UNRESERVED else "%" + match.group(1).upper()

    return quote(_PCT_RE.sub(fix, part), safe=safe + "%")


def _normalize_query(query: str) -> str:
    """Drop tracking/session parameters and sort the rest by name (stable for repeated names)."""
    if not query:
        return ""
    pairs = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if not TRACKING_PARAM_RE.match(k)]
    pairs.sort(key=lambda kv: kv[0])
    return urlencode(pairs, doseq=False)


def url_host(url: str) -> str:
    """Lower-case host name of a URL, without port (``""`` if none)."""
    try:
        return (urlsplit(url).hostname or "").lower()
    except ValueError:
        return ""


def url_netloc(url: str) -> str:
    """Lower-case ``host[:port]`` of a URL."""
    try:
        return urlsplit(url).netloc.lower()
    except ValueError:
        return ""


def url_origin(url: str) -> str:
    """``scheme://host[:port]`` of a normalised URL (the unit robots.txt applies to)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def scheme_refusal(url: str) -> str | None:
    """``scheme`` unless the URL is http or https."""
    try:
        scheme = urlsplit(url).scheme.lower()
    except ValueError:
        return "bad_url"
    return None if scheme in HTTP_SCHEMES else "scheme"


def trap_refusal(
    url: str,
    *,
    max_length: int = MAX_URL_LENGTH,
    max_query_params: int = MAX_QUERY_PARAMS,
    max_segment_repeats: int = MAX_SEGMENT_REPEATS,
) -> str | None:
    """Name the crawler trap a URL looks like, or ``None``.

    ``trap_long_url`` (longer than ``max_length``), ``trap_query_params`` (more than
    ``max_query_params`` parameters), ``trap_calendar`` (a full date in the path such as
    ``/2024/05/12/``, or a date/day/month/year/week parameter), ``trap_repeated_segments`` (a path
    segment more than ``max_segment_repeats`` times, or a run of segments repeated back to back,
    the signature of relative links that nest forever: ``/a/b/a/b/``).
    """
    if len(url) > max_length:
        return "trap_long_url"
    parts = urlsplit(url)
    params = parse_qsl(parts.query, keep_blank_values=True)
    if len(params) > max_query_params:
        return "trap_query_params"
    if CALENDAR_PATH_RE.search(parts.path) or any(k.lower() in CALENDAR_PARAMS for k, _ in params):
        return "trap_calendar"
    if _has_repeated_segments([s for s in parts.path.split("/") if s], max_segment_repeats):
        return "trap_repeated_segments"
    return None


def url_pattern(url: str) -> tuple[str, str] | None:
    """``(kind, pattern)`` of a URL whose path holds a date or that has a query string, else None.

    ``kind`` is ``date`` (the pattern is the path with each date-like segment, and a month or day
    segment right after a year, replaced by ``<date>``; the query's parameter names kept) or
    ``query`` (the path and the sorted names of the query's parameters, values dropped).
    """
    parts = urlsplit(url)
    names = ",".join(sorted({k for k, _ in parse_qsl(parts.query, keep_blank_values=True)}))
    segments = parts.path.split("/")
    dated, after_date = False, False
    pattern: list[str] = []
    for seg in segments:
        if YEAR_SEGMENT_RE.match(seg) or YEAR_MONTH_RE.search(seg):
            pattern.append(YEAR_MONTH_RE.sub("<date>", seg) if not YEAR_SEGMENT_RE.match(seg) else "<date>")
            dated = after_date = True
        elif after_date and MONTH_OR_DAY_RE.match(seg):
            pattern.append("<date>")
        else:
            pattern.append(seg)
            after_date = False
    host = parts.netloc
    if dated:
        return "date", f"{host}{'/'.join(pattern)}?{names}"
    if parts.query:
        return "query", f"{host}{parts.path}?{names}"
    return None


class TrapBudget:
    """Admits a few URLs per URL pattern (``url_pattern``): ``MAX_URLS_PER_DATE_PATTERN`` per date
    pattern (an archive with one page per month or day), ``MAX_URLS_PER_QUERY_PATTERN`` per query
    pattern (a calendar or search driven by query strings). ``admit(url)`` is None, or the reason
    (``trap_calendar``, ``trap_query_pattern``) once the pattern's budget is spent. Not thread-safe:
    one crawler calls it, in commit order, so the URLs admitted do not depend on timing."""

    REASONS = {"date": "trap_calendar", "query": "trap_query_pattern"}
    LIMITS = {"date": MAX_URLS_PER_DATE_PATTERN, "query": MAX_URLS_PER_QUERY_PATTERN}

    def __init__(self) -> None:
        self._seen: set[str] = set()
        self._counts: dict[tuple[str, str], int] = {}

    def load(self, rows: Iterable[tuple[str, str, str | None]]) -> None:
        """Count the URLs a crawl already admitted: ``(url, status, reason)`` rows of its frontier."""
        for url, status, reason in rows:
            if status == "refused" and reason in self.REASONS.values():
                continue
            self.admit(url, force=True)

    def admit(self, url: str, *, force: bool = False) -> str | None:
        if url in self._seen:
            return None
        pattern = url_pattern(url)
        if pattern is not None:
            used = self._counts.get(pattern, 0)
            if used >= self.LIMITS[pattern[0]] and not force:
                return self.REASONS[pattern[0]]
            self._counts[pattern] = used + 1
        self._seen.add(url)
        return None


def _has_repeated_segments(segments: Sequence[str], max_repeats: int) -> bool:
    """True if a segment occurs too often or a block of 2+ segments repeats back to back."""
    if not segments:
        return False
    counts: dict[str, int] = {}
    for seg in segments:
        counts[seg] = counts.get(seg, 0) + 1
        if counts[seg] > max_repeats:
            return True
    n = len(segments)
    for size in range(2, n // 2 + 1):
        for start in range(n - 2 * size + 1):
            if segments[start : start + size] == segments[start + size : start + 2 * size]:
                return True
    return False


def file_type_refusal(url: str, *, allow_pdf: bool = False) -> str | None:
    """``file_type`` for links whose extension names a non-page file (PDF only if not allowed)."""
    path = urlsplit(url).path
    if BINARY_EXTENSION_RE.search(path):
        return "file_type"
    if path.lower().endswith(".pdf") and not allow_pdf:
        return "file_type"
    return None


@dataclass(frozen=True)
class Scope:
    """Where a crawl may go: hosts (exact, optionally ``host:port``) and path prefixes."""

    allowed_domains: frozenset[str]
    path_prefixes: tuple[str, ...] = ()
    allow_pdf: bool = False
    skip_not_crawlable: bool = True

    @classmethod
    def for_source(cls, source: dict, seeds: Iterable[str] = ()) -> Scope:
        """Scope of a recipe source; no ``allowed_domains`` means the hosts of the seed URLs."""
        domains = [d.strip().lower().rstrip(".") for d in source.get("allowed_domains") or [] if d.strip()]
        if not domains:
            domains = sorted({url_host(u) for u in seeds if url_host(u)})
        prefixes = tuple(p for p in source.get("path_prefixes") or [] if p)
        return cls(frozenset(domains), prefixes, bool(source.get("allow_pdf", False)))

    def host_refusal(self, url: str) -> str | None:
        """``off_domain`` unless the URL's host (or ``host:port``) is listed exactly."""
        host, netloc = url_host(url), url_netloc(url)
        if host in self.allowed_domains or netloc in self.allowed_domains:
            return None
        return "off_domain"

    def path_refusal(self, url: str) -> str | None:
        """``out_of_scope`` unless the path starts with one of the prefixes (if any)."""
        if not self.path_prefixes:
            return None
        path = urlsplit(url).path or "/"
        return None if any(path.startswith(p) for p in self.path_prefixes) else "out_of_scope"

    def refusal(self, url: str) -> str | None:
        """Scheme, host and path checks (no network)."""
        return scheme_refusal(url) or self.host_refusal(url) or self.path_refusal(url)

    def link_refusal(self, url: str) -> str | None:
        """Every check a discovered link must pass before it enters the frontier (no network)."""
        reason = self.refusal(url) or trap_refusal(url) or file_type_refusal(url, allow_pdf=self.allow_pdf)
        if reason:
            return reason
        if self.skip_not_crawlable and is_not_crawlable(url):
            return "not_crawlable"  # login, contact, imprint pages (courlan's rule)
        return None


def is_public_address(address: str) -> bool:
    """True for globally routable unicast addresses (IPv4-mapped IPv6 is unwrapped)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not (
        ip.is_multicast or ip.is_reserved or ip.is_loopback or ip.is_link_local or ip.is_private or ip.is_unspecified
    )


@lru_cache(maxsize=4096)
def resolve_host(host: str) -> tuple[str, ...]:
    """Every address a host name resolves to (cached for the process). Raises ``OSError``."""
    infos = socket.getaddrinfo(host.strip("[]"), None, proto=socket.IPPROTO_TCP)
    return tuple(sorted({str(info[4][0]) for info in infos}))


def address_refusal(url: str, *, allow_private: bool) -> str | None:
    """``private_address`` if the host resolves to a loopback, private, link-local or reserved
    address (unless ``allow_private``), ``dns_error`` if it does not resolve."""
    host = url_host(url)
    if not host:
        return "bad_url"
    if allow_private:
        return None
    try:
        addresses = resolve_host(host)
    except (OSError, UnicodeError) as exc:
        log.debug("cannot resolve %s: %s", host, exc)
        return "dns_error"
    if not addresses or not all(is_public_address(a) for a in addresses):
        return "private_address"
    return None
