"""Near-duplicate questions: MinHash (datasketch) over the question's word shingles, an LSH index with
explicit ``(bands, rows)``, each candidate confirmed by its estimated Jaccard similarity; exact
repeats (same normalised words) are caught by a hash first. The first question kept wins."""

from __future__ import annotations

import hashlib

from datasketch import MinHash, MinHashLSH

from bastion.ngrams import words

SEED = 20240607  # fixed: the same questions give the same signatures on every run


class QuestionDeduper:
    def __init__(self, threshold: float, num_perm: int, bands: int, rows: int, shingle_size: int) -> None:
        self.threshold, self.num_perm, self.shingle_size = threshold, num_perm, shingle_size
        self._lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, params=(bands, rows))
        self._sketches: dict[str, MinHash] = {}
        self._exact: set[str] = set()

    def _sketch(self, tokens: list[str]) -> MinHash:
        k = min(self.shingle_size, len(tokens))
        shingles = {" ".join(tokens[i : i + k]).encode() for i in range(len(tokens) - k + 1)}
        sketch = MinHash(num_perm=self.num_perm, seed=SEED)
        sketch.update_batch(sorted(shingles))
        return sketch

    def admit(self, key: str, question: str) -> str | None:
        """None when ``question`` is new (it is then admitted), else ``exact``/``near`` and what it repeats."""
        tokens = words(question)
        digest = hashlib.blake2b(" ".join(tokens).encode(), digest_size=16).hexdigest()
        if digest in self._exact:
            return "exact_duplicate_question"
        sketch = self._sketch(tokens)
        for other in self._lsh.query(sketch):
            if sketch.jaccard(self._sketches[other]) >= self.threshold:
                return "near_duplicate_question"
        self._exact.add(digest)
        self._lsh.insert(key, sketch)
        self._sketches[key] = sketch
        return None
