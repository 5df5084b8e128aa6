"""Exact and near-duplicate detection: a hash of normalised text, then MinHash LSH (datasketch).

Near-duplicates: word ``shingle_size``-grams of the normalised text are hashed to 64 bits with
numpy (crc32 of each word, mixed, combined per shingle with position multipliers), sketched as
a datasketch ``MinHash`` (scheme ``affine64``, fixed seed) and looked up in an LSH index with
explicit ``(bands, rows)``. Each LSH candidate is confirmed by its estimated Jaccard similarity
(the share of equal values, ``MinHash.jaccard``) against ``threshold - margin`` (margin 0 by
default).
The estimate has a standard deviation of sqrt(J(1-J)/num_perm): 0.035 at J=0.8 with 128
permutations, 0.025 with 256, so pairs near the threshold fall on either side by chance and
pairs 0.05 below it get flagged too often with 128; ``bench/dedup_quality.py`` measures recall
and precision of a setting (256 permutations with 16 bands x 8 rows meet its goals: LSH
candidates from the first 128 values, confirmation on all 256).

Signatures are stored as the little-endian uint64 bytes of the hash values; ``load`` rebuilds
the index from ``(key, exact_hash, signature_bytes)`` rows, in order, exactly as ``add`` built it.

Cost (the harvest checks every passed chunk): the sketch is computed with numpy directly,
``min over shingles of (a * fmix64(h) + b) mod 2**64`` per permutation, which is what
``MinHash.update_batch`` computes (same permutations, from datasketch's generator for the seed;
a test compares the values) without its Python call per shingle, and only for a text that is
not an exact duplicate (the exact hash of a text seen before is remembered). The LSH index is
datasketch's ``MinHashLSH`` banding with ``params=(bands, rows)`` (band ``i`` is values
``[i*rows, (i+1)*rows)``, keyed by their byte-swapped bytes), kept as one dict per band over
plain arrays, so that no ``MinHash`` object is built per text.
"""

from __future__ import annotations

import hashlib
import logging
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from datasketch import MinHash

from bastion.errors import BadInputError
from harvest.memo import Memo
from harvest.sections import lower_words

log = logging.getLogger(__name__)

SEED = 20240607  # fixed: signatures must be reproducible across runs and machines
SCHEME = "affine64"
DEFAULT_MARGIN = 0.0  # confirm at the threshold itself; see bench/dedup_quality.py
_SIG_DTYPE = np.dtype("<u8")
# odd 64-bit multipliers, one per position inside a shingle (order matters)
_POSITION_MULTIPLIERS = np.array(
    [(0x9E3779B97F4A7C15 * (2 * i + 1) + 0x632BE59BD9B4E019 * i) & 0xFFFFFFFFFFFFFFFF | 1 for i in range(16)],
    dtype=np.uint64,
)

DIGEST_CACHE_SIZE = 1 << 14  # texts whose exact hash is kept
DupKind = Literal["unique", "exact", "near"]


class SignatureMismatchError(BadInputError):
    """Stored signatures were made with other dedup settings than the recipe's."""


@dataclass
class DedupResult:
    """What ``Deduper.check`` found; pass it to ``Deduper.add`` to admit the text."""

    kind: DupKind
    duplicate_of: str | None
    similarity: float | None
    values: np.ndarray | Callable[[], np.ndarray] = field(repr=False)  # MinHash values (or how to get them)
    exact_hash: str  # hash of the normalised text

    @property
    def hashvalues(self) -> np.ndarray:
        """The MinHash values (uint64); computed on first use for an exact duplicate."""
        if callable(self.values):
            self.values = self.values()
        return self.values

    @property
    def signature(self) -> bytes:
        """MinHash hash values as little-endian uint64 bytes (the stored form)."""
        return self.hashvalues.astype(_SIG_DTYPE, copy=False).tobytes()


def normalise_words(text: str) -> Sequence[str]:
    """Lowercased words with punctuation removed (``\\w+`` runs)."""
    return lower_words(text)


def exact_hash(words: Sequence[str]) -> str:
    """Hash of the normalised text (words joined by single spaces)."""
    return hashlib.blake2b(" ".join(words).encode("utf-8"), digest_size=16).hexdigest()


def _fmix64(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xFF51AFD7ED558CCD)
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xC4CEB9FE1A85EC53)
    return h ^ (h >> np.uint64(33))


def shingle_hashes(words: Sequence[str], size: int) -> np.ndarray:
    """64-bit hashes of the word ``size``-grams (one shingle if fewer words; repeats kept, MinHash
    ignores them).

    Each word's crc32 is mixed (MurmurHash3 finalizer) and a shingle is the sum of its words'
    mixed hashes times one odd multiplier per position (order-sensitive). ``MinHash.update_batch``
    (scheme affine64) applies the finalizer again before its permutations.
    """
    if not words:
        return np.zeros(0, dtype=np.uint64)
    mixed = np.fromiter(map(_WORD_HASHES.__getitem__, words), dtype=np.uint64, count=len(words))
    k = min(size, len(words))
    n = len(words) - k + 1
    acc = mixed[:n] * _POSITION_MULTIPLIERS[0]  # uint64 arrays wrap around silently
    for i in range(1, k):
        acc += mixed[i : i + n] * _POSITION_MULTIPLIERS[i]
    return acc


def _word_hash(word: str) -> int:
    """fmix64(crc32(word)), with Python integers."""
    h = zlib.crc32(word.encode())
    h ^= h >> 33
    h = (h * 0xFF51AFD7ED558CCD) & 0xFFFFFFFFFFFFFFFF
    h ^= h >> 33
    h = (h * 0xC4CEB9FE1A85EC53) & 0xFFFFFFFFFFFFFFFF
    h ^= h >> 33
    return h


WORD_CACHE_SIZE = 1 << 18
_WORD_HASHES = Memo(_word_hash, WORD_CACHE_SIZE)  # the words of a harvest repeat


def _identity(value: int) -> int:
    return value


MINHASH_BLOCK = 256  # shingles permuted at a time (bounded temporaries; most sections need one block)


def minhash_values(hashes: np.ndarray, permutations: np.ndarray) -> np.ndarray:
    """``MinHash.update_batch`` (scheme affine64) on a fresh sketch, with numpy: the minimum over
    the inputs of ``a * fmix64(h) + b`` (mod 2**64) for each permutation ``(a, b)``; all ones
    (the empty sketch) when there are no inputs."""
    return Permuter(permutations)(hashes)


class Permuter:
    """``minhash_values`` for one set of permutations, with their rows tiled once: products of
    same-shaped arrays are several times faster in numpy than a broadcast ``multiply.outer``."""

    def __init__(self, permutations: np.ndarray) -> None:
        a, b = np.asarray(permutations, dtype=np.uint64)
        self.num_perm = len(a)
        self._a, self._b = np.tile(a, (MINHASH_BLOCK, 1)), np.tile(b, (MINHASH_BLOCK, 1))

    def __call__(self, hashes: np.ndarray) -> np.ndarray:
        if not len(hashes):
            return np.full(self.num_perm, np.uint64(0xFFFFFFFFFFFFFFFF), dtype=np.uint64)
        mixed = _fmix64(hashes)
        values: np.ndarray | None = None
        for start in range(0, len(mixed), MINHASH_BLOCK):
            part = mixed[start : start + MINHASH_BLOCK]
            permuted = np.repeat(part, self.num_perm).reshape(len(part), self.num_perm)
            permuted *= self._a[: len(part)]  # uint64 arrays wrap around silently
            permuted += self._b[: len(part)]
            lowest = permuted.min(axis=0)
            values = lowest if values is None else np.minimum(values, lowest, out=values)
        assert values is not None
        return values


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
        template = MinHash(num_perm=num_perm, seed=SEED, hashfunc=_identity, scheme=SCHEME)
        self._permutations = np.asarray(template.permutations, dtype=np.uint64)
        self._permuter = Permuter(self._permutations)
        self._bands: list[tuple[int, int]] = [(i * rows, (i + 1) * rows) for i in range(bands)]
        self._tables: list[dict[bytes, list[str]]] = [{} for _ in range(bands)]
        self._exact: dict[str, str] = {}  # exact hash -> first key
        # text checked -> its exact hash (texts repeat verbatim)
        self._digests: Memo[str, str] = Memo(lambda text: exact_hash(normalise_words(text)), DIGEST_CACHE_SIZE)
        self._values: dict[str, np.ndarray] = {}  # key -> MinHash values
        self._order: dict[str, int] = {}  # key -> admission number (ties: earliest wins)

    @classmethod
    def from_config(cls, config: dict) -> Deduper:
        """From the recipe's ``harvest.dedup`` section."""
        return cls(
            config["threshold"],
            config["num_perm"],
            config["bands"],
            config["rows"],
            config["shingle_size"],
            config.get("margin", DEFAULT_MARGIN),
        )

    @property
    def scheme_id(self) -> str:
        """Identifies how signatures are made; store it with them, compare it on resume."""
        return f"minhash-{SCHEME}-seed{SEED}-perm{self.num_perm}-shingle{self.shingle_size}-crc32fmix"

    def __len__(self) -> int:
        return len(self._order)

    def signature(self, words: Sequence[str]) -> MinHash:
        """The datasketch ``MinHash`` of normalised words (same values as ``check`` computes)."""
        return MinHash(
            num_perm=self.num_perm,
            seed=SEED,
            hashfunc=_identity,
            scheme=SCHEME,
            hashvalues=self._minhash(words),
            permutations=self._permutations,
        )

    def _minhash(self, words: Sequence[str]) -> np.ndarray:
        return self._permuter(shingle_hashes(words, self.shingle_size))

    def _band_keys(self, values: np.ndarray) -> list[bytes]:
        raw = values.byteswap().tobytes()  # datasketch's MinHashLSH._byteswap of each band
        return [raw[8 * start : 8 * end] for start, end in self._bands]

    def check(self, key: str, text: str) -> DedupResult:
        """Is ``text`` an exact or near duplicate of an admitted text? Does not admit it."""
        digest = self._digests[text]
        first = self._exact.get(digest)
        if first is not None:
            return DedupResult("exact", first, 1.0, lambda: self._minhash(normalise_words(text)), digest)
        values = self._minhash(normalise_words(text))
        candidates: set[str] = set()
        for table, band in zip(self._tables, self._band_keys(values), strict=True):
            candidates.update(table.get(band, ()))
        best: tuple[float, int, str] | None = None
        for cand in candidates:
            # MinHash.jaccard: the share of equal values
            sim = float(np.count_nonzero(values == self._values[cand])) / float(self.num_perm)
            if sim >= self.threshold - self.margin and (
                best is None or (sim, -self._order[cand]) > (best[0], -best[1])
            ):
                best = (sim, self._order[cand], cand)
        if best is not None:
            log.debug("%s: near-duplicate of %s (estimated Jaccard %.3f)", key, best[2], best[0])
            return DedupResult("near", best[2], best[0], values, digest)
        return DedupResult("unique", None, None, values, digest)

    def add(self, key: str, result: DedupResult) -> None:
        """Admit a text (by the result of its ``check``) into the index."""
        self._insert(key, result.exact_hash, result.hashvalues)

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
            self._insert(str(key), digest, np.frombuffer(bytes(sig), dtype=_SIG_DTYPE).astype(np.uint64))
            count += 1
        log.debug("dedup index rebuilt with %d entries (%d without signature skipped)", count, skipped)
        return count

    def _insert(self, key: str, digest: str, values: np.ndarray) -> None:
        if key in self._order:
            raise ValueError(f"dedup: key {key!r} was already admitted")
        if len(values) != self.num_perm:
            raise SignatureMismatchError(
                f"dedup: stored signature of {key!r} has {len(values)} values but num_perm is "
                f"{self.num_perm}; the recipe's dedup settings changed since these signatures were "
                "made: delete the run's data folder to harvest again"
            )
        self._exact.setdefault(digest, key)
        for table, band in zip(self._tables, self._band_keys(values), strict=True):
            table.setdefault(band, []).append(key)
        self._values[key] = values
        self._order[key] = len(self._order)
