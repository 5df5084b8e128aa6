"""Bastion: turn documentation into a domain-expert LLM from one YAML recipe."""

from __future__ import annotations

__version__ = "0.1.0"
