"""The polite crawler against real HTTP servers on loopback (127.0.0.1/2/3 act as three hosts)."""

from __future__ import annotations

import gzip
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from email.utils import formatdate
from pathlib import Path
from typing import Any

import pytest
from fixture_server import FixtureServer, Reply, page, redirect

from harvest.crawl import CrawlStats, FetchedPage, crawl, extract_links, parse_sitemap
from harvest.fetch import HostPacer, decode_text, parse_retry_after
from harvest.serve import serve_folder
from harvest.state import CrawlState
from harvest.urls import Scope, address_refusal, normalize_url, trap_refusal

REPO = Path(__file__).resolve().parent.parent
UA = "BastionTestBot/0.1 (+https://example.invalid/bot)"
# Server-side arrival times are kernel receive timestamps (see fixture_server); the margin only
# absorbs timestamp granularity. The pacer itself is checked exactly in test_host_pacer_spacing_is_exact.
TOLERANCE = 0.005

pytestmark = pytest.mark.timeout(60)


def fast(**overrides: Any) -> dict[str, Any]:
    """Politeness for tests: loopback allowed, no delay, quick retries."""
    base = {
        "delay_seconds": 0.0,
        "timeout_seconds": 2.0,
        "max_retries": 1,
        "backoff_seconds": 0.01,
        "max_backoff_seconds": 2.0,
        "allow_private_addresses": True,
        "max_concurrency": 4,
    }
    return {**base, **overrides}


def run_crawl(
    tmp_path: Path, source: dict[str, Any], politeness: dict[str, Any], state_name: str = "state.sqlite"
) -> tuple[CrawlStats, list[FetchedPage], CrawlState]:
    """Crawl and collect the pages handed to on_page."""
    pages: list[FetchedPage] = []
    state = CrawlState(tmp_path / state_name)
    stats = crawl({"name": "test", "kind": "web", **source}, politeness, UA, state, lambda p, conn: pages.append(p))
    return stats, pages, state


def outcome(state: CrawlState, url: str) -> tuple[str, str | None]:
    row = state.outcome("test", normalize_url(url))
    assert row is not None, f"{url} not in the frontier"
    return str(row["status"]), row["reason"]  # type: ignore[return-value]


def gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in zip(times, times[1:], strict=False)]


# -- unit rules ----------------------------------------------------------------------------------


def test_normalize_url() -> None:
    assert (
        normalize_url("HTTP://Example.COM:80/a/./b/../c?z=1&utm_source=x&a=2&sid=9#frag")
        == "http://example.com/a/c?a=2&z=1"
    )
    assert normalize_url("https://x.org:443") == "https://x.org/"
    assert normalize_url("http://x.org/a;jsessionid=AB12?PHPSESSID=1&b=2&sessionid=3&fbclid=4") == "http://x.org/a?b=2"
    assert normalize_url("http://x.org/%7euser/%c3%a9") == "http://x.org/~user/%C3%A9"
    assert normalize_url("../d?b=2&a=1", base="http://h/a/b/c") == "http://h/a/d?a=1&b=2"
    assert normalize_url("http://bücher.de/") == "http://xn--bcher-kva.de/"
    assert normalize_url("MAILTO:a@b.org").startswith("mailto:")


def test_traps_scope_and_files() -> None:
    assert trap_refusal("http://h/blog/2024/05/12/") == "trap_calendar"
    assert trap_refusal("http://h/events?month=2024-06") == "trap_calendar"
    assert trap_refusal("http://h/a/b/a/b/") == "trap_repeated_segments"
    assert trap_refusal("http://h/x/x/x/") == "trap_repeated_segments"
    assert trap_refusal("http://h/p?" + "&".join(f"k{i}=1" for i in range(9))) == "trap_query_params"
    assert trap_refusal("http://h/" + "a" * 2100) == "trap_long_url"
    assert trap_refusal("http://h/docs/v1.2/intro?lang=en") is None
    scope = Scope.for_source({"allowed_domains": ["docs.example.com"], "path_prefixes": ["/guide/"]})
    assert scope.link_refusal("https://docs.example.com/guide/a") is None
    assert scope.link_refusal("https://www.docs.example.com/guide/a") == "off_domain"  # no subdomains
    assert scope.link_refusal("https://docs.example.com/blog/a") == "out_of_scope"
    assert scope.link_refusal("ftp://docs.example.com/guide/a") == "scheme"
    assert scope.link_refusal("https://docs.example.com/guide/logo.png") == "file_type"
    assert scope.link_refusal("https://docs.example.com/guide/manual.pdf") == "file_type"
    assert scope.link_refusal("https://docs.example.com/guide/login") == "not_crawlable"
    pdf_scope = Scope.for_source({"allowed_domains": ["docs.example.com"], "allow_pdf": True})
    assert pdf_scope.link_refusal("https://docs.example.com/manual.pdf") is None
    ported = Scope.for_source({"allowed_domains": ["127.0.0.1:8080"]})
    assert ported.host_refusal("http://127.0.0.1:8080/") is None
    assert ported.host_refusal("http://127.0.0.1:9090/") == "off_domain"


def test_address_rules() -> None:
    for url in (
        "http://127.0.0.1/",
        "http://10.1.2.3/",
        "http://192.168.0.1/",
        "http://169.254.169.254/",
        "http://[::1]/",
        "http://[::ffff:10.0.0.1]/",
        "http://0.0.0.0/",
        "http://localhost/",
    ):
        assert address_refusal(url, allow_private=False) == "private_address", url
    assert address_refusal("http://8.8.8.8/", allow_private=False) is None
    assert address_refusal("http://127.0.0.1/", allow_private=True) is None
    assert address_refusal("http://no-such-host.invalid/", allow_private=False) == "dns_error"


def test_retry_after_decoding_links_and_sitemaps() -> None:
    assert parse_retry_after("3") == 3.0
    assert 9 <= (parse_retry_after(formatdate(time.time() + 10, usegmt=True)) or 0) <= 10.5
    assert parse_retry_after(formatdate(time.time() - 100, usegmt=True)) == 0.0
    assert parse_retry_after("soon") is None
    text, _ = decode_text("<p>Le café est prêt, dit-il à l'hôtel.</p>".encode("latin-1"), "utf-8")
    assert "café est prêt" in text  # the declared charset lied: detection took over
    russian = "<p>Привет мир, это тест кодировки страницы документации</p>"
    assert decode_text(russian.encode("koi8-r"))[0] == russian
    assert decode_text(b"\xff\xfe\x00garbage \x81\x8d", None)[0]  # never raises
    html = (
        '<html><head><base href="/docs/"></head><body><a href="a.html#x">a</a>'
        '<a href="b.html" rel="nofollow">b</a><a href="a.html">again</a><a href="mailto:x@y">m</a>'
        "</body></html>"
    )
    assert extract_links(html, "http://h/index.html") == ["http://h/docs/a.html", "mailto:x@y"]
    no_follow = '<meta name="robots" content="noindex, nofollow"><a href="/x">x</a>'
    assert extract_links(no_follow, "http://h/") == []
    xml = (
        b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
        b'<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"><url><loc>http://h/a</loc></url>'
        b"<url><loc>&e;</loc></url></urlset>"
    )
    assert parse_sitemap(xml)[0] == ["http://h/a"]
    index = gzip.compress(
        b'<sitemapindex xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">'
        b"<sitemap><loc>http://h/s1.xml</loc></sitemap></sitemapindex>"
    )
    assert parse_sitemap(index) == ([], ["http://h/s1.xml"])


def test_host_pacer_spacing_is_exact() -> None:
    """Eight threads hammering one host: request starts are never closer than the delay."""
    pacer = HostPacer(0.05)
    starts: list[float] = []
    lock = threading.Lock()

    def hit() -> None:
        for _ in range(3):
            pacer.wait_turn("h")
            with lock:
                starts.append(time.monotonic())

    threads = [threading.Thread(target=hit) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(starts) == 24
    assert len(pacer.starts["h"]) == 24
    assert min(gaps(pacer.starts["h"])) >= 0.05 - 1e-9  # recorded starts: exact (float rounding aside)
    assert min(gaps(sorted(starts))) >= 0.05 - 0.005  # clock read after the return: thread wake-up jitter


# -- crawling behaviours -------------------------------------------------------------------------


def test_robots_disallow_crawl_delay_and_sitemaps(tmp_path: Path) -> None:
    with FixtureServer() as srv:
        base = srv.base_url
        srv.routes.update(
            {
                "/robots.txt": Reply(
                    content_type="text/plain",
                    body=("User-agent: *\nDisallow: /private/\nCrawl-delay: 0.3\nSitemap: /sitemap_index.xml\n"),
                ),  # relative: resolved against the origin
                "/": Reply(body=page("/public", "/private/secret", "/go-private", title="home")),
                "/go-private": redirect("/private/landing"),
                "/public": Reply(body=page("/", title="public")),
                "/sitemap_index.xml": Reply(
                    content_type="application/xml",
                    body=(
                        '<?xml version="1.0"?><sitemapindex xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">'
                        f"<sitemap><loc>{base}/sitemap-a.xml</loc></sitemap>"
                        f"<sitemap><loc>{base}/sitemap-b.xml.gz</loc></sitemap></sitemapindex>"
                    ),
                ),
                "/sitemap-a.xml": Reply(
                    content_type="application/xml",
                    body=(
                        '<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">'
                        f"<url><loc>{base}/orphan-1</loc></url><url><loc>{base}/private/hidden</loc></url>"
                        "<url><loc>http://127.0.0.2:1/elsewhere</loc></url></urlset>"
                    ),
                ),
                "/sitemap-b.xml.gz": Reply(
                    content_type="application/gzip",
                    body=gzip.compress(b"<urlset><url><loc>/orphan-2</loc></url></urlset>"),
                ),  # relative <loc>, as in the demo
                "/orphan-1": Reply(body=page(title="orphan one")),
                "/orphan-2": Reply(body=page(title="orphan two")),
            }
        )
        stats, pages, state = run_crawl(tmp_path, {"start_urls": [base + "/"]}, fast())
        hits = srv.paths()
        page_times = srv.times()
    assert {p.url for p in pages} == {base + "/", base + "/public", base + "/orphan-1", base + "/orphan-2"}
    assert not [h for h in hits if h.startswith("/private/")]
    assert hits.count("/robots.txt") == 1
    assert outcome(state, base + "/private/secret") == ("refused", "robots")
    assert outcome(state, base + "/go-private") == ("refused", "robots")  # a redirect is checked too
    assert stats.refused.get("robots") == 3 and stats.fetched == 4
    assert min(gaps(page_times)) >= 0.3 - TOLERANCE  # robots.txt crawl-delay beats delay_seconds=0


def test_robots_unavailable_disallows_all_and_missing_allows_all(tmp_path: Path) -> None:
    with (
        FixtureServer({"/robots.txt": Reply(status=503), "/": Reply(body=page("/a"))}) as down,
        FixtureServer({"/": Reply(body=page())}, host="127.0.0.2") as missing,
    ):
        stats, pages, _ = run_crawl(tmp_path, {"start_urls": [down.url("/"), missing.url("/")]}, fast())
        assert down.paths() == ["/robots.txt", "/robots.txt"]  # retried once, then the host is off limits
        assert missing.paths() == ["/robots.txt", "/"]
    assert [p.url for p in pages] == [missing.url("/")]
    assert stats.refused == {"robots": 1}


def test_off_domain_links_and_redirects(tmp_path: Path) -> None:
    with FixtureServer(host="127.0.0.2") as other, FixtureServer() as srv:
        srv.routes.update(
            {
                "/": Reply(
                    body=page(
                        other.url("/page"),
                        "/away",
                        "/loop-a",
                        "/chain/0",
                        "/moved",
                        "/target",
                        "/to-ftp",
                        "/session",
                        title="home",
                    )
                ),
                "/session": redirect("/session;jsessionid=ABC123"),  # same URL once normalised: no loop
                "/session;jsessionid=ABC123": Reply(body=page(title="session")),
                "/away": redirect(other.url("/landing")),
                "/loop-a": redirect("/loop-b", 301),
                "/loop-b": redirect("/loop-a", 307),
                "/moved": redirect("/target", 308),
                "/target": Reply(body=page(title="target")),
                "/to-ftp": redirect("ftp://127.0.0.1/file"),
            }
        )
        for i in range(8):
            srv.routes[f"/chain/{i}"] = redirect(f"/chain/{i + 1}")
        stats, pages, state = run_crawl(tmp_path, {"start_urls": [srv.url("/")]}, fast())
        assert other.paths() == []  # neither the link nor the redirect reached the other host
        chain_hits = [p for p in srv.paths() if p.startswith("/chain/")]
    assert outcome(state, other.url("/page")) == ("refused", "off_domain")
    assert outcome(state, srv.url("/away")) == ("refused", "redirect_off_domain")
    assert outcome(state, srv.url("/loop-a")) == ("refused", "redirect_loop")
    assert outcome(state, srv.url("/chain/0")) == ("refused", "too_many_redirects")
    assert outcome(state, srv.url("/to-ftp")) == ("refused", "redirect_scheme")
    assert chain_hits == [f"/chain/{i}" for i in range(6)]  # the request plus 5 redirects, no more
    moved = [p for p in pages if p.requested_url == srv.url("/moved")]
    assert len(moved) == 1 and moved[0].url == srv.url("/target")
    assert [p.url for p in pages].count(srv.url("/target")) == 1  # linked AND redirected to: once
    assert outcome(state, srv.url("/target")) == ("refused", "duplicate")
    assert outcome(state, srv.url("/session"))[0] == "fetched"
    assert srv.url("/session") in {p.url for p in pages}
    assert stats.refused["off_domain"] == 1


def test_429_retry_after_is_honoured(tmp_path: Path) -> None:
    def busy(hit: Any) -> Reply:
        if hit.count == 1:
            return Reply(status=429, headers={"Retry-After": "1"}, body="slow down", content_type="text/plain")
        return Reply(body=page(title="finally"))

    def busy_date(hit: Any) -> Reply:
        if hit.count == 1:
            return Reply(status=503, headers={"Retry-After": formatdate(time.time() + 60, usegmt=True)})
        return Reply(body=page(title="capped"))

    with FixtureServer({"/": Reply(body=page("/busy", "/busy-date")), "/busy": busy, "/busy-date": busy_date}) as srv:
        stats, pages, _ = run_crawl(
            tmp_path, {"start_urls": [srv.url("/")]}, fast(max_retries=2, backoff_seconds=0.01, max_backoff_seconds=1.5)
        )
        busy_times = srv.times(["/busy"])
        date_times = srv.times(["/busy-date"])
    assert srv.url("/busy") in {p.url for p in pages}
    assert len(busy_times) == 2 and busy_times[1] - busy_times[0] >= 1.0 - TOLERANCE
    # an HTTP-date Retry-After of 60 s is capped at max_backoff_seconds
    assert len(date_times) == 2 and 1.5 - TOLERANCE <= date_times[1] - date_times[0] < 5
    assert stats.fetched == 3 and not stats.failed


def test_500_retried_with_backoff_then_failed(tmp_path: Path) -> None:
    with FixtureServer({"/": Reply(body=page("/broken")), "/broken": Reply(status=500, body="oops")}) as srv:
        stats, _, state = run_crawl(tmp_path, {"start_urls": [srv.url("/")]}, fast(max_retries=2, backoff_seconds=0.1))
        times = srv.times(["/broken"])
    assert len(times) == 3
    waits = gaps(times)
    assert waits[0] >= 0.1 - TOLERANCE and waits[1] >= 0.2 - TOLERANCE  # exponential
    assert outcome(state, srv.url("/broken")) == ("failed", "http_500")
    assert stats.failed == {"http_500": 1}


def test_timeouts_size_and_content_types(tmp_path: Path) -> None:
    huge = b"<html><body>" + b"x" * 200_000 + b"</body></html>"
    routes = {
        "/": Reply(
            body=page("/slow", "/trickle", "/huge", "/huge-stream", "/blob", "/image", "/doc", "/logo.png", "/missing")
        ),
        "/slow": Reply(delay=3.0, body=page()),
        "/trickle": Reply(body=b"<html>" + b"x" * 40, stream_chunks=40, chunk_pause=0.05),
        "/huge": Reply(body=huge),
        "/huge-stream": Reply(body=huge, stream_chunks=20),
        "/blob": Reply(body=b"\x00\x01" * 100, content_type="application/octet-stream"),
        "/image": Reply(body=b"\x89PNG\r\n\x1a\n" + b"\x00" * 100, content_type="image/png"),
        "/doc": Reply(body=b"%PDF-1.4 fake", content_type="application/pdf"),
    }
    with FixtureServer(routes) as srv:
        started = time.monotonic()
        stats, pages, state = run_crawl(
            tmp_path,
            {"start_urls": [srv.url("/")]},
            fast(timeout_seconds=0.4, max_retries=1, max_response_bytes=50_000),
        )
        elapsed = time.monotonic() - started
        assert srv.count("/slow") == 2  # a timeout is retried
        assert srv.count("/logo.png") == 0  # refused by extension, never requested
        pdf_stats, pdf_pages, _ = run_crawl(
            tmp_path, {"start_urls": [srv.url("/doc")], "allow_pdf": True}, fast(), state_name="pdf.sqlite"
        )
    assert [p.url for p in pages] == [srv.url("/")]
    assert outcome(state, srv.url("/slow")) == ("failed", "timeout")
    assert outcome(state, srv.url("/trickle")) == ("failed", "timeout")
    assert outcome(state, srv.url("/huge")) == ("refused", "too_large")
    assert outcome(state, srv.url("/huge-stream")) == ("refused", "too_large")
    for path in ("/blob", "/image", "/doc"):
        assert outcome(state, srv.url(path)) == ("refused", "content_type")
    assert outcome(state, srv.url("/logo.png")) == ("refused", "file_type")
    assert outcome(state, srv.url("/missing")) == ("failed", "http_404")
    assert elapsed < 10
    assert len(pdf_pages) == 1 and pdf_pages[0].text is None and pdf_pages[0].body.startswith(b"%PDF")
    assert pdf_pages[0].content_type == "application/pdf" and pdf_stats.fetched == 1


def test_bad_encodings_decode_without_crashing(tmp_path: Path) -> None:
    latin = (
        "<html><body><p>Le café est prêt. Résumé de la sécurité réseau: les clés sont "
        "gérées à l'échelle du déploiement, déjà vérifiées.</p></body></html>"
    ).encode("latin-1")
    cp1252 = (
        "<html><body><p>The \u201cleast privilege\u201d rule \u2014 costs \u20ac0 and saves "
        "\u2018everything\u2019. Don\u2019t skip it\u2026</p></body></html>"
    ).encode("cp1252")
    routes = {
        "/": Reply(body=page("/latin", "/cp1252", "/garbage")),
        "/latin": Reply(body=latin, content_type="text/html; charset=utf-8"),
        "/cp1252": Reply(body=cp1252, content_type="text/html"),
        "/garbage": Reply(body=b"<html>\xff\xfe\xfa\x81\x00 ok", content_type="text/html; charset=bogus-9"),
    }
    with FixtureServer(routes) as srv:
        _, pages, _ = run_crawl(tmp_path, {"start_urls": [srv.url("/")]}, fast())
    by_path = {p.url.rsplit("/", 1)[1]: p for p in pages}
    assert set(by_path) == {"", "latin", "cp1252", "garbage"}
    assert "café" in (by_path["latin"].text or "") and "sécurité" in (by_path["latin"].text or "")
    assert "\u201cleast privilege\u201d" in (by_path["cp1252"].text or "")
    assert "ok" in (by_path["garbage"].text or "")


def test_calendar_and_relative_link_traps(tmp_path: Path) -> None:
    def day(hit: Any) -> Reply:  # an endless calendar: every day links to the next one
        return Reply(body=page(hit.path + "next/2024/05/13/"))

    routes: dict[str, Any] = {
        "/": Reply(
            body=page(
                "/events/2024/05/12/",
                "/events/?date=2024-05-13",
                "/events/?month=6",
                "/events/cal?year=2024&week=3",
                "/loop/",
                "/docs/",
            )
        ),
        "/events/*": day,
        "/loop/*": lambda hit: Reply(body=page("loop/")),  # relative link: /loop/loop/loop/...
        "/docs/": Reply(body=page("intro")),
        "/docs/intro": Reply(body=page()),
    }
    with FixtureServer(routes) as srv:
        stats, pages, _ = run_crawl(tmp_path, {"start_urls": [srv.url("/")], "max_depth": 10}, fast())
        hits = srv.paths()
    assert not [h for h in hits if h.startswith("/events")]
    assert [h for h in hits if h.startswith("/loop")] == ["/loop/", "/loop/loop/"]
    assert stats.refused["trap_calendar"] == 4
    assert stats.refused["trap_repeated_segments"] == 1
    expected = ("/", "/loop/", "/loop/loop/", "/docs/", "/docs/intro")
    assert {p.url for p in pages} == {srv.url(p) for p in expected}


def test_non_http_schemes_refused(tmp_path: Path) -> None:
    html = page(
        "mailto:sec@example.org", "ftp://127.0.0.1/pub", "javascript:void(0)", "tel:+100", "data:text/html,hi", "/ok"
    )
    with FixtureServer({"/": Reply(body=html), "/ok": Reply(body=page())}) as srv:
        stats, pages, _ = run_crawl(tmp_path, {"start_urls": [srv.url("/")]}, fast())
    assert stats.refused == {"scheme": 5}
    assert len(pages) == 2


def test_private_address_refused_unless_allowed(tmp_path: Path) -> None:
    with FixtureServer({"/": Reply(body=page())}) as srv:
        stats, pages, state = run_crawl(tmp_path, {"start_urls": [srv.url("/")]}, fast(allow_private_addresses=False))
        assert srv.paths() == []  # not even robots.txt
    assert pages == [] and stats.refused == {"private_address": 1}
    assert outcome(state, srv.url("/")) == ("refused", "private_address")


def test_dead_host_connection_error_and_robots(tmp_path: Path) -> None:
    """Nothing listens: robots.txt unreachable means 'disallow all'; without robots, connection_error."""
    with FixtureServer() as srv:
        dead = srv.url("/")
    stats, _, _ = run_crawl(tmp_path, {"start_urls": [dead]}, fast(max_retries=1))
    assert stats.refused == {"robots": 1}
    stats, _, state = run_crawl(
        tmp_path, {"start_urls": [dead]}, fast(max_retries=1, respect_robots_txt=False), state_name="no-robots.sqlite"
    )
    assert stats.failed == {"connection_error": 1}
    assert state.outcome("test", dead)["requests"] == 2  # type: ignore[index]  # retried once
    assert stats.to_dict()["failed"] == {"connection_error": 1}


def test_per_host_delay_with_concurrent_hosts(tmp_path: Path) -> None:
    def site(prefix: str) -> dict[str, Any]:
        routes: dict[str, Any] = {"/": Reply(body=page(*[f"/{prefix}/{i}" for i in range(5)]))}
        routes.update({f"/{prefix}/{i}": Reply(body=page("/")) for i in range(5)})
        return routes

    with FixtureServer(site("a")) as one, FixtureServer(site("b"), host="127.0.0.2") as two:
        source = {"start_urls": [one.url("/"), two.url("/")], "allowed_domains": ["127.0.0.1", "127.0.0.2"]}
        stats, pages, _ = run_crawl(
            tmp_path, source, fast(delay_seconds=0.25, max_concurrency=4, per_host_concurrency=2)
        )
        t1, t2 = one.times(), two.times()
    assert len(pages) == 12 and stats.per_host == {"127.0.0.1": 6, "127.0.0.2": 6}
    for times in (t1, t2):
        assert len(times) == 7  # robots.txt + 6 pages
        assert min(gaps(times)) >= 0.25 - TOLERANCE
    assert t2[0] < t1[-1] and t1[0] < t2[-1]  # the two hosts were crawled at the same time


def test_same_pages_on_every_run_under_max_pages(tmp_path: Path) -> None:
    """Random server latency and two hosts: max_pages still takes the same pages, in BFS order."""
    rng = random.Random(7)

    def routes(tag: str) -> dict[str, Any]:
        r: dict[str, Any] = {
            "/": lambda hit: Reply(delay=rng.random() * 0.03, body=page(*[f"/{tag}{i}" for i in range(6)]))
        }
        for i in range(6):
            r[f"/{tag}{i}"] = lambda hit, i=i: Reply(
                delay=rng.random() * 0.03, body=page(*[f"/{tag}{i}/{j}" for j in range(3)])
            )
        r["/*"] = lambda hit: Reply(delay=rng.random() * 0.03, body=page())
        return r

    with FixtureServer(routes("a")) as one, FixtureServer(routes("b"), host="127.0.0.3") as two:
        source = {
            "start_urls": [one.url("/"), two.url("/")],
            "allowed_domains": ["127.0.0.1", "127.0.0.3"],
            "max_pages": 9,
        }
        runs = [
            run_crawl(tmp_path, source, fast(max_concurrency=6, per_host_concurrency=3), state_name=f"run{i}.sqlite")
            for i in range(3)
        ]
    taken = [[p.url for p in pages] for _, pages, _ in runs]
    assert taken[0] == taken[1] == taken[2]
    # each level is interleaved across hosts (round-robin), in discovery order within a host
    expected = [
        one.url("/"),
        two.url("/"),
        one.url("/a0"),
        two.url("/b0"),
        one.url("/a1"),
        two.url("/b1"),
        one.url("/a2"),
        two.url("/b2"),
        one.url("/a3"),
    ]
    assert taken[0] == expected
    assert all(stats.fetched == 9 for stats, _, _ in runs)


def test_on_page_error_rolls_back_and_rerun_resumes(tmp_path: Path) -> None:
    routes = {
        "/": Reply(body=page("/a", "/b", "/c")),
        "/a": Reply(body=page()),
        "/b": Reply(body=page()),
        "/c": Reply(body=page()),
    }
    source = {"name": "test", "kind": "web", "max_pages": 10}

    def make_on_page(fail_on: str | None) -> Any:
        def on_page(p: FetchedPage, conn: sqlite3.Connection) -> None:
            conn.execute("CREATE TABLE IF NOT EXISTS lead_pages (url TEXT)")
            conn.execute("INSERT INTO lead_pages VALUES (?)", (p.url,))
            if fail_on and p.url.endswith(fail_on):
                raise RuntimeError("extraction bug")

        return on_page

    with FixtureServer(routes) as srv:
        state = CrawlState(tmp_path / "s.sqlite")
        src = {**source, "start_urls": [srv.url("/")]}
        with pytest.raises(RuntimeError, match="extraction bug"):
            crawl(src, fast(max_concurrency=1), UA, state, make_on_page("/b"))
        assert outcome(state, srv.url("/b"))[0] == "pending"
        stats = crawl(src, fast(), UA, state, make_on_page(None))
    urls = [r[0] for r in state.conn.execute("SELECT url FROM lead_pages")]
    assert sorted(urls) == sorted(srv.url(p) for p in ("/", "/a", "/b", "/c"))
    assert stats.fetched == 4 and stats.resumed
    with state.transaction() as conn:  # other code can use the same file and transaction
        conn.execute("CREATE TABLE IF NOT EXISTS notes (x INTEGER)")
        conn.execute("INSERT INTO notes VALUES (1)")
    other = state.connect()
    assert other.execute("SELECT COUNT(*) FROM notes").fetchone()[0] == 1
    assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    other.close()
    state.close()


def test_serve_folder(tmp_path: Path) -> None:
    site = tmp_path / "site"
    (site / "guide").mkdir(parents=True)
    (site / "index.html").write_text(page("guide/one.html", "guide/two.html", title="home"), encoding="utf-8")
    (site / "guide" / "one.html").write_text(page("two.html", title="one"), encoding="utf-8")
    (site / "guide" / "two.html").write_text(page("../index.html", title="two — ünïcode"), encoding="utf-8")
    with serve_folder(site) as base:
        assert base.startswith("http://127.0.0.1:")
        stats, pages, _ = run_crawl(tmp_path, {"start_urls": [base + "/"]}, fast())
    assert stats.fetched == 4  # "/" and "/index.html" are two URLs of one file
    assert any("ünïcode" in (p.text or "") for p in pages)


# -- kill and resume -----------------------------------------------------------------------------

CRAWL_SCRIPT = """
import sys
from harvest.crawl import crawl
from harvest.state import CrawlState

base, path = sys.argv[1], sys.argv[2]
state = CrawlState(path)

def on_page(page, conn):
    conn.execute("CREATE TABLE IF NOT EXISTS handled (url TEXT NOT NULL, depth INTEGER)")
    conn.execute("INSERT INTO handled VALUES (?, ?)", (page.url, page.depth))

source = {"name": "site", "kind": "web", "start_urls": [base + "/"], "max_pages": 40, "max_depth": 2}
politeness = {"delay_seconds": 0.03, "allow_private_addresses": True, "timeout_seconds": 5,
              "max_retries": 1, "backoff_seconds": 0.01, "max_concurrency": 2}
crawl(source, politeness, "KillTestBot/1", state, on_page)
"""


def _tree_routes() -> dict[str, Any]:
    """1 + 8 + 32 = 41 pages; max_pages 40 cuts the last one."""
    routes: dict[str, Any] = {"/": Reply(body=page(*[f"/s{i}/" for i in range(8)]))}
    for i in range(8):
        routes[f"/s{i}/"] = Reply(body=page(*[f"/s{i}/p{j}" for j in range(4)], "/"))
        for j in range(4):
            routes[f"/s{i}/p{j}"] = Reply(body=page(f"/s{i}/", f"/s{(i + 1) % 8}/p{j}"))
    return routes


def _handled(path: Path) -> list[str]:
    if not path.exists():
        return []
    conn = sqlite3.connect(path, timeout=5)
    try:
        return [r[0] for r in conn.execute("SELECT url FROM handled ORDER BY rowid")]
    except sqlite3.OperationalError:  # table not created yet
        return []
    finally:
        conn.close()


def _start(base: str, path: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-c", CRAWL_SCRIPT, base, str(path)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def test_sigkill_and_resume_gives_the_same_pages(tmp_path: Path) -> None:
    with FixtureServer(_tree_routes()) as srv:
        reference = tmp_path / "reference.sqlite"
        proc = _start(srv.base_url, reference)
        assert proc.wait(timeout=30) == 0, proc.stderr.read().decode() if proc.stderr else ""
        expected = _handled(reference)

        killed = tmp_path / "killed.sqlite"
        kills = 0
        for threshold in (6, 20):
            proc = _start(srv.base_url, killed)
            deadline = time.monotonic() + 30
            while len(_handled(killed)) < threshold and time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.01)
            assert proc.poll() is None, "the crawl finished before it could be killed"
            proc.send_signal(signal.SIGKILL)
            assert proc.wait(timeout=10) == -signal.SIGKILL
            kills += 1
            assert len(_handled(killed)) < len(expected)
        proc = _start(srv.base_url, killed)
        assert proc.wait(timeout=30) == 0, proc.stderr.read().decode() if proc.stderr else ""
        resumed = _handled(killed)
    assert kills == 2 and len(expected) == 40
    assert len(resumed) == len(set(resumed)), "a page was handed to on_page twice"
    assert sorted(resumed) == sorted(expected)
    assert resumed == expected  # same order too: commits follow the frontier's rank order
    state = CrawlState(killed)
    assert state.count("site", "fetched") == 40 and state.count("site", "pending") == 1
    state.close()


def test_date_archives_and_query_patterns_are_bounded(tmp_path: Path) -> None:
    """An archive with one page per month (each linking to the next) and a query-string calendar:
    a few URLs per pattern are crawled, the rest refused as traps, whatever max_depth allows."""
    from harvest.urls import MAX_URLS_PER_DATE_PATTERN, MAX_URLS_PER_QUERY_PATTERN, TrapBudget, url_pattern

    assert url_pattern("http://h/events/archive/2024-02/") == ("date", "h/events/archive/<date>/?")
    assert url_pattern("http://h/blog/2024/") == url_pattern("http://h/blog/2023/")
    assert url_pattern("http://h/docs/v1.2/intro") is None
    budget = TrapBudget()
    assert [budget.admit(f"http://h/a/2024-{m:02d}/") for m in range(1, 6)] == [None] * 3 + ["trap_calendar"] * 2

    def month(hit: Any) -> Reply:
        year, mon = int(hit.path.split("/")[3][:4]), int(hit.path.split("/")[3][5:7])
        nxt = f"{year + mon // 12}-{mon % 12 + 1:02d}"
        return Reply(body=page(f"/events/archive/{nxt}/", f"/search?page={mon + 1}", "/docs/"))

    routes: dict[str, Any] = {
        "/": Reply(body=page("/events/archive/2024-02/", "/docs/")),
        "/events/archive/*": month,
        "/search": lambda hit: Reply(body=page(f"/search?page={int(hit.path.split('=')[1]) + 1}")),
        "/docs/": Reply(body=page()),
    }
    with FixtureServer(routes) as srv:
        stats, _, _ = run_crawl(tmp_path, {"start_urls": [srv.url("/")], "max_depth": 30}, fast())
        hits = srv.paths()
    archive = [h for h in hits if h.startswith("/events/archive/")]
    search = [h for h in hits if h.startswith("/search")]
    assert len(archive) == MAX_URLS_PER_DATE_PATTERN, archive
    assert len(search) <= MAX_URLS_PER_QUERY_PATTERN, search
    assert stats.not_followed["trap_calendar"] >= 1 and "trap_calendar" not in stats.requested_failed


def test_sources_are_crawled_at_once_under_one_politeness(tmp_path: Path) -> None:
    """Three sources: two on their own hosts, one sharing a host with another. All run at once;
    every host, the shared one included, is hit no faster than its delay (server side)."""
    from harvest.crawl import crawl_sources

    def site(prefix: str) -> dict[str, Any]:
        routes: dict[str, Any] = {f"/{prefix}/": Reply(body=page(*[f"/{prefix}/{i}" for i in range(4)]))}
        routes.update({f"/{prefix}/{i}": Reply(body=page(f"/{prefix}/")) for i in range(4)})
        return routes

    with FixtureServer({**site("a"), **site("c")}) as one, FixtureServer(site("b"), host="127.0.0.2") as two:
        sources = [
            {"name": name, "kind": "web", "start_urls": [srv.url(f"/{name}/")], "path_prefixes": [f"/{name}/"]}
            for name, srv in (("a", one), ("b", two), ("c", one))
        ]
        pages: list[str] = []
        started = time.monotonic()
        stats = crawl_sources(
            sources,
            fast(delay_seconds=0.2, max_concurrency=8),
            UA,
            tmp_path / "s.sqlite",
            lambda p, c: pages.append(p.url),
        )
        elapsed = time.monotonic() - started
        t1, t2 = one.times(), two.times()
    assert [s.source for s in stats] == ["a", "b", "c"] and [s.fetched for s in stats] == [5, 5, 5]
    assert len(pages) == 15
    assert min(gaps(t1)) >= 0.2 - TOLERANCE and min(gaps(t2)) >= 0.2 - TOLERANCE
    assert t2[0] < t1[-1] and t1[0] < t2[-1]  # the hosts were crawled at the same time
    # host one serves 10 pages + robots.txt (twice: once per source): about 11-12 delays, not 16
    assert elapsed < 0.2 * (len(t1) + 3)
