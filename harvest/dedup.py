"""Exact and near-duplicate detection: a hash of normalised text, then MinHash LSH (datasketch).

Near-duplicates: the word ``shingle_size``-grams of the normalised text are sketched with
datasketch's ``MinHash(num_perm, seed=SEED).update_batch`` (its default scheme and hash function)
and looked up in a ``MinHashLSH`` index with explicit ``params=(bands, rows)`` (the LSH reads the
first ``bands x rows`` values). Each LSH candidate is confirmed by its estimated Jaccard
similarity (``MinHash.jaccard``) against ``threshold - margin`` (margin 0 by default).
The estimate has a standard deviation of sqrt(J(1-J)/num_perm): 0.035 at J=0.8 with 128
permutations, 0.025 with 256, so pairs near the threshold fall on either side by chance and
pairs 0.05 below it get flagged too often with 128; ``bench/dedup_quality.py`` measures recall
and precision of a setting (256 permutations with 16 bands x 8 rows meet its goals: LSH
candidates from the first 128 values, confirmation on all 256).

Signatures are stored in datasketch's own byte form (``LeanMinHash.serialize``, little-endian),
which records the seed, the number of permutations and the permutation scheme; ``load`` rebuilds
the index from ``(key, exact_hash, signature_bytes)`` rows, in order, exactly as ``add`` built it,
and refuses signatures made with other settings.
"""

from __future__ import annotations

import hashlib
import logging
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from datasketch import LeanMinHash, MinHash, MinHashLSH

from bastion.errors import BadInputError
from harvest.sections import lower_words

log = logging.getLogger(__name__)

SEED = 20240607  # fixed: signatures must be reproducible across runs and machines
DEFAULT_MARGIN = 0.0  # confirm at the threshold itself; see bench/dedup_quality.py
BYTE_ORDER = "<"  # of the stored signatures (LeanMinHash.serialize)

DupKind = Literal["unique", "exact", "near"]


class SignatureMismatchError(BadInputError):
    """Stored signatures were made with other dedup settings than the recipe's."""


@dataclass
class DedupResult:
    """What ``Deduper.check`` found; pass it to ``Deduper.add`` to admit the text."""

    kind: DupKind
    duplicate_of: str | None
    similarity: float | None
    sketch_or_maker: LeanMinHash | Callable[[], LeanMinHash] = field(repr=False)  # (how to get) the MinHash
    exact_hash: str  # hash of the normalised text

    @property
    def sketch(self) -> LeanMinHash:
        """The text's MinHash; computed on first use for an exact duplicate."""
        if callable(self.sketch_or_maker):
            self.sketch_or_maker = self.sketch_or_maker()
        return self.sketch_or_maker

    @property
    def signature(self) -> bytes:
        """The MinHash in its stored form (``LeanMinHash.serialize``, little-endian)."""
        return serialize(self.sketch)


def serialize(sketch: LeanMinHash) -> bytes:
    """datasketch's byte form of a MinHash (seed, size, scheme, values)."""
    buf = bytearray(sketch.bytesize(byteorder=BYTE_ORDER))
    sketch.serialize(buf, byteorder=BYTE_ORDER)
    return bytes(buf)


def normalise_words(text: str) -> Sequence[str]:
    """Lowercased words with punctuation removed (``\\w+`` runs)."""
    return lower_words(text)


def exact_hash(words: Sequence[str]) -> str:
    """Hash of the normalised text (words joined by single spaces)."""
    return hashlib.blake2b(" ".join(words).encode("utf-8"), digest_size=16).hexdigest()


def shingles(words: Sequence[str], size: int) -> set[bytes]:
    """The distinct word ``size``-grams, UTF-8 encoded (one shingle of all words if fewer)."""
    k = min(size, len(words))
    return {" ".join(words[i : i + k]).encode("utf-8") for i in range(len(words) - k + 1)} if words else set()


class Deduper:
    """Exact duplicates by normalised-text hash, near duplicates by MinHash LSH."""

    def __init__(
        self, threshold: float, num_perm: int, bands: int, rows: int, shingle_size: int, margin: float = DEFAULT_MARGIN
    ) -> None:
        if not 0 < threshold <= 1:
            raise ValueError(f"dedup threshold must be in (0, 1], got {threshold}")
        if bands * rows > num_perm:
            raise ValueError(f"dedup: bands x rows ({bands} x {rows} = {bands * rows}) exceeds num_perm ({num_perm})")
        if not 0 <= margin < threshold:
            raise ValueError(f"dedup margin must be in [0, threshold), got {margin}")
        self.threshold, self.num_perm, self.bands, self.rows = threshold, num_perm, bands, rows
        self.shingle_size, self.margin = shingle_size, margin
        self._lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, params=(bands, rows))
        self._scheme = MinHash(num_perm=1, seed=SEED).scheme  # datasketch's default
        self._exact: dict[str, str] = {}  # exact hash -> first key
        self._sketches: dict[str, LeanMinHash] = {}  # key -> MinHash
        self._order: dict[str, int] = {}  # key -> admission number (ties: earliest wins)

    def __len__(self) -> int:
        return len(self._order)

    def sketch(self, words: Sequence[str]) -> LeanMinHash:
        """The MinHash of normalised words: ``MinHash.update_batch`` over their shingles."""
        minhash = MinHash(num_perm=self.num_perm, seed=SEED)
        minhash.update_batch(shingles(words, self.shingle_size))
        return LeanMinHash(minhash)

    def check(self, key: str, text: str) -> DedupResult:
        """Is ``text`` an exact or near duplicate of an admitted text? Does not admit it."""
        words = normalise_words(text)
        digest = exact_hash(words)
        first = self._exact.get(digest)
        if first is not None:
            return DedupResult("exact", first, 1.0, lambda: self.sketch(words), digest)
        sketch = self.sketch(words)
        best: tuple[float, int, str] | None = None
        for cand in self._lsh.query(sketch):
            sim = float(sketch.jaccard(self._sketches[cand]))
            if sim >= self.threshold - self.margin and (
                best is None or (sim, -self._order[cand]) > (best[0], -best[1])
            ):
                best = (sim, self._order[cand], cand)
        if best is not None:
            log.debug("%s: near-duplicate of %s (estimated Jaccard %.3f)", key, best[2], best[0])
            return DedupResult("near", best[2], best[0], sketch, digest)
        return DedupResult("unique", None, None, sketch, digest)

    def add(self, key: str, result: DedupResult) -> None:
        """Admit a text (by the result of its ``check``) into the index."""
        self._insert(key, result.exact_hash, result.sketch)

    def check_and_add(self, key: str, text: str) -> DedupResult:
        """``check``, then ``add`` when the text is unique."""
        result = self.check(key, text)
        if result.kind == "unique":
            self.add(key, result)
        return result

    def load(self, entries: Iterable[tuple[str, str, bytes]]) -> int:
        """Re-admit stored ``(key, exact_hash, signature_bytes)`` rows, in order; returns how many.

        Rows with an empty signature (records kept while dedup was disabled) are skipped.
        """
        count = skipped = 0
        for key, digest, sig in entries:
            if not sig:
                skipped += 1
                continue
            self._insert(str(key), digest, self._stored_sketch(str(key), bytes(sig)))
            count += 1
        log.debug("dedup index rebuilt with %d entries (%d without signature skipped)", count, skipped)
        return count

    def _stored_sketch(self, key: str, sig: bytes) -> LeanMinHash:
        made: tuple[object, ...]
        try:
            sketch = LeanMinHash.deserialize(sig, byteorder=BYTE_ORDER)
            made = (sketch.seed, len(sketch), sketch.scheme)
        except (struct.error, ValueError, KeyError) as exc:
            made = ("unreadable", str(exc))
        if made != (SEED, self.num_perm, self._scheme):
            raise SignatureMismatchError(
                f"dedup: stored signature of {key!r} was made with other settings (seed, num_perm, scheme = "
                f"{made}; the recipe needs {(SEED, self.num_perm, self._scheme)}): the recipe's dedup settings or "
                "Bastion's signature format changed since these signatures were made: delete the run's data "
                "folder to harvest again"
            )
        return sketch

    def _insert(self, key: str, digest: str, sketch: LeanMinHash) -> None:
        if key in self._order:
            raise ValueError(f"dedup: key {key!r} was already admitted")
        self._exact.setdefault(digest, key)
        self._lsh.insert(key, sketch, check_duplication=False)
        self._sketches[key] = sketch
        self._order[key] = len(self._order)
