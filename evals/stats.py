"""Paired statistics for base vs tuned on the same questions: bootstrap CI, McNemar, verdict."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Comparison:
    """Base vs tuned on n paired questions."""

    n: int
    base: float
    tuned: float
    diff: float
    ci_low: float
    ci_high: float
    p_value: float | None
    test: str
    verdict: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def paired_bootstrap_ci(
    base: np.ndarray, tuned: np.ndarray, *, samples: int = 2000, seed: int = 1234, level: float = 0.95
) -> tuple[float, float]:
    """Percentile CI of mean(tuned - base), resampling questions (pairs kept together)."""
    diffs = np.asarray(tuned, dtype=float) - np.asarray(base, dtype=float)
    if diffs.size == 0:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, diffs.size, size=(samples, diffs.size))
    means = diffs[idx].mean(axis=1)
    alpha = (1 - level) / 2
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))


def mcnemar_exact(base_correct: np.ndarray, tuned_correct: np.ndarray) -> tuple[float, int, int]:
    """Exact two-sided McNemar test on paired 0/1 outcomes; returns (p, base-only, tuned-only)."""
    b = int(np.sum((base_correct == 1) & (tuned_correct == 0)))
    c = int(np.sum((base_correct == 0) & (tuned_correct == 1)))
    n = b + c
    if n == 0:
        return 1.0, b, c
    k = min(b, c)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail), b, c


def compare(
    base: list[float], tuned: list[float], *, binary: bool, samples: int = 2000, seed: int = 1234, alpha: float = 0.05
) -> Comparison:
    """Compare paired per-question scores. Binary scores use McNemar for the verdict, others the bootstrap CI."""
    b, t = np.asarray(base, dtype=float), np.asarray(tuned, dtype=float)
    if b.shape != t.shape:
        raise ValueError(f"paired scores must have the same length ({b.size} vs {t.size})")
    low, high = paired_bootstrap_ci(b, t, samples=samples, seed=seed)
    diff = float(t.mean() - b.mean()) if b.size else math.nan
    p: float | None
    if binary:
        p, _, _ = mcnemar_exact(b, t)
        significant = p < alpha
        test = "mcnemar_exact"
    else:
        p = None
        significant = b.size > 0 and (low > 0 or high < 0)
        test = "paired_bootstrap"
    if b.size == 0:
        verdict = "no data"
    elif significant and diff > 0:
        verdict = "improved"
    elif significant and diff < 0:
        verdict = "regressed"
    else:
        verdict = "no significant change"
    return Comparison(
        n=int(b.size),
        base=float(b.mean()) if b.size else math.nan,
        tuned=float(t.mean()) if t.size else math.nan,
        diff=diff,
        ci_low=low,
        ci_high=high,
        p_value=p,
        test=test,
        verdict=verdict,
    )


def bits_per_byte(loglikelihoods: np.ndarray, nbytes: np.ndarray) -> float:
    """Bits per byte of a set of texts: -sum(log-likelihood) / (sum(bytes) * ln 2), as lm-eval aggregates it."""
    return float(-np.sum(loglikelihoods) / (np.sum(nbytes) * math.log(2)))


def compare_bits_per_byte(
    base_ll: list[float], tuned_ll: list[float], nbytes: list[float], *, samples: int = 2000, seed: int = 1234
) -> Comparison:
    """Base vs tuned bits per byte on the same documents (lower is better), with a paired bootstrap
    over documents: each resample draws documents with replacement and recomputes both aggregates.
    ``diff`` is tuned - base, so a negative difference whose interval excludes 0 is an improvement."""
    b, t, n = (np.asarray(x, dtype=float) for x in (base_ll, tuned_ll, nbytes))
    if not b.size == t.size == n.size:
        raise ValueError(f"paired documents must match ({b.size}, {t.size}, {n.size})")
    if b.size == 0:
        return Comparison(0, math.nan, math.nan, math.nan, math.nan, math.nan, None, "paired_bootstrap", "no data")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, b.size, size=(samples, b.size))
    scale = n[idx].sum(axis=1) * math.log(2)
    diffs = (b[idx].sum(axis=1) - t[idx].sum(axis=1)) / scale  # tuned bpb - base bpb
    low, high = float(np.quantile(diffs, 0.025)), float(np.quantile(diffs, 0.975))
    base, tuned = bits_per_byte(b, n), bits_per_byte(t, n)
    diff = tuned - base
    if high < 0:
        verdict = "improved"
    elif low > 0:
        verdict = "regressed"
    else:
        verdict = "no significant change"
    return Comparison(int(b.size), base, tuned, diff, low, high, None, "paired_bootstrap", verdict)
