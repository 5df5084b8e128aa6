"""The whole harvest against a faulty site: real corpus pages mixed with every failure a crawler
meets. Asserts what is kept, what is refused and why, as quality.json reports it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO
from fixture_server import FixtureServer, Reply, redirect

from bastion.recipe import load_recipe
from bastion.run_folder import RunFolder
from bastion.runner import run_stage, stage_named

pytestmark = pytest.mark.slow

CORPUS = REPO / "recipes" / "corpus" / "cloudsec-mini"
PAGES = [
    "iam/least-privilege.html",
    "network/segmentation.html",
    "kubernetes/rbac.html",
    "data-protection/encryption.html",
    "logging/incident-response.html",
    "logging/incident-response-printable.html",
]


def corpus_page(rel: str) -> Reply:
    return Reply(body=(CORPUS / rel).read_bytes())


def routes(other_host: str) -> dict[str, Any]:
    links = [f"/{p}" for p in PAGES] + [
        "/loop-a",
        "/away",
        "/busy",
        "/broken",
        "/slow",
        "/huge",
        "/logo.bin",
        "/latin1",
        "/events/2024/05/12/",
        "/private/secret.html",
        "mailto:sec@example.org",
        f"http://{other_host}/off",
    ]
    index = (
        "<html><head><title>Faulty docs</title></head><body><main><h1>Faulty docs</h1><ul>"
        + "".join(f'<li><a href="{href}">{href}</a></li>' for href in links)
        + "</ul></main></body></html>"
    )
    busy_state = {"n": 0}

    def busy(_: Any) -> Reply:
        busy_state["n"] += 1
        if busy_state["n"] == 1:
            return Reply(status=429, headers={"Retry-After": "1"})
        return corpus_page("kubernetes/network-policies.html")

    latin1 = (CORPUS / "compliance/pci-dss-scope.html").read_text().replace("scope", "scopé")
    return {
        "/": Reply(body=index),
        **{f"/{p}": corpus_page(p) for p in PAGES},
        "/robots.txt": Reply(
            body="User-agent: *\nDisallow: /private/\nSitemap: /sitemap.xml\n", content_type="text/plain"
        ),
        "/sitemap.xml": Reply(
            body='<?xml version="1.0"?><urlset xmlns="http://www.sitemaps.org/schemas/'
            'sitemap/0.9"><url><loc>/compliance/nist-csf.html</loc></url></urlset>',
            content_type="application/xml",
        ),
        "/compliance/nist-csf.html": corpus_page("compliance/nist-csf.html"),
        "/loop-a": redirect("/loop-b"),
        "/loop-b": redirect("/loop-a"),
        "/away": redirect(f"http://{other_host}/landing"),
        "/busy": busy,
        "/broken": Reply(status=500, body="oops"),
        "/slow": Reply(body="<html>late</html>", delay=3.0),
        "/huge": Reply(body=b"<html>" + b"x" * 3_000_000 + b"</html>"),
        "/logo.bin": Reply(body=b"\x00\x01" * 1000, content_type="application/octet-stream"),
        "/latin1": Reply(body=latin1.encode("latin-1", errors="replace"), content_type="text/html; charset=utf-8"),
        "/private/secret.html": corpus_page("iam/mfa-federation.html"),
    }


def test_harvest_of_a_faulty_site(tmp_path: Path) -> None:
    with FixtureServer(host="127.0.0.2") as other:
        with FixtureServer(routes(other.netloc)) as site:
            recipe_text = f"""\
name: faulty-site
base_model: {{id: "bastion:tiny-llama"}}
system_prompt: You are a Cloud Security Architect.
harvest:
  politeness: {{delay_seconds: 0.0, timeout_seconds: 1.0, max_retries: 1, backoff_seconds: 0.05,
               max_backoff_seconds: 2, max_response_bytes: 1000000, allow_private_addresses: true}}
  sources:
    - {{name: faulty, kind: web, start_urls: ["{site.url("/")}"], max_depth: 2, max_pages: 50}}
  quality: {{min_chars: 150, min_words: 25}}
  heldout: {{fraction: 0}}  # every page that survives the faults is checked below
  output: {{min_records: 5}}
train: {{device: cpu, sequence_len: 512, precision: fp32, flash_attention: false, optimizer: adamw_torch}}
"""
            path = tmp_path / "faulty.yaml"
            path.write_text(recipe_text)
            recipe = load_recipe(path)
            run_stage(stage_named("harvest"), recipe, RunFolder.for_recipe(recipe, base=tmp_path / "runs"))
            other_hits = list(other.hits)
    data = tmp_path / "runs" / "faulty-site" / "data"
    quality = json.loads((data / "quality.json").read_text())
    failed, not_followed = quality["pages"]["failed"], quality["pages"]["not_followed"]
    for reason in ("redirect_loop", "redirect_off_domain", "http_500", "timeout", "too_large", "content_type"):
        assert failed.get(reason, 0) >= 1, (reason, failed)  # requested, and no page came of it
    for reason in ("robots", "off_domain"):
        assert not_followed.get(reason, 0) >= 1 and reason not in failed, (reason, not_followed)  # never requested
    md = (data / "quality.md").read_text()
    assert "### Not followed, by reason" in md and "### Requested and failed, by HTTP status or error" in md
    assert other_hits == []  # the off-domain host never saw a request
    sources = [json.loads(line) for line in (data / "sources.jsonl").read_text().splitlines()]
    urls = {s["url"].rsplit("/", 1)[-1] for s in sources}
    # real pages, the page behind a 429, the sitemap-only page and the badly encoded page are kept
    assert {"least-privilege.html", "rbac.html", "busy", "nist-csf.html", "latin1"} <= urls
    assert not any("secret" in u or "events" in u for u in urls)
    # the printable copy of incident-response is mostly dropped as near/exact duplicates
    assert quality["dedup"]["near"] + quality["dedup"]["exact"] >= 3
    text = (data / "train.jsonl").read_text()
    assert "scopé" in text  # latin-1 bytes under a utf-8 label were decoded, not mangled
