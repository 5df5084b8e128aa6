"""py3langid's language identification with its byte automaton walked by numpy.

py3langid (0.4) scores a text by walking its UTF-8 bytes through a DFA (an Aho-Corasick
automaton over the model's byte n-grams) one Python step per byte, counting the features of the
states it visits; that loop is most of its cost. In such an automaton the state after a byte is
determined by the last ``depth`` bytes read (``depth``: the longest n-gram, the largest distance
of a state from the start state), so the state at every position is the state reached from the
start state over the window of ``depth`` bytes that ends there: ``depth`` vectorised gathers.

Only that walk is replaced (``_raw_score``, in a subclass): the features are counted in
py3langid's order (first visit) and scored by its ``_sparse_score``; encoding, normalisation
and aliased labels are its own ``classify``. Results are equal to py3langid's (tests compare
them); a model of another shape is walked by py3langid itself.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from typing import Any

import numpy as np
from py3langid.langid import MODEL_FILE, LanguageIdentifier

log = logging.getLogger(__name__)

MAX_WINDOW = 16  # an automaton deeper than this is walked by py3langid itself


class Automaton:
    """py3langid's DFA (``tk_nextmove``, row offsets, ``tk_output``) as numpy arrays."""

    def __init__(self, nextmove: np.ndarray, rowbase: np.ndarray, output: np.ndarray) -> None:
        self.nextmove, self.rowbase, self.output = nextmove, rowbase, output
        self.window = automaton_depth(nextmove, rowbase)

    def features(self, raw: bytes) -> np.ndarray:
        """The feature of every visited state that has one, in visiting order."""
        data = np.frombuffer(raw, dtype=np.uint8).astype(np.intp)
        n = len(data)
        states = np.zeros(n, dtype=np.intp)
        for offset in range(min(self.window, n) - 1, -1, -1):
            # every position reads the byte ``offset`` before it; the first positions have fewer
            # bytes behind them and start later, from the start state
            states[offset:] = self.nextmove[self.rowbase[states[offset:]] + data[: n - offset]]
        found = self.output[states]
        return found[found >= 0]

    def visits(self, raw: bytes) -> Counter[int] | None:
        """feature -> times visited, in first-visit order; None if none (py3langid's ``visit_counts``)."""
        features = self.features(raw)
        return Counter(features.tolist()) if len(features) else None


def automaton_depth(nextmove: np.ndarray, rowbase: np.ndarray) -> int:
    """The largest distance of a state from the start state (breadth-first): the longest n-gram
    of an Aho-Corasick automaton; 0 when it exceeds ``MAX_WINDOW``."""
    seen = np.zeros(len(rowbase), dtype=bool)
    seen[0] = True
    frontier = np.array([0], dtype=np.intp)
    letters = np.arange(256, dtype=np.intp)
    depth = 0
    while True:
        targets = np.unique(nextmove[(rowbase[frontier][:, None] + letters).ravel()])
        frontier = targets[~seen[targets]]
        if not len(frontier):
            return depth
        depth += 1
        if depth > MAX_WINDOW:
            return 0
        seen[frontier] = True


class VectorIdentifier(LanguageIdentifier):  # type: ignore[misc]
    """A ``LanguageIdentifier`` whose automaton walk is vectorised (same results)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.automaton: Automaton | None = None
        try:
            nextmove = np.frombuffer(self.tk_nextmove, dtype=np.dtype(self.tk_nextmove.typecode))
            rowbase = np.asarray(self._rowbase, dtype=np.intp)
            automaton = Automaton(nextmove, rowbase, np.asarray(self.tk_output, dtype=np.intp))
        except (AttributeError, TypeError, ValueError, IndexError):
            log.debug("py3langid model of an unexpected shape: walked by py3langid", exc_info=True)
            return
        self.automaton = automaton if automaton.window else None

    def _raw_score(self, text: bytes) -> Any:
        if self.automaton is None:
            return super()._raw_score(text)
        visits = self.automaton.visits(text)
        if visits:
            return self._sparse_score(visits, self.nb_ptc)
        fill = 0.0 if self._norm_probs else float(np.finfo(np.float32).min)  # py3langid's RAW_FLOOR
        return np.full(len(self.nb_classes), fill, dtype=np.float32)


_LOCK = threading.Lock()
_IDENTIFIER: VectorIdentifier | None = None


def identify(text: str) -> tuple[str, float]:
    """(language, probability) by py3langid's packaged model with normalised probabilities."""
    global _IDENTIFIER
    with _LOCK:
        if _IDENTIFIER is None:
            _IDENTIFIER = VectorIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    lang, prob = _IDENTIFIER.classify(text)
    return str(lang), float(prob)
