"""Deterministic synthetic documentation corpus for the harvest benchmarks.

``build_corpus`` recombines the paragraphs, lists, tables and code blocks of the demo corpus
(``recipes/corpus/cloudsec-mini``) into a few hundred realistic documentation pages. Each page
wraps its article in the heavy boilerplate of a real docs site: a mega menu with dozens of links,
a sidebar tree, breadcrumbs, an "on this page" table of contents, a cookie banner, a multi-column
footer, inline styles, analytics snippets and a JSON bootstrap blob, so that pages weigh 20 to
80 KB like real documentation pages. Four page templates imitate common documentation generators
(a custom portal, Sphinx, MkDocs Material and Docusaurus), so the main content does not always
sit in ``<main><article>``. About 5% of the pages are near-duplicates of an earlier page: the
same article with a sentence or two changed, rendered with different boilerplate.

The output depends only on ``n_pages``, ``seed`` and the demo corpus: the same arguments give
byte-identical files. Besides the pages, ``index.html`` at the top of ``out_dir`` links to every
page, so the corpus can also be served and crawled.

Usage::

    python bench/corpus.py OUT_DIR [N_PAGES] [SEED]
"""

from __future__ import annotations

import html
import json
import random
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from lxml import etree
from lxml import html as lxml_html

SOURCE_DIR = Path(__file__).resolve().parent.parent / "recipes" / "corpus" / "cloudsec-mini"
"""The demo corpus whose article bodies are recombined."""

MIN_BYTES = 20 * 1024
MAX_BYTES = 80 * 1024
NEAR_DUPLICATE_SHARE = 0.05
MAX_SECTION_OVERLAP = 0.4
"""Most Jaccard overlap of section sets between two pages that are not planted near-duplicates."""
MAX_PLAN_ATTEMPTS = 50
USAGE = "usage: python bench/corpus.py OUT_DIR [N_PAGES] [SEED]"
THEMES = ("portal", "sphinx", "mkdocs", "docusaurus")

TOPIC_NAMES = {
    "iam": "Identity and access",
    "network": "Networking",
    "data-protection": "Data protection",
    "kubernetes": "Kubernetes",
    "logging": "Detection and response",
    "compliance": "Compliance",
    "iac": "Infrastructure as code",
    "architecture": "Architecture",
}
TITLE_PATTERNS = (
    "{heading}",
    "{heading}: {page}",
    "{page}: {heading}",
    "{heading} ({topic})",
    "{heading}: a practical guide",
    "{topic} guide: {heading}",
    "{heading} in practice",
    "Reference: {heading}",
)
PRODUCT_NAMES = ("Stratus Cloud", "Nimbus Platform", "Cirrus Guard", "Altostrata", "Skyward Ops")
MENU_GROUPS = {
    "Products": (
        "Compute",
        "Object storage",
        "Managed databases",
        "Kubernetes engine",
        "Serverless functions",
        "Key management",
        "Secrets vault",
        "Load balancing",
        "Content delivery",
        "Private networking",
        "Identity center",
        "Audit trail",
        "Threat detection",
        "Backup service",
        "Message queues",
    ),
    "Solutions": (
        "Financial services",
        "Healthcare",
        "Public sector",
        "Retail",
        "Gaming",
        "Startups",
        "Migration",
        "Hybrid cloud",
        "Data lakes",
        "Zero trust",
    ),
    "Developers": (
        "Documentation",
        "Quickstarts",
        "Tutorials",
        "API reference",
        "CLI reference",
        "SDKs",
        "Code samples",
        "Architecture center",
        "Release notes",
        "Changelog",
        "Status page",
    ),
    "Resources": (
        "Blog",
        "Webinars",
        "Whitepapers",
        "Case studies",
        "Training",
        "Certification",
        "Community forum",
        "Events",
        "Partner network",
    ),
    "Company": ("About", "Careers", "Press", "Trust center", "Security", "Privacy", "Legal", "Contact sales"),
}
SENTENCE_EDITS = (
    ("should", "must"),
    ("usually", "often"),
    ("Most", "Many"),
    ("most", "many"),
    ("quickly", "promptly"),
    ("small", "narrow"),
    ("every", "each"),
    ("also", "additionally"),
    ("important", "essential"),
)
ADDED_SENTENCES = (
    "This applies equally to older versions of the service.",
    "Check the release notes for changes to this behaviour.",
    "The same approach works in every region.",
)
COOKIE_TEXTS = (
    "We use cookies and similar technologies to remember your preferences, measure how the documentation "
    "is used and improve it. You can accept all cookies, reject optional cookies or choose your settings. "
    "Read our cookie policy for details.",
    "This site uses essential cookies to work and optional analytics cookies to understand which pages "
    "help readers. Optional cookies are only set if you accept them. See the cookie policy.",
)


@dataclass
class Section:
    """One ``<h2>`` section of a demo page: its heading and its blocks as HTML strings."""

    heading: str
    blocks: list[str]


@dataclass
class SourcePage:
    """A demo page split into a title, a lead paragraph and sections."""

    topic: str
    title: str
    lead: str
    sections: list[Section] = field(default_factory=list)


@dataclass
class PageSpec:
    """What a generated page says, independent of its boilerplate."""

    index: int
    topic: str
    title: str
    slug: str
    lead: str
    sections: list[Section]
    duplicate_of: int | None = None

    @property
    def path(self) -> str:
        """The page's path relative to the corpus root."""
        return f"{self.topic}/{self.slug}.html"


def _slugify(text: str, limit: int = 60) -> str:
    """Lower-case ASCII slug of ``text``."""
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug[:limit].rstrip("-") or "page"


def _serialise(element: etree._Element) -> str:
    """HTML of ``element`` without its tail text."""
    element.tail = None
    return lxml_html.tostring(element, encoding="unicode").strip()


def load_sources(source_dir: Path = SOURCE_DIR) -> list[SourcePage]:
    """Parse the published demo pages into titles, leads and sections.

    The home page, drafts and the printable duplicate are skipped. Internal links inside the blocks
    are replaced by the placeholder ``href="#LINK"``, which page rendering points at other generated pages.
    """
    pages: list[SourcePage] = []
    for path in sorted(source_dir.rglob("*.html")):
        rel = path.relative_to(source_dir).as_posix()
        if rel.startswith("drafts/") or "printable" in rel or "/" not in rel:
            continue
        tree = lxml_html.fromstring(path.read_bytes())
        articles = tree.xpath("//main//article")
        if not articles:
            continue
        article = articles[0]
        for anchor in article.iter("a"):
            href = anchor.get("href", "")
            if not href.startswith(("http://", "https://", "#")):
                anchor.set("href", "#LINK")
        topic = rel.split("/")[0]
        title = article.findtext("h1") or rel
        lead_nodes = article.xpath("./p[1]")
        lead = _serialise(lead_nodes[0]) if lead_nodes else ""
        page = SourcePage(topic=topic, title=" ".join(title.split()), lead=lead)
        current: Section | None = None
        for child in article:
            tag = child.tag if isinstance(child.tag, str) else ""
            if tag == "h2":
                current = Section(heading=" ".join(child.text_content().split()), blocks=[])
                page.sections.append(current)
            elif current is not None and tag in {"p", "ul", "ol", "table", "pre", "h3"}:
                current.blocks.append(_serialise(child))
        page.sections = [s for s in page.sections if s.blocks]
        pages.append(page)
    if not pages:
        raise FileNotFoundError(f"no demo pages under {source_dir}")
    return pages


def _mutate_text(block: str, rng: random.Random) -> str:
    """Lightly edit a paragraph: swap one word for a synonym, drop its last sentence or add one."""
    edits = [(a, b) for a, b in SENTENCE_EDITS if re.search(rf"\b{a}\b", block)]
    if edits and rng.random() < 0.7:
        old, new = rng.choice(edits)
        return re.sub(rf"\b{old}\b", new, block, count=1)
    sentences = re.split(r"(?<=\.) (?=[A-Z])", block)
    if len(sentences) > 2:
        return " ".join(sentences[:-1]) + ("</p>" if block.endswith("</p>") else "")
    if block.endswith("</p>"):
        return block[: -len("</p>")] + " " + rng.choice(ADDED_SENTENCES) + "</p>"
    return block + rng.choice(ADDED_SENTENCES)


def _plan_pages(sources: list[SourcePage], n_pages: int, rng: random.Random) -> list[PageSpec]:
    """Decide titles and recombined content for every page."""
    by_topic: dict[str, list[SourcePage]] = {}
    for page in sources:
        by_topic.setdefault(page.topic, []).append(page)
    topics = sorted(by_topic)
    topic_pools = {t: [(p, s) for p in by_topic[t] for s in p.sections] for t in topics}
    section_sets: list[frozenset[tuple[str, str]]] = []
    n_dups = round(n_pages * NEAR_DUPLICATE_SHARE)
    dup_slots = set(rng.sample(range(n_pages // 4, n_pages), n_dups)) if n_dups else set()
    specs: list[PageSpec] = []
    used_slugs: set[str] = set()
    for index in range(n_pages):
        if index in dup_slots:
            original = specs[rng.randrange(len(specs))]
            while original.duplicate_of is not None:
                original = specs[original.duplicate_of]
            copied = [Section(sec.heading, list(sec.blocks)) for sec in original.sections]
            paragraphs = [
                (i, j) for i, sec in enumerate(copied) for j, b in enumerate(sec.blocks) if b.startswith("<p")
            ]
            for i, j in rng.sample(paragraphs, min(2, len(paragraphs))):
                copied[i].blocks[j] = _mutate_text(copied[i].blocks[j], rng)
            slug = f"{original.slug}-print" if rng.random() < 0.5 else f"{original.slug}-v2"
            if f"{original.topic}/{slug}" in used_slugs:
                slug = f"{slug}-{index}"
            specs.append(
                PageSpec(
                    index,
                    original.topic,
                    original.title,
                    slug,
                    original.lead,
                    copied,
                    duplicate_of=original.index,
                )
            )
            used_slugs.add(f"{original.topic}/{slug}")
            continue
        topic = rng.choices(topics, weights=[len(topic_pools[t]) for t in topics])[0]
        neighbours = rng.sample([t for t in topics if t != topic], min(2, len(topics) - 1))
        pool = topic_pools[topic] + [ps for t in neighbours for ps in topic_pools[t]]
        chosen: list[tuple[SourcePage, Section]] = []
        for _attempt in range(MAX_PLAN_ATTEMPTS):
            first = rng.choice(topic_pools[topic])
            rest = [ps for ps in pool if ps is not first]
            chosen = [first] + rng.sample(rest, min(len(rest), rng.randint(2, 7)))
            keys = frozenset((p.title, sec.heading) for p, sec in chosen)
            if all(len(keys & other) / len(keys | other) < MAX_SECTION_OVERLAP for other in section_sets):
                break
        section_sets.append(frozenset((p.title, sec.heading) for p, sec in chosen))
        sections: list[Section] = []
        for _page, section in chosen:
            blocks = [b for k, b in enumerate(section.blocks) if k == 0 or rng.random() > 0.2]
            if rng.random() < 0.35:
                donor = rng.choice(topic_pools[topic])[1]
                extra = [b for b in donor.blocks if b.startswith("<p")]
                if extra:
                    blocks.insert(rng.randrange(1, len(blocks) + 1), rng.choice(extra))
            sections.append(Section(section.heading, blocks))
        primary_page, primary_section = chosen[0]
        heading = primary_section.heading
        title = rng.choice(TITLE_PATTERNS).format(
            heading=heading,
            page=primary_page.title,
            topic=TOPIC_NAMES.get(topic, topic.title()),
        )
        slug = _slugify(title)
        if f"{topic}/{slug}" in used_slugs:
            slug = f"{_slugify(title, 52)}-{index}"
        used_slugs.add(f"{topic}/{slug}")
        lead = primary_page.lead if rng.random() < 0.6 else rng.choice(by_topic[topic]).lead
        specs.append(PageSpec(index, topic, title, slug, lead, sections))
    return specs


def _href(from_path: str, to_path: str) -> str:
    """Relative link between two corpus paths of the form ``topic/page.html`` or ``page.html``."""
    prefix = "../" * from_path.count("/")
    return prefix + to_path


def _link_list(items: list[tuple[str, str]], cls: str = "") -> str:
    """``<ul>`` of links given as (href, text) pairs."""
    attr = f' class="{cls}"' if cls else ""
    lines = "".join(f'<li><a href="{html.escape(h)}">{html.escape(t)}</a></li>' for h, t in items)
    return f"<ul{attr}>{lines}</ul>"


def _css(rng: random.Random) -> str:
    """A few kilobytes of plausible inline CSS."""
    selectors = (
        "header",
        "nav",
        "footer",
        ".sidebar",
        ".toc",
        ".menu",
        ".btn",
        ".card",
        ".admonition",
        ".navbar",
        ".breadcrumbs",
        ".cookie-banner",
        ".search",
        ".pagination",
        ".tabs",
        ".badge",
        "pre",
        "code",
        "table",
        "th",
        "td",
        "blockquote",
        ".hero",
        ".grid",
        ".col",
    )
    rules = []
    for _ in range(rng.randint(60, 160)):
        sel = rng.choice(selectors) + rng.choice(("", ":hover", " a", " li", " > ul", ".is-active", " .icon"))
        colour = f"#{rng.randrange(0x1000000):06x}"
        rules.append(
            f"{sel}{{color:{colour};margin:{rng.randint(0, 24)}px {rng.randint(0, 32)}px;"
            f"padding:{rng.randint(0, 16)}px;font-size:{rng.choice((12, 13, 14, 15, 16, 18))}px;"
            f"border-radius:{rng.randint(0, 8)}px}}"
        )
    return "<style>" + "".join(rules) + "</style>"


def _svg_icon(rng: random.Random) -> str:
    """A small inline SVG icon, as docs sites sprinkle through their chrome."""
    points = " ".join(f"{rng.randint(0, 24)},{rng.randint(0, 24)}" for _ in range(rng.randint(4, 10)))
    return (
        f'<svg class="icon" viewBox="0 0 24 24" width="16" height="16" aria-hidden="true">'
        f'<path d="M{points}Z" fill="currentColor"/></svg>'
    )


def _scripts(rng: random.Random, spec: PageSpec, pad_to: int) -> str:
    """Analytics snippet plus a JSON bootstrap blob padded to about ``pad_to`` characters."""
    analytics = (
        "<script>(function(w,d,s,l){w[l]=w[l]||[];w[l].push({'event':'docs.view','ts':Date.now()});"
        "var f=d.getElementsByTagName(s)[0],j=d.createElement(s);j.async=true;"
        f"j.src='https://example.com/analytics.js?id=DOC-{rng.randrange(10**6):06d}';"
        "f.parentNode.insertBefore(j,f);})(window,document,'script','dataLayer');</script>"
    )
    data: dict[str, object] = {
        "page": {"id": spec.index, "slug": spec.slug, "topic": spec.topic, "locale": "en-US"},
        "build": {
            "version": f"{rng.randint(1, 9)}.{rng.randint(0, 40)}.{rng.randint(0, 9)}",
            "commit": f"{rng.getrandbits(160):040x}",
        },
        "features": {k: rng.random() < 0.5 for k in ("search", "feedback", "darkMode", "copyButtons", "versions")},
        "i18n": {},
    }
    strings: dict[str, str] = data["i18n"]  # type: ignore[assignment]
    words = (
        "search",
        "results",
        "copy",
        "copied",
        "next",
        "previous",
        "edit",
        "page",
        "theme",
        "close",
        "menu",
        "version",
        "language",
        "feedback",
        "helpful",
        "yes",
        "no",
        "skip",
        "content",
        "toggle",
    )
    size = len(analytics) + 120 + len(json.dumps(data, separators=(",", ":")))
    while size < pad_to:
        key = ".".join(rng.choice(words) for _ in range(3)) + f".{len(strings)}"
        strings[key] = " ".join(rng.choice(words) for _ in range(rng.randint(2, 9))).capitalize()
        size += len(key) + len(strings[key]) + 6
    blob = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    return f'{analytics}<script id="__DOCS_DATA__" type="application/json">{blob}</script>'


def _article_html(spec: PageSpec, specs: list[PageSpec], rng: random.Random) -> tuple[str, list[tuple[str, str]]]:
    """The article body (h1, lead, sections) and its table of contents entries."""
    toc: list[tuple[str, str]] = []
    parts = [f"<h1>{html.escape(spec.title)}</h1>", spec.lead]
    for section in spec.sections:
        anchor = _slugify(section.heading, 40)
        toc.append((f"#{anchor}", section.heading))
        parts.append(f'<h2 id="{anchor}">{html.escape(section.heading)}</h2>')
        parts.extend(section.blocks)
    body = "\n".join(parts)

    def relink(_: re.Match[str]) -> str:
        return f'href="{_href(spec.path, rng.choice(specs).path)}"'

    return re.sub(r'href="#LINK"', relink, body), toc


def _render(spec: PageSpec, specs: list[PageSpec], theme: str, target: int, rng: random.Random) -> str:
    """Full HTML page for ``spec`` in ``theme``, padded towards ``target`` bytes."""
    product = rng.choice(PRODUCT_NAMES)
    topic_name = TOPIC_NAMES.get(spec.topic, spec.topic.title())
    article, toc = _article_html(spec, specs, rng)
    here = spec.path
    siblings = [s for s in specs if s.topic == spec.topic and s.index != spec.index]
    side = rng.sample(siblings, min(len(siblings), rng.randint(20, 45)))
    side_links = [(_href(here, s.path), s.title) for s in side]
    menu_html = []
    for group, names in MENU_GROUPS.items():
        links = [
            (
                _href(here, rng.choice(specs).path)
                if rng.random() < 0.4
                else f"https://example.com/{_slugify(group)}/{_slugify(n)}",
                n,
            )
            for n in names
        ]
        menu_html.append(
            f'<li class="menu-group"><button aria-expanded="false">{group}{_svg_icon(rng)}</button>'
            f"{_link_list(links, 'dropdown')}</li>"
        )
    menu = f'<ul class="mega-menu">{"".join(menu_html)}</ul>'
    footer_cols = "".join(
        f'<div class="footer-col"><h4>{g}</h4>'
        f"{_link_list([(f'https://example.com/{_slugify(g)}/{_slugify(n)}', n) for n in names[:8]])}</div>"
        for g, names in MENU_GROUPS.items()
    )
    year = 2020 + rng.randint(0, 5)
    legal = (
        f'<p class="legal">&copy; {year} {product}, Inc. All rights reserved. '
        f"{product} and the {product} logo are trademarks of their respective owners.</p>"
    )
    cookie = (
        '<div class="cookie-banner" role="dialog" aria-label="Cookie consent">'
        f"<p>{rng.choice(COOKIE_TEXTS)}</p>"
        '<button class="btn">Accept all</button><button class="btn">Reject optional</button>'
        '<a href="https://example.com/legal/cookies">Cookie settings</a></div>'
    )
    crumbs_items = [
        (_href(here, "index.html"), "Docs"),
        (_href(here, f"index.html#{spec.topic}"), topic_name),
    ]
    crumbs = " / ".join(f'<a href="{h}">{html.escape(t)}</a>' for h, t in crumbs_items)
    crumbs += f' / <span aria-current="page">{html.escape(spec.title)}</span>'
    toc_html = _link_list(toc, "toc-list")
    feedback = (
        '<div class="feedback"><p>Was this page helpful?</p><button>Yes</button><button>No</button>'
        '<a href="https://example.com/docs/feedback">Provide detailed feedback</a></div>'
    )
    neighbours = rng.sample(specs, 2)
    prev_next = (
        f'<a class="prev" href="{_href(here, neighbours[0].path)}">Previous:'
        f" {html.escape(neighbours[0].title)}</a>"
        f'<a class="next" href="{_href(here, neighbours[1].path)}">Next:'
        f" {html.escape(neighbours[1].title)}</a>"
    )
    search = (
        '<form class="search" role="search" action="https://example.com/search">'
        f'<input type="search" name="q" placeholder="Search {product} docs">{_svg_icon(rng)}</form>'
    )
    head = (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(spec.title)} | {product} Documentation</title>"
        f'<meta name="description" content="{html.escape(topic_name)} documentation for {product}.">'
        f'<link rel="canonical" href="https://docs.example.com/{here}">'
        f'<link rel="stylesheet" href="https://example.com/static/docs.{rng.getrandbits(32):08x}.css">'
        f"{_css(rng)}</head>"
    )

    if theme == "portal":
        body = (
            f'<body><a class="skip" href="#content">Skip to content</a>'
            '<header class="topbar">'
            f'<a class="logo" href="{_href(here, "index.html")}">{_svg_icon(rng)}{product} Docs</a>'
            f'{search}<nav class="primary" aria-label="Primary">{menu}</nav></header>'
            f'<div class="layout"><aside class="sidebar"><nav aria-label="{topic_name}"><h3>{topic_name}</h3>'
            f"{_link_list(side_links, 'tree')}</nav></aside>"
            f'<main id="content"><nav class="breadcrumbs" aria-label="Breadcrumb">{crumbs}</nav>'
            f'<article class="doc">{article}</article>{feedback}<nav class="pager">{prev_next}</nav></main>'
            f'<aside class="toc"><h3>On this page</h3>{toc_html}</aside></div>'
            '<footer class="site-footer">'
            f'<div class="footer-grid">{footer_cols}</div>{legal}</footer>{cookie}'
        )
    elif theme == "sphinx":
        body = (
            '<body><div class="related" role="navigation" aria-label="related navigation">'
            "<h3>Navigation</h3>"
            f'<ul><li><a href="{_href(here, "index.html")}">index</a></li>'
            f'<li><a href="{_href(here, neighbours[1].path)}">next</a></li>'
            f'<li><a href="{_href(here, neighbours[0].path)}">previous</a></li>'
            f'<li><a href="{_href(here, "index.html")}">{product} documentation</a> &raquo;</li></ul></div>'
            f'<div class="document"><div class="documentwrapper"><div class="bodywrapper">'
            '<div class="body" role="main">'
            f'<section id="{_slugify(spec.title, 40)}">{article}</section></div>'
            f'</div></div><div class="sphinxsidebar" role="navigation" aria-label="main navigation">'
            f'<div class="sphinxsidebarwrapper"><h3>Table of Contents</h3>{toc_html}'
            f'<h3>{topic_name}</h3>{_link_list(side_links)}<div id="searchbox" role="search">{search}</div>'
            f'<h3>Site</h3>{menu}</div></div><div class="clearer"></div></div>'
            f'<div class="footer" role="contentinfo">{footer_cols}{legal}'
            f"Created using a documentation generator.</div>{cookie}"
        )
    elif theme == "mkdocs":
        body = (
            f'<body dir="ltr"><header class="md-header" data-md-component="header">'
            f'<nav class="md-header__inner md-grid" aria-label="Header">'
            f'<a class="md-header__button md-logo" href="{_href(here, "index.html")}">{_svg_icon(rng)}</a>'
            f'<div class="md-header__title">{product} Docs</div>{search}</nav></header>'
            f'<div class="md-container"><nav class="md-tabs" aria-label="Tabs">{menu}</nav>'
            f'<main class="md-main"><div class="md-main__inner md-grid">'
            '<div class="md-sidebar md-sidebar--primary">'
            '<nav class="md-nav md-nav--primary" aria-label="Navigation">'
            f'<label class="md-nav__title">{topic_name}</label>{_link_list(side_links, "md-nav__list")}</nav>'
            "</div>"
            '<div class="md-sidebar md-sidebar--secondary">'
            '<nav class="md-nav md-nav--secondary" aria-label="On this page">'
            f'<label class="md-nav__title">On this page</label>{toc_html}</nav></div>'
            '<div class="md-content" data-md-component="content">'
            '<article class="md-content__inner md-typeset">'
            f"{article}</article>{feedback}</div></div></main>"
            f'<footer class="md-footer"><nav class="md-footer__inner" aria-label="Footer">{prev_next}</nav>'
            f'<div class="md-footer-meta">{footer_cols}{legal}</div></footer></div>{cookie}'
        )
    else:
        body = (
            f'<body class="navigation-with-keyboard"><div id="__docusaurus">'
            '<div role="region" aria-label="Skip to main content">'
            '<a class="skipToContent" href="#__docusaurus_skipToContent_fallback">'
            "Skip to main content</a></div>"
            f'<nav aria-label="Main" class="navbar navbar--fixed-top"><div class="navbar__inner">'
            f'<a class="navbar__brand" href="{_href(here, "index.html")}">{_svg_icon(rng)}<b>{product}</b>'
            "</a>"
            f"{menu}{search}</div></nav>"
            f'<div id="__docusaurus_skipToContent_fallback" class="main-wrapper"><div class="docsWrapper">'
            '<aside class="theme-doc-sidebar-container">'
            '<nav aria-label="Docs sidebar" class="menu thin-scrollbar">'
            f"{_link_list(side_links, 'theme-doc-sidebar-menu menu__list')}</nav></aside>"
            '<main class="docMainContainer"><div class="container">'
            '<div class="row"><div class="col docItemCol">'
            f'<nav class="theme-doc-breadcrumbs" aria-label="Breadcrumbs">{crumbs}</nav>'
            f'<div class="theme-doc-markdown markdown">{article}</div>'
            '<footer class="theme-doc-footer">'
            f'<a href="https://example.com/edit/{spec.path}">Edit this page</a>'
            f"<span>Last updated on {year}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}</span></footer>"
            f'<nav class="pagination-nav" aria-label="Docs pages">{prev_next}</nav></div>'
            f'<div class="col col--3"><div class="tableOfContents">{toc_html}</div></div></div></div></main>'
            '</div></div><footer class="footer footer--dark">'
            f'<div class="container">{footer_cols}{legal}</div>'
            f"</footer></div>{cookie}"
        )
    page = head + body
    page_bytes = len(page.encode("utf-8"))
    scripts = _scripts(rng, spec, max(0, target - page_bytes - 40))
    return f"{page}{scripts}</body></html>\n"


def _trim_to_limit(spec: PageSpec) -> PageSpec:
    """Copy of ``spec`` with its last section removed (used when a page grows past the size limit)."""
    return PageSpec(spec.index, spec.topic, spec.title, spec.slug, spec.lead, spec.sections[:-1], spec.duplicate_of)


def _index_page(specs: list[PageSpec]) -> str:
    """A plain index linking every generated page, so the corpus can be crawled from its root."""
    items = "".join(f'<li><a href="{s.path}">{html.escape(s.title)}</a></li>' for s in specs)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>Benchmark corpus</title></head>'
        f"<body><main><h1>Benchmark corpus</h1><ul>{items}</ul></main></body></html>\n"
    )


def build_corpus(out_dir: Path, n_pages: int = 320, seed: int = 0) -> list[Path]:
    """Write ``n_pages`` synthetic documentation pages under ``out_dir`` and return their paths.

    Pages land in ``out_dir/<topic>/<slug>.html``, 20 to 80 KB each; ``out_dir/index.html`` links
    them all. About 5% are near-duplicates of earlier pages (slugs ending in ``-print`` or
    ``-v2``). The same ``n_pages`` and ``seed`` always give byte-identical files. Existing files in
    ``out_dir`` are overwritten but never deleted, so use a fresh folder when ``n_pages`` changes.
    """
    if n_pages < 1:
        raise ValueError("n_pages must be at least 1")
    rng = random.Random(seed)
    sources = load_sources()
    specs = _plan_pages(sources, n_pages, rng)
    out_dir = Path(out_dir)
    written: list[Path] = []
    for spec in specs:
        theme = THEMES[rng.randrange(len(THEMES))]
        target = rng.randint(MIN_BYTES + 2048, MAX_BYTES - 4096)
        page_rng = random.Random(rng.getrandbits(64))
        state = page_rng.getstate()
        page = _render(spec, specs, theme, target, page_rng)
        while len(page.encode("utf-8")) > MAX_BYTES and len(spec.sections) > 1:
            spec = _trim_to_limit(spec)
            page_rng.setstate(state)
            page = _render(spec, specs, theme, target, page_rng)
        path = out_dir / spec.path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(page, encoding="utf-8")
        written.append(path)
    (out_dir / "index.html").write_text(_index_page(specs), encoding="utf-8")
    return written


def main(argv: list[str]) -> int:
    """Command line: ``corpus.py OUT_DIR [N_PAGES] [SEED]``."""
    if not argv or len(argv) > 3:
        print(USAGE, file=sys.stderr)  # noqa: T201 - usage
        return 2
    out_dir = Path(argv[0])
    n_pages = int(argv[1]) if len(argv) > 1 else 320
    seed = int(argv[2]) if len(argv) > 2 else 0
    pages = build_corpus(out_dir, n_pages=n_pages, seed=seed)
    sizes = [p.stat().st_size for p in pages]
    print(  # noqa: T201 - the summary is this command's output
        f"{len(pages)} pages in {out_dir}, mean {sum(sizes) / len(sizes) / 1024:.1f} KB, "
        f"min {min(sizes) / 1024:.1f} KB, max {max(sizes) / 1024:.1f} KB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
