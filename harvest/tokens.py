"""Exact token counts of a Hugging Face tokenizer, fast enough to call per sentence.

The chunker asks for many counts per page (sections, sentences, candidate chunks), and
``len(tokenizer(text)["input_ids"])`` costs ~0.25 ms per KB of text (the Rust encoder builds a
full ``Encoding`` with offsets, and the Python wrapper a ``BatchEncoding``): more than the rest
of the per-page harvest work together.

For a byte-level BPE tokenizer such as Llama 3's (no normalizer; pre-tokenizer = one regex
``Split`` with ``Isolated`` behaviour, then ``ByteLevel`` without its own regex; a ``BPE`` model
without dropout or byte fallback) a count decomposes exactly: the regex cuts the text into
pieces, BPE encodes every piece on its own, so ``count(text) = sum(count(piece))``.
``TokenCounter`` cuts the text with the tokenizer's own pattern and adds up per-piece counts
from a cache that the tokenizer's own BPE model fills (``model.tokenize``): repeated pieces
(words, punctuation, indentation) cost one dict lookup.

Why the counts are the tokenizer's own:

- ASCII text is cut by Python's ``re`` with the pattern's ``\\p{L}``, ``\\p{N}`` and ``\\s``
  spelled out for ASCII (``A-Za-z``, ``0-9``, ``[\\t\\n\\v\\f\\r ]``, which is what Oniguruma
  matches there; Python's own ``\\s`` would also match ``\\x1c``-``\\x1f``).
- Other text is cut by the ``regex`` module with the pattern as written. Its Unicode tables can
  be newer than the tokenizer's Oniguruma: the two were compared piece by piece on every code
  point that Python's ``unicodedata`` knows, and agree; a text with a code point unassigned
  there (or a lone surrogate) is counted by the tokenizer itself.
- A text containing an added token's content (``<|eot_id|>``...) is counted by the tokenizer
  itself, which matches added tokens before pre-tokenization.
- A pattern that leaves gaps between matches (``Isolated`` keeps them as pieces) is detected
  per text and counted by the tokenizer itself.

``tests/test_harvest_exactness.py`` compares the counts with the tokenizer's on ASCII,
multilingual and random text, and the pre-tokenization on every code point. Any other
tokenizer (SentencePiece, WordPiece, a normalizer, a slow Python tokenizer) is counted by the
tokenizer itself, with the whole-text cache.

Counts are cached per whole text too (bounded): the chunker asks for the same text more than
once (a section, then its first unit), and a section repeated across a site's pages is counted
once.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import unicodedata
from collections.abc import Callable
from functools import cache
from typing import Any

from harvest.memo import Memo

log = logging.getLogger(__name__)

PIECE_CACHE_SIZE = 1 << 18  # distinct pre-tokenizer pieces kept (cleared when full)
TEXT_CACHE_SIZE = 1 << 12  # whole texts kept (the chunker counts the same text several times)

_ASCII_SPACE = r"\t\n\x0b\x0c\r "  # Oniguruma's \s in ASCII: White_Space, not \x1c-\x1f


def _bytes_to_unicode() -> list[str]:
    """GPT-2's byte -> printable character table used by the ByteLevel pre-tokenizer."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table: dict[int, str] = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return [table[b] for b in range(256)]


_BYTE_CHARS = _bytes_to_unicode()


def ascii_pattern(pattern: str) -> str | None:
    """The pre-tokenizer pattern for ASCII-only text, in Python ``re`` syntax; None if unsupported.

    Only ``\\p{L}``, ``\\p{N}``, ``\\s`` (anywhere) and ``\\S`` (outside classes) are rewritten;
    any other Unicode construct makes the pattern unsupported (the ``regex`` module is used).
    """
    out: list[str] = []
    in_class = False
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern):
            nxt = pattern[i + 1]
            if pattern.startswith(("\\p{L}", "\\p{N}"), i):
                letters = "A-Za-z" if pattern[i + 3] == "L" else "0-9"
                out.append(letters if in_class else f"[{letters}]")
                i += 5
                continue
            if nxt == "s":
                out.append(_ASCII_SPACE if in_class else f"[{_ASCII_SPACE}]")
            elif nxt == "S" and not in_class:
                out.append(f"[^{_ASCII_SPACE}]")
            elif nxt in "rnt" or not nxt.isalnum():
                out.append(pattern[i : i + 2])  # \r, \n, \t and escaped punctuation mean the same
            else:
                return None  # \p{..}, \w, \d, \b, \S in a class...: not rewritten
            i += 2
            continue
        if ch == "[" and not in_class:
            in_class = True
            if pattern.startswith("[^", i):
                out.append("[^")
                i += 2
                continue
        elif ch == "]" and in_class:
            in_class = False
        out.append(ch)
        i += 1
    try:
        re.compile("".join(out))
    except re.error:
        return None
    return "".join(out)


@cache
def _unassigned() -> re.Pattern[str]:
    """Code points that Python's unicodedata does not know (or surrogates), as a character class
    (built on the first non-ASCII text, ~0.3 s)."""
    ranges: list[str] = []
    start = None
    for cp in range(sys.maxunicode + 2):
        bad = cp <= sys.maxunicode and unicodedata.category(chr(cp)) in ("Cn", "Cs")
        if bad and start is None:
            start = cp
        elif not bad and start is not None:
            ranges.append(f"\\U{start:08x}-\\U{cp - 1:08x}")
            start = None
    return re.compile(f"[{''.join(ranges)}]")


def _piece_counter(model: Any) -> Memo[str, int]:
    """piece -> number of BPE tokens, filled by the tokenizer's own model on a miss."""

    def count(piece: str) -> int:
        return len(model.tokenize("".join([_BYTE_CHARS[b] for b in piece.encode("utf-8")])))

    return Memo(count, PIECE_CACHE_SIZE)


class TokenCounter:
    """``count(text)``: the number of tokens ``tokenizer(text, add_special_tokens=False)`` gives."""

    def __init__(self, tokenizer: Any) -> None:
        from tokenizers import Tokenizer

        self.tokenizer = tokenizer
        # a transformers tokenizer's Rust backend, or a tokenizers.Tokenizer given directly
        self.backend = tokenizer if isinstance(tokenizer, Tokenizer) else getattr(tokenizer, "backend_tokenizer", None)
        self._texts = Memo(self._count, TEXT_CACHE_SIZE)
        self._ascii: Callable[[str], list[str]] | None = None
        self._unicode: Callable[[str], list[str]] | None = None
        self._pieces: Memo[str, int] | None = None
        self._added: re.Pattern[str] | None = None
        self._added_prefix = ""
        self.byte_level = self._setup_fast_path()
        log.debug("token counter: %s", "byte-level BPE fast path" if self.byte_level else "tokenizer calls")

    def _setup_fast_path(self) -> bool:
        if self.backend is None:
            return False
        try:
            pattern = _byte_level_bpe_pattern(self.backend)
            added = sorted(
                {str(t.content) for t in self.backend.get_added_tokens_decoder().values() if t.content},
                key=len,
                reverse=True,
            )
        except Exception:  # noqa: BLE001 - an exotic tokenizer: count with the tokenizer itself
            log.debug("token counter: tokenizer not inspectable", exc_info=True)
            return False
        if pattern is None:
            return False
        import regex

        self._unicode = regex.compile(pattern).findall
        translated = ascii_pattern(pattern)
        self._ascii = re.compile(translated).findall if translated is not None else self._unicode
        self._pieces = _piece_counter(self.backend.model)
        if added:
            self._added = re.compile("|".join(map(re.escape, added)))
            prefix = added[0]
            for a in added[1:]:
                while not a.startswith(prefix):
                    prefix = prefix[:-1]
            self._added_prefix = prefix
        return True

    def __call__(self, text: str) -> int:
        return self._texts[text]

    def _count(self, text: str) -> int:
        if self._pieces is None or self._ascii is None or self._unicode is None:
            return self._tokenizer_count(text)
        if (
            self._added is not None
            and (not self._added_prefix or self._added_prefix in text)
            and self._added.search(text)
        ):
            return self._tokenizer_count(text)
        if text.isascii():
            pieces = self._ascii(text)
        elif _unassigned().search(text) is None:
            pieces = self._unicode(text)
        else:
            return self._tokenizer_count(text)
        if sum(map(len, pieces)) != len(text):
            return self._tokenizer_count(text)  # the pattern left gaps: Isolated keeps them as pieces
        return sum(map(self._pieces.__getitem__, pieces))

    def _tokenizer_count(self, text: str) -> int:
        if self.tokenizer is self.backend:
            return len(self.backend.encode(text, add_special_tokens=False).ids)
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])


def _byte_level_bpe_pattern(backend: Any) -> str | None:
    """The Split regex of a Llama-3-style byte-level BPE tokenizer, or None for other shapes."""
    if backend.normalizer is not None or backend.pre_tokenizer is None:
        return None
    pre = json.loads(backend.pre_tokenizer.__getstate__())  # its tokenizer.json entry
    steps = pre.get("pretokenizers") if pre.get("type") == "Sequence" else None
    if not steps or len(steps) != 2:
        return None
    split, byte_level = steps
    if (
        split.get("type") != "Split"
        or split.get("behavior") != "Isolated"
        or split.get("invert")
        or "Regex" not in (split.get("pattern") or {})
    ):
        return None
    if byte_level.get("type") != "ByteLevel" or byte_level.get("add_prefix_space") or byte_level.get("use_regex"):
        return None
    from tokenizers.models import BPE

    model = backend.model
    if (
        not isinstance(model, BPE)
        or model.dropout
        or model.byte_fallback
        or model.continuing_subword_prefix
        or model.end_of_word_suffix
    ):
        return None
    return str(split["pattern"]["Regex"])
