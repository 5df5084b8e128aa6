"""Decontamination: word n-gram overlap between the training data and each eval question.

The test itself lives in the core (:mod:`bastion.decontam`), shared with synth, which drops pairs
that overlap an eval question with exactly the same test.
"""

from __future__ import annotations

from bastion.decontam import contaminated, ngrams, question_text

__all__ = ["contaminated", "ngrams", "question_text"]
