"""Token counts of the recipe's tokenizer, asked for by the chunker.

``TokenCounter(tokenizer)(text)`` is ``len(tokenizer(text, add_special_tokens=False)["input_ids"])``:
the tokenizer's own encoding, whatever its kind (byte-level BPE, SentencePiece, WordPiece). The
chunker asks for the same text more than once (a section, then its first unit; a section repeated
across a site's pages), so counts are kept per whole text (bounded). ``many(texts)`` counts several
texts with one batch call of the tokenizer.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from harvest.memo import Memo

log = logging.getLogger(__name__)

TEXT_CACHE_SIZE = 1 << 12  # whole texts kept (the chunker counts the same text several times)


class TokenCounter:
    """``count(text)``: the number of tokens ``tokenizer(text, add_special_tokens=False)`` gives.

    ``tokenizer`` is a Hugging Face tokenizer (or any callable with that signature that returns a
    mapping with ``input_ids``).
    """

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self._texts: Memo[str, int] = Memo(self._count, TEXT_CACHE_SIZE)

    def __call__(self, text: str) -> int:
        return self._texts[text]

    def many(self, texts: Sequence[str]) -> list[int]:
        """The counts of ``texts``, the ones not yet known from one batch call of the tokenizer."""
        missing = list(dict.fromkeys(t for t in texts if t not in self._texts))
        if len(missing) > 1:
            ids = self.tokenizer(missing, add_special_tokens=False)["input_ids"]
            if len(self._texts) + len(missing) > TEXT_CACHE_SIZE:
                self._texts.clear()
            self._texts.update(zip(missing, map(len, ids), strict=True))
        return [self._texts[t] for t in texts]

    def _count(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])
