"""Turn a fetched page (HTML or PDF) or a local file into a ``Document`` with Markdown text.

The title of an HTML page is the main text's first level-1 heading, else og:title, else the
page part of <title>, else the URL's last path segment.

HTML goes through trafilatura with Markdown output (headings, lists, tables, code blocks and
emphasis kept; images and comments dropped). ``deduplicate`` stays off: trafilatura's
dedup cache lives in the process, so its results would depend on the order pages arrive in;
Bastion deduplicates later, deterministically (``harvest.dedup``).

Before trafilatura sees a page, what site generators do to headings is undone (``_prepare``):
trafilatura drops elements whose ``id``/``class`` hold words such as "share", "comments" or
"email", and elements whose whole text is such a word, while generators give every heading (and
Sphinx every section) an id made from its text. Headings lose their ids and classes and their
permalink anchors ("¶"), sections their ids, and each heading's text is replaced by a
placeholder that is put back in the Markdown afterwards, so a heading survives whatever its
words. A ``<pre>`` without ``<code>`` (Sphinx, Pygments) gets one, so that it stays a code block.

Links are extracted as Markdown and then reduced to their text; the page keeps the link texts
(``Document.links``) for the navigation gate, which measures how much of a chunk is link text.
"""

from __future__ import annotations

import io
import logging
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import trafilatura
from trafilatura.metadata import examine_title_element
from trafilatura.utils import load_html

log = logging.getLogger(__name__)

HTML_TYPE, PDF_TYPE, MARKDOWN_TYPE, TEXT_TYPE = "text/html", "application/pdf", "text/markdown", "text/plain"
LOCAL_TYPES = {
    ".html": HTML_TYPE,
    ".htm": HTML_TYPE,
    ".md": MARKDOWN_TYPE,
    ".markdown": MARKDOWN_TYPE,
    ".txt": TEXT_TYPE,
    ".pdf": PDF_TYPE,
}

TRAFILATURA_OPTIONS: dict[str, Any] = {
    "output_format": "markdown",
    "include_formatting": True,  # headings, emphasis and code blocks as Markdown
    "include_tables": True,
    "include_comments": False,
    "include_links": True,  # reduced to their text by _strip_links; the link texts are kept
    "include_images": False,
    "deduplicate": False,  # process-wide cache: order-dependent results
}

# PDF running headers/footers: a line in the first/last few lines of a page, on most pages
_EDGE_LINES = 3
_REPEATED_SHARE = 0.6
_MIN_PAGES_FOR_EDGES = 3
_DIGITS = re.compile(r"\d+")
_OG_TITLE = "//meta[@property='og:title']/@content"
_HEAD_END = re.compile(r"</head\s*>", re.IGNORECASE)
_HEAD_END_BYTES = re.compile(rb"</head\s*>", re.IGNORECASE)


@dataclass
class Document:
    """One page's main text as Markdown, with where it came from."""

    url: str
    title: str
    text: str
    source: str
    content_type: str
    links: tuple[str, ...] = ()  # the text of each link of the main text, in order


_HEADING_TAGS = ("h1", "h2", "h3", "h4", "h5", "h6")
_PLACEHOLDER = "Bastionheading{:05d}x"
_PLACEHOLDER_RE = re.compile(r"Bastionheading(\d{5})x")
_MD_LINK = re.compile(r"(?<![!\\])\[((?:[^\[\]\n]|\[[^\[\]\n]*\])*)\]\((?:[^()\s]|\([^()\s]*\))*(?:\s+\"[^\"\n]*\")?\)")
_FENCE_LINE = re.compile(r"^\s*(`{3,}|~{3,})")


def _prepare(html: str | bytes) -> tuple[Any, list[str]] | None:
    """The page parsed, with headings protected from trafilatura's filters (see the module's
    docstring), and the heading texts in placeholder order; None when it does not parse."""
    tree = load_html(html)
    if tree is None:
        return None
    headings: list[str] = []
    for heading in tree.iter(*_HEADING_TAGS):
        for anchor in list(heading.iter("a")):
            if (anchor.get("href") or "").startswith("#") and not any(c.isalnum() for c in anchor.text_content()):
                anchor.drop_tree()  # a permalink ("¶", "#"): not part of the heading
        text = " ".join(heading.text_content().split())
        for name in ("id", "class"):
            heading.attrib.pop(name, None)
        if not text:
            continue
        for child in list(heading):
            heading.remove(child)
        heading.text = _PLACEHOLDER.format(len(headings))
        headings.append(text)
    for section in tree.iter("section"):
        section.attrib.pop("id", None)
    for div in tree.iter("div"):
        if div.get("id") and len(div) and div[0].tag in _HEADING_TAGS:
            div.attrib.pop("id")  # <div class="section" id="...">: older Sphinx
    for pre in tree.iter("pre"):
        if pre.find(".//code") is None:
            code = pre.makeelement("code", {})
            code.text, pre.text = pre.text, None
            for child in list(pre):
                code.append(child)
            pre.append(code)
    return tree, headings


def _restore_headings(text: str, headings: list[str]) -> str:
    def put_back(match: re.Match[str]) -> str:
        index = int(match.group(1))
        return headings[index] if index < len(headings) else match.group(0)

    return _PLACEHOLDER_RE.sub(put_back, text) if "Bastionheading" in text else text


def strip_links(text: str) -> tuple[str, tuple[str, ...]]:
    """Markdown links ``[text](url)`` reduced to their text, outside fenced code; and the link texts."""
    if "](" not in text:
        return text, ()
    links: list[str] = []

    def keep_text(match: re.Match[str]) -> str:
        links.append(match.group(1))
        return match.group(1)

    lines, fence = [], ""
    for line in text.split("\n"):
        opened = _FENCE_LINE.match(line)
        if fence:
            if opened and opened.group(1).startswith(fence) and not line.strip().strip(fence[0]):
                fence = ""
        elif opened and (opened.group(1)[0] == "~" or "`" not in line.strip()[len(opened.group(1)) :]):
            fence = opened.group(1)
        elif "](" in line:
            line = _MD_LINK.sub(keep_text, line)
        lines.append(line)
    return "\n".join(lines), tuple(links)


def extract_html(html: str | bytes, url: str, source: str) -> Document | None:
    """Main text of an HTML page as Markdown; None when trafilatura finds no main text (or no HTML).

    The page goes to trafilatura as text, not as a parsed tree: trafilatura deep-copies a tree it
    is given (over a tenth of its own time), and parses text itself. The page is parsed a second
    time only for a page whose main text has no level-1 heading (``_head_title``).
    """
    prepared = _prepare(html)
    text = trafilatura.extract(prepared[0], url=url, **TRAFILATURA_OPTIONS) if prepared else None
    if not text or not text.strip() or prepared is None:
        log.debug("%s: no main text (or not parseable as HTML)", url)
        return None
    text, links = strip_links(_restore_headings(text.strip(), prepared[1]))
    title = _markdown_title(text) or _head_title(html) or _title_from_url(url)
    return Document(url=url, title=title, text=text, source=source, content_type=HTML_TYPE, links=links)


def _head_title(html: str | bytes) -> str:
    """og:title, else the page part of <title> ("Page - Site" -> "Page", trafilatura's parsing).

    Used when the main text has no level-1 heading. trafilatura's full title heuristics
    (``extract_title``) are not used: their class*="title" XPaths pick up documentation chrome
    such as a "Keyboard shortcuts" dialog. Only the page's ``<head>`` is parsed (a tenth of a
    typical page); the whole page only when its head names no title.
    """
    head = _head_part(html)
    title = _title_in(head)
    return title if title or head is html else _title_in(html)


def _head_part(html: str | bytes) -> str | bytes:
    """The page up to the end of its ``<head>``, closed with an empty body; the page if none."""
    if isinstance(html, bytes):
        end = _HEAD_END_BYTES.search(html)
        return html[: end.end()] + b"<body></body></html>" if end else html
    found = _HEAD_END.search(html)
    return html[: found.end()] + "<body></body></html>" if found else html


def _title_in(html: str | bytes) -> str:
    try:
        tree = load_html(html)
        if tree is None:
            return ""
        og = tree.xpath(_OG_TITLE)
        if og and str(og[0]).strip():
            return " ".join(str(og[0]).split())
        full, first, _second = examine_title_element(tree)
        return " ".join((first or full or "").split())
    except Exception:  # noqa: BLE001 - a broken head must not lose the page
        log.debug("title extraction failed", exc_info=True)
        return ""


def _title_from_url(url: str) -> str:
    path = unquote(urlsplit(url).path).rstrip("/")
    stem = path.rsplit("/", 1)[-1].rsplit(".", 1)[0] if path else urlsplit(url).netloc
    return re.sub(r"[-_]+", " ", stem).strip()


def extract_pdf(data: bytes, url: str, source: str) -> Document | None:
    """Text of a PDF, page by page, with running headers/footers removed; None if no text."""
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        pages = [(page.extract_text() or "") for page in reader.pages]
        meta_title = (reader.metadata.title if reader.metadata else None) or ""
    except (PdfReadError, ValueError, KeyError, TypeError, AttributeError, IndexError, OSError) as exc:
        log.warning("%s: unreadable PDF (%s: %s)", url, type(exc).__name__, exc)
        return None
    pages = strip_running_lines(pages)
    text = "\n\n".join(p.strip() for p in pages if p.strip())
    if not text:
        log.debug("%s: PDF without extractable text", url)
        return None
    title = " ".join(str(meta_title).split()) or _first_line(text) or _title_from_url(url)
    return Document(url=url, title=title, text=text, source=source, content_type=PDF_TYPE)


def strip_running_lines(pages: list[str]) -> list[str]:
    """Remove lines near the top or bottom of pages that repeat on most pages (digits ignored)."""
    if len(pages) < _MIN_PAGES_FOR_EDGES:
        return pages
    split = [p.splitlines() for p in pages]
    seen: Counter[str] = Counter()
    for lines in split:
        seen.update({_edge_key(line) for line in _edges(lines) if line.strip()})
    repeated = {k for k, n in seen.items() if n >= _REPEATED_SHARE * len(pages)}
    if not repeated:
        return pages
    out = []
    for lines in split:
        edge_ids = {id(line) for line in _edges(lines)}
        out.append("\n".join(ln for ln in lines if not (id(ln) in edge_ids and _edge_key(ln) in repeated)))
    return out


def _edges(lines: list[str]) -> list[str]:
    nonblank = [ln for ln in lines if ln.strip()]
    return nonblank[:_EDGE_LINES] + nonblank[-_EDGE_LINES:]


def _edge_key(line: str) -> str:
    return _DIGITS.sub("#", " ".join(line.split()).lower())


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return " ".join(line.split())[:120]
    return ""


def is_hidden(name: str) -> bool:
    """A hidden file or folder name ('.git', '.env', '.ssh'); '.' and '..' are not names."""
    return name.startswith(".") and name not in (".", "..")


def list_local_files(root: Path, include: Sequence[str], *, allow_pdf: bool = False) -> list[Path]:
    """The documentation files a local source reads, sorted: ``root`` itself when it is a file,
    else the files under it matching any ``include`` glob.

    Never listed: hidden files and files inside hidden folders (any name under ``root`` starting
    with '.': ``.git``, ``.env``, ``.aws``...), types harvest does not read (``LOCAL_TYPES``),
    PDFs unless ``allow_pdf``, and files whose real location is outside ``root`` (a symbolic
    link out of it). Patterns that are absolute or climb out with '..' match nothing.
    """
    root = Path(root)
    if root.is_file():
        return [root] if _readable_type(root, allow_pdf) and not is_hidden(root.name) else []
    real_root = root.resolve()
    found: set[Path] = set()
    for pattern in include:
        if Path(pattern).is_absolute() or ".." in Path(pattern).parts:
            log.warning("%s: include pattern %r skipped (absolute or climbing out with '..')", root, pattern)
            continue
        try:
            matches = list(root.glob(pattern))
        except (ValueError, NotImplementedError, OSError) as exc:
            log.warning("%s: include pattern %r skipped (%s)", root, pattern, exc)
            continue
        for path in matches:
            relative = path.relative_to(root).parts
            if any(is_hidden(part) for part in relative) or not _readable_type(path, allow_pdf):
                continue
            try:
                if path.is_file() and path.resolve().is_relative_to(real_root):
                    found.add(path)
            except (OSError, RuntimeError):
                continue
    return sorted(found)


def _readable_type(path: Path, allow_pdf: bool) -> bool:
    content_type = LOCAL_TYPES.get(path.suffix.lower())
    return content_type is not None and (allow_pdf or content_type != PDF_TYPE)


def read_local_file(path: Path, source: str) -> Document | None:
    """A local .html/.htm/.md/.txt/.pdf file as a Document; None for other types, hidden files
    ('.env', ...) or no text."""
    if is_hidden(path.name):
        log.warning("%s: skipped (a hidden file is never read)", path)
        return None
    content_type = LOCAL_TYPES.get(path.suffix.lower())
    if content_type is None:
        log.debug("%s: skipped (not one of %s)", path, ", ".join(sorted(LOCAL_TYPES)))
        return None
    url = path.resolve().as_uri()
    data = path.read_bytes()
    if content_type == PDF_TYPE:
        return extract_pdf(data, url, source)
    if content_type == HTML_TYPE:
        return extract_html(data, url, source)
    text = data.decode("utf-8", errors="replace").replace("\r\n", "\n").replace("\r", "\n").strip()
    if not text:
        return None
    links: tuple[str, ...] = ()
    if content_type == MARKDOWN_TYPE:
        text, links = strip_links(text)
    title = _markdown_title(text) if content_type == MARKDOWN_TYPE else ""
    return Document(
        url=url,
        title=title or path.stem.replace("_", " ").replace("-", " "),
        text=text,
        source=source,
        content_type=content_type,
        links=links,
    )


def _markdown_title(text: str) -> str:
    """The first level-1 heading of Markdown text, outside code blocks."""
    in_code = False
    for line in text.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            in_code = not in_code
        elif not in_code and line.startswith("# "):
            return " ".join(line[2:].strip().strip("#").split())
    return ""
