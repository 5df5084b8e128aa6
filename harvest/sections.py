"""Split an extracted Markdown page into sections by heading, and long sections into chunks.

A section is the text under one heading (levels 1..``min_heading_level`` start a new one; deeper
headings stay inside). Headings are found by a real Markdown parser (markdown-it-py, CommonMark
plus tables) over the page's text after ``repair_fences``: a code block's ``# comment`` is never
a heading, an inline span such as ```` ```cmd``` ```` is never a fence, an opening fence glued to
the end of a line of text (trafilatura, a code block inside a list item) starts its block on a
line of its own, and a fence that is never closed is closed at the end of its own block (the
next blank line) instead of swallowing the rest of the page.

A chunk is a piece of a long section that fits the token budget; chunks are cut on block,
sentence or line boundaries and consecutive chunks share ``overlap_tokens``. ``prose_only`` keeps
the paragraphs of a text and drops lists, tables, code and headings, which is what readability
formulas can be trusted on.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache, partial
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from harvest.extract import Document

log = logging.getLogger(__name__)

KINDS = ("prose", "list", "table", "code", "mixed")
DOMINANT_SHARE = 0.6  # a kind covering at least this share of the characters names the section

# a fence: three or more backticks (with no backtick after them on the line, CommonMark's rule:
# ```cmd``` is an inline span) or tildes
_FENCE = re.compile(r"^\s*(`{3,}(?=[^`]*$)|~{3,})")
_GLUED_FENCE = re.compile(r"^(?P<text>.*[^\s`])[ \t]*(?P<fence>`{3,})(?P<info>[\w+-]*)[ \t]*$")
_ESCAPE = re.compile(r"\\([!-/:-@\[-`{-~])")  # a backslash before ASCII punctuation (CommonMark)
_CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")
_BLOCK_START_ESCAPE = re.compile(r"^([ \t]*(?:\d{1,9})?)\\([#>*+=|`~.)-])")
_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$")
_LIST_ITEM = re.compile(r"^\s*(?:[-*+]|\d{1,3}[.)])[ \t]+\S")
_TABLE_ROW = re.compile(r"^\s*\|.*\|\s*$")
_TABLE_SEPARATOR = re.compile(r"^\s*\|?\s*:?-{2,}:?\s*(\|\s*:?-{2,}:?\s*)*\|?\s*$")
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[`*_]*[A-Z0-9])")
_TERMINAL = re.compile(r"[.!?][\"')\]]*$")
_INLINE_MARKUP = re.compile(r"\*\*|__|`")
_WORDS = re.compile(r"\w+")


@dataclass
class Section:
    """The text under one heading (or one chunk of it, ``part`` > 0 for later chunks)."""

    heading: str  # heading path, "Parent > Child"
    level: int  # 0 for text before the first heading
    text: str  # Markdown body, without the heading line
    index: int  # position of the section in its page, shared by the section's chunks
    page_title: str
    kind: str  # prose | list | table | code | mixed
    part: int = 0  # chunk number inside the section

    @property
    def topic(self) -> str:
        """The section's own heading (the last element of the path)."""
        return self.heading.rsplit(" > ", 1)[-1].strip()


@dataclass(frozen=True)
class Block:
    """A run of Markdown lines of one kind: prose, list, table, code or heading."""

    kind: str
    text: str


# --------------------------------------------------------------------------- Markdown blocks


def _line_kind(line: str) -> str:
    # each regex runs only on lines with what it needs: "#" first, a "|", a list marker first
    if line[:1] == "#" and _HEADING.match(line):
        return "heading"
    if "|" in line and _TABLE_ROW.match(line):
        return "table"
    lead = line.lstrip()[:1]
    if lead and (lead in "-*+" or lead.isdecimal()) and _LIST_ITEM.match(line):
        return "list"
    return "prose"


def _fence(line: str) -> re.Match[str] | None:
    """``_FENCE.match``, tried only on lines with a fence's three backticks or tildes."""
    return _FENCE.match(line) if "```" in line or "~~~" in line else None


def _closes(line: str, fence: str) -> bool:
    """Does ``line`` close a block opened by ``fence`` (same character, at least as long)?"""
    stripped = line.strip()
    return stripped.startswith(fence) and not stripped.strip(fence[0])


def repair_fences(text: str) -> str:
    """Fences as a Markdown parser must see them (see the module docstring).

    - ``text ```lang`` followed, later, by a line that closes it: the fence moves to a line of
      its own (trafilatura writes a list item's code block so);
    - a fence never closed: closed before the next blank line (or at the end).
    """
    if "```" not in text and "~~~" not in text:
        return text
    lines = text.split("\n")
    out: list[str] = []
    fence = ""
    for i, line in enumerate(lines):
        if fence:
            if _closes(line, fence):
                fence = ""
            elif not line.strip() and not any(_closes(rest, fence) for rest in lines[i + 1 :]):
                out.append(fence)  # a stray fence: its block ends here
                fence = ""
            out.append(line)
            continue
        opened = _fence(line)
        if opened is None and "```" in line:
            glued = _GLUED_FENCE.match(line)
            run = glued.group("fence") if glued else ""
            # an opening fence only if the line's other backtick runs are paired (inline spans)
            if glued and glued.group("text").count("`") % 2 == 0:
                if any(_closes(rest, run) for rest in lines[i + 1 :]):
                    out.append(glued.group("text").rstrip())
                    line = run + glued.group("info")
                    opened = _fence(line)
        if opened is not None:
            fence = opened.group(1)
        out.append(line)
    if fence:
        log.debug("unterminated code fence; closed at the end of the text")
        out.append(fence)
    return "\n".join(out)


def unescape_markdown(text: str) -> str:
    """Markdown backslash escapes resolved (``\\_`` -> ``_``, ``\\[!WARNING\\]`` -> ``[!WARNING]``)
    outside code blocks and code spans; an escape that keeps a line from starting a heading, list,
    quote or table (``\\#`` first on a line) stays."""
    if "\\" not in text:
        return text
    lines, fence = [], ""
    for line in text.split("\n"):
        if fence:
            if _closes(line, fence):
                fence = ""
        elif (opened := _fence(line)) is not None:
            fence = opened.group(1)
        elif "\\" in line:
            line = _unescape_line(line)
        lines.append(line)
    return "\n".join(lines)


def _unescape_line(line: str) -> str:
    head = ""
    start = _BLOCK_START_ESCAPE.match(line)
    if start:
        head, line = line[: start.end()], line[start.end() :]
    parts, last = [], 0
    for span in _CODE_SPAN.finditer(line):
        parts.append(_ESCAPE.sub(r"\1", line[last : span.start()]))
        parts.append(span.group(0))
        last = span.end()
    parts.append(_ESCAPE.sub(r"\1", line[last:]))
    return head + "".join(parts)


def parse_blocks(text: str) -> tuple[Block, ...]:
    """Split Markdown into blocks; fenced code is one block even with blank lines inside.

    Memoised (small LRU): a chunk's blocks are read by sections, gates and the chunker.
    """
    return _parse_blocks(text)


@lru_cache(maxsize=4096)
def _parse_blocks(text: str) -> tuple[Block, ...]:
    return tuple(iter_blocks(text))


def iter_blocks(text: str) -> Iterator[Block]:
    """``parse_blocks`` one block at a time (a block is final when it is yielded), so that a
    reader of the first blocks does not parse the rest."""
    kind, lines = "", list[str]()  # the open block
    fence = ""
    for line in text.splitlines():
        if fence:
            lines.append(line)
            if line.strip().startswith(fence) and line.strip().strip(fence[0]) == "":
                fence = ""
                yield Block(kind, "\n".join(lines))
                kind, lines = "", []
            continue
        match = _fence(line)
        if match:
            if lines:
                yield Block(kind, "\n".join(lines))
            fence, kind, lines = match.group(1), "code", [line]
            continue
        if not line.strip():
            if lines:
                yield Block(kind, "\n".join(lines))
            kind, lines = "", []
            continue
        line_kind = _line_kind(line)
        if line_kind == "prose" and kind == "list" and line[:1].isspace():
            line_kind = "list"  # an indented continuation of a list item
        if line_kind == "heading" or line_kind != kind:
            if lines:
                yield Block(kind, "\n".join(lines))
            lines = []
        kind = line_kind
        lines.append(line)
        if line_kind == "heading":
            yield Block(kind, "\n".join(lines))
            kind, lines = "", []
    if fence:
        log.debug("unterminated code fence; closing it at the end of the text")
    if lines:
        yield Block(kind, "\n".join(lines))


# ASCII bytes that are not word characters, mapped to a space (bytes.translate: a table lookup
# per byte, several times faster than str.translate with a dict)
_ASCII_NON_WORD = bytes(c if chr(c).isalnum() or chr(c) == "_" else 32 for c in range(256))


@lru_cache(maxsize=2048)
def lower_words(text: str) -> tuple[str, ...]:
    """Lowercased ``\\w+`` words of a text (memoised: gates, dedup and instructions read the same chunk)."""
    return tuple(word_runs(text.lower()))


def word_runs(text: str) -> list[str]:
    """The ``\\w+`` runs of a text; for ASCII text by translating its bytes to spaces and
    ``split`` (the same words: ASCII ``\\w`` is letters, digits and ``_``), about 2x as fast."""
    if text.isascii():
        return text.encode("ascii").translate(_ASCII_NON_WORD).decode("ascii").split()
    return _WORDS.findall(text)


def content_kind(text: str) -> str:
    """The dominant kind of content (by characters) of a Markdown text, or ``mixed``."""
    sizes = dict.fromkeys(("prose", "list", "table", "code"), 0)
    for block in parse_blocks(text):
        if block.kind in sizes:
            sizes[block.kind] += len(block.text)
    total = sum(sizes.values())
    if total == 0:
        return "prose"
    kind, size = max(sizes.items(), key=lambda kv: kv[1])
    return kind if size >= DOMINANT_SHARE * total else "mixed"


def prose_only(text: str, limit: int | None = None) -> str:
    """The paragraphs of ``text``: list items, table rows, fenced code and headings removed.

    Inline emphasis and code marks are dropped, blockquote marks stripped, and a paragraph
    without final punctuation (a caption, "Run this command:") gets a period so that it is
    not glued to the next sentence by a sentence splitter that only knows ``.!?``.

    ``limit``: stop once the result has at least that many characters (the result then starts
    like the full one, and is at least ``limit`` long exactly when the full one is).
    """
    paragraphs = []
    size = -2
    for block in parse_blocks(text) if limit is None else iter_blocks(text):
        if block.kind != "prose":
            continue
        para = " ".join(line.strip().lstrip(">").strip() for line in block.text.splitlines())
        para = _INLINE_MARKUP.sub("", para).strip()
        if not para:
            continue
        if not _TERMINAL.search(para):
            para = para.rstrip(":;,") + "."
        paragraphs.append(para)
        size += len(para) + 2
        if limit is not None and size >= limit:
            break
    return "\n\n".join(paragraphs)


def split_sentences(text: str) -> list[str]:
    """Sentences of a paragraph (on ``.!?`` followed by a capital or digit)."""
    flat = " ".join(text.split())
    return [s for s in _SENTENCE_END.split(flat) if s.strip()]


def count_sentences(prose: str, min_words: int = 3) -> int:
    """Number of sentences with at least ``min_words`` words."""
    # a sentence from split_sentences is single-spaced without leading or trailing space: its
    # words are its spaces plus one
    return sum(1 for para in prose.split("\n\n") for s in split_sentences(para) if s.count(" ") + 1 >= min_words)


# --------------------------------------------------------------------------- sections


def split_sections(doc: Document, min_heading_level: int) -> list[Section]:
    """Split a page's Markdown at headings of level 1..``min_heading_level``.

    Headings are those of the page's top level as markdown-it-py parses it (after
    ``repair_fences``); their text is the heading's inline text (escapes resolved, markup
    dropped). Text before the first heading becomes a level-0 section named after the page
    title; sections with no body (a heading directly followed by a sub-heading) are skipped.
    """
    if not 1 <= min_heading_level <= 6:
        raise ValueError(f"min_heading_level must be between 1 and 6, got {min_heading_level}")
    title = (doc.title or "").strip()
    text = repair_fences(doc.text)
    lines = text.split("\n")
    sections: list[Section] = []
    path: list[tuple[int, str]] = []  # (level, heading) of the open headings
    level, body_start = 0, 0

    def close(end: int) -> None:
        body = "\n".join(lines[body_start:end]).strip("\n")
        if body.strip():
            heading = " > ".join(h for _, h in path) or title
            sections.append(Section(heading, level, body, len(sections), title, content_kind(body)))

    for heading_level, first, last, heading_text in _headings(text):
        if heading_level > min_heading_level:
            continue
        close(first)
        level = heading_level
        while path and path[-1][0] >= level:
            path.pop()
        path.append((level, heading_text))
        body_start = last
    close(len(lines))
    return sections


@lru_cache(maxsize=1)
def _parser() -> Any:
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark").enable("table")


def _headings(text: str) -> list[tuple[int, int, int, str]]:
    """``(level, first line, line after, text)`` of the top-level headings of Markdown text."""
    tokens = _parser().parse(text)
    found = []
    for i, token in enumerate(tokens):
        if token.type == "heading_open" and token.level == 0 and token.map:
            inline = tokens[i + 1]
            words = "".join(
                child.content if child.type in ("text", "code_inline") else " "
                for child in inline.children or []
                if child.type in ("text", "code_inline", "softbreak", "hardbreak")
            )
            heading = " ".join(words.split())
            if heading:
                found.append((int(token.tag[1]), token.map[0], token.map[1], heading))
    return found


# --------------------------------------------------------------------------- chunks


@dataclass
class _Unit:
    """The smallest piece the chunker moves: a sentence, list item, table part or code part."""

    text: str
    sep: str  # what joins it to the previous unit: "\n\n" starts a block
    tokens: int


def count_all(count_tokens: Callable[[str], int], texts: Sequence[str]) -> list[int]:
    """The token counts of ``texts``: one batch call of the tokenizer when the counter has one
    (``TokenCounter.many``), else one call per text."""
    many = getattr(count_tokens, "many", None)
    return list(many(texts)) if callable(many) else [count_tokens(t) for t in texts]


def chunk_sections(
    sections: Sequence[Section], max_tokens: int, overlap_tokens: int, count_tokens: Callable[[str], int]
) -> list[Section]:
    """``chunk_section`` of each section, in order; the sections are counted in one batch."""
    counts = count_all(count_tokens, [s.text for s in sections])
    return [
        chunk
        for section, tokens in zip(sections, counts, strict=True)
        for chunk in chunk_section(section, max_tokens, overlap_tokens, count_tokens, tokens=tokens)
    ]


def chunk_section(
    section: Section,
    max_tokens: int,
    overlap_tokens: int,
    count_tokens: Callable[[str], int],
    tokens: int | None = None,
) -> list[Section]:
    """Split a section longer than ``max_tokens`` into chunks of at most ``max_tokens`` tokens.

    Chunks break between blocks, sentences, list items, table rows or code lines (words only
    as a last resort); each chunk after the first starts with the last units of the previous
    one, up to ``overlap_tokens`` (capped at half the budget so that chunks always advance).
    Every chunk keeps the section's heading and index; ``part`` numbers them. ``tokens``: the
    section's count when the caller has it.
    """
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be positive, got {max_tokens}")
    if (count_tokens(section.text) if tokens is None else tokens) <= max_tokens:
        return [section]
    overlap = max(0, min(overlap_tokens, max_tokens // 2))
    units = _units(section.text, max_tokens, count_tokens)
    texts = _pack(units, max_tokens, overlap, count_tokens)
    log.debug("section %r: %d chunks", section.heading, len(texts))
    return [replace(section, text=t, part=i, kind=content_kind(t)) for i, t in enumerate(texts)]


def _units(text: str, budget: int, count: Callable[[str], int]) -> list[_Unit]:
    pieces: list[tuple[str, str]] = []  # (text, what joins it to the previous piece)
    for block in parse_blocks(text):
        if block.kind == "prose":
            texts, sep = split_sentences(block.text), " "
        elif block.kind == "list":
            texts, sep = _list_items(block.text), "\n"
        elif block.kind == "table":
            texts, sep = _split_lines(block.text, budget, count, header_lines=_table_header(block.text)), "\n\n"
        elif block.kind == "code":
            texts, sep = _split_code(block.text, budget, count), "\n\n"
        else:
            texts, sep = [block.text], "\n\n"
        pieces += [(piece, "\n\n" if i == 0 else sep) for i, piece in enumerate(texts)]
    units: list[_Unit] = []
    for (piece, first_sep), tokens in zip(pieces, count_all(count, [p[0] for p in pieces]), strict=True):
        if tokens <= budget:
            units.append(_Unit(piece, first_sep, tokens))
            continue
        parts = _hard_split(piece, budget, count)
        for j, (part, part_tokens) in enumerate(zip(parts, count_all(count, parts), strict=True)):
            units.append(_Unit(part, first_sep if j == 0 else " ", part_tokens))
    return units


def _list_items(text: str) -> list[str]:
    items: list[str] = []
    for line in text.splitlines():
        if _LIST_ITEM.match(line) or not items:
            items.append(line)
        else:
            items[-1] += "\n" + line
    return items


def _table_header(text: str) -> int:
    lines = text.splitlines()
    return 2 if len(lines) > 2 and _TABLE_SEPARATOR.match(lines[1]) else 0


def _split_lines(
    text: str, budget: int, count: Callable[[str], int], header_lines: int = 0, wrap: tuple[str, str] = ("", "")
) -> list[str]:
    """Group lines into pieces within ``budget``, repeating a header and wrapping each piece."""
    if count(text) <= budget:
        return [text]
    lines = text.splitlines()
    header, body = lines[:header_lines], lines[header_lines:]
    fixed = count(wrap[0] + "\n".join(header) + wrap[1]) + len(header)
    room = max(1, budget - fixed - 1)
    pieces: list[str] = []
    current: list[str] = []
    used = fixed

    def render(group: list[str]) -> str:
        return wrap[0] + "\n".join(header + group) + wrap[1]

    for long_line in body:
        for line in _hard_split(long_line, room, count):  # a line alone over budget is cut
            cost = count(line) + 1  # the line and its newline
            if current and used + cost > budget:
                pieces.append(render(current))
                current, used = [], fixed
            current.append(line)
            used += cost
    if current:
        pieces.append(render(current))
    return pieces


def _split_code(text: str, budget: int, count: Callable[[str], int]) -> list[str]:
    if count(text) <= budget:
        return [text]
    lines = text.splitlines()
    opening = lines[0]
    match = _FENCE.match(opening)
    fence = match.group(1) if match else "```"
    closed = len(lines) > 1 and lines[-1].strip().startswith(fence)
    inner = "\n".join(lines[1:-1] if closed else lines[1:])
    return _split_lines(inner, budget, count, wrap=(opening + "\n", "\n" + fence))


def _hard_split(text: str, budget: int, count: Callable[[str], int]) -> list[str]:
    """Cut a piece still over budget into the longest word runs that fit (characters for a word
    that alone is over budget)."""
    if count(text) <= budget:
        return [text]
    words = text.split(" ")
    pieces: list[str] = []
    while words:
        n = _longest_fit(len(words), budget, count, partial(_first_words, words))
        if n == 0:
            word = words.pop(0)
            while word:
                m = max(1, _longest_fit(len(word), budget, count, partial(_first_chars, word)))
                pieces.append(word[:m])
                word = word[m:]
            continue
        pieces.append(" ".join(words[:n]))
        words = words[n:]
    return pieces


def _first_words(words: list[str], k: int) -> str:
    return " ".join(words[:k])


def _first_chars(word: str, k: int) -> str:
    return word[:k]


def _longest_fit(n: int, budget: int, count: Callable[[str], int], render: Callable[[int], str]) -> int:
    """The largest k in 0..n with count(render(k)) <= budget (binary search; counts grow with k)."""
    lo, hi = 0, n
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if count(render(mid)) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _join(units: list[_Unit]) -> str:
    return "".join((u.sep if i else "") + u.text for i, u in enumerate(units))


def _estimate(units: list[_Unit]) -> int:
    return sum(u.tokens for u in units) + sum(1 for u in units[1:] if "\n" in u.sep)


def _pack(units: list[_Unit], budget: int, overlap: int, count: Callable[[str], int]) -> list[str]:
    chunks: list[str] = []
    start = 0  # first unit not yet in any chunk
    carry: list[_Unit] = []  # overlap units from the previous chunk
    while start < len(units):
        current = list(carry)
        end = start
        while end < len(units) and (end == start or _estimate(current + [units[end]]) <= budget):
            current.append(units[end])
            end += 1
        # the estimate can be off for real tokenizers: verify, then give back units or overlap
        while count(_join(current)) > budget:
            if end - start > 1:
                current.pop()
                end -= 1
            elif len(current) > 1:
                current.pop(0)
            else:
                break  # a single unit always fits (see _hard_split)
        chunks.append(_join(current))
        carry = _tail(current[len(current) - (end - start) :], overlap) if end < len(units) else []
        start = end
    return chunks


def _tail(units: list[_Unit], overlap: int) -> list[_Unit]:
    """The last units whose tokens add up to at most ``overlap``, never all of them."""
    tail: list[_Unit] = []
    total = 0
    for unit in reversed(units[1:]):
        if total + unit.tokens > overlap:
            break
        tail.insert(0, unit)
        total += unit.tokens
    return tail
