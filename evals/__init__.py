"""Evals: lm-eval custom security tasks and the base-vs-tuned runner and report."""
