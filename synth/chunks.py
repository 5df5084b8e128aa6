"""The harvested chunks synth writes pairs from: harvest's records with their provenance, never a
held-out page.

Harvest writes each kept chunk as an extractive Alpaca record (``train.jsonl``, the chunk's text is
the record's output) with its provenance on the same line of ``sources.jsonl``. Held-out pages are
excluded there already; synth checks again against ``heldout.jsonl`` so that a held-out page can
never reach the teacher, whatever produced the files.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bastion.errors import BadInputError, MissingResourceError
from bastion.jsonl import read_jsonl
from bastion.run_folder import RunFolder


@dataclass(frozen=True)
class Chunk:
    """One harvested chunk: its text, where it comes from, and its extractive record."""

    hash: str  # sha256 of the text
    text: str
    url: str
    title: str
    section: str
    source: str
    record: dict[str, Any]  # harvest's extractive Alpaca record of this chunk


def _jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    return read_jsonl(path, fix="harvest again")


def heldout_urls(folder: RunFolder) -> set[str]:
    """URLs of the held-out pages (none when harvest wrote no held-out file)."""
    if not folder.heldout.is_file():
        return set()
    return {str(row.get("url", "")) for _, row in _jsonl(folder.heldout)}


def read_chunks(folder: RunFolder) -> tuple[list[Chunk], int]:
    """Harvest's chunks in its order, without held-out pages; also how many held-out ones were skipped."""
    for path in (folder.train_data, folder.sources):
        if not path.is_file():
            raise MissingResourceError(f"no harvested data {path}: run `bastion harvest {folder.recipe_arg}` first")
    records = list(_jsonl(folder.train_data))
    sources = list(_jsonl(folder.sources))
    if len(records) != len(sources):
        raise BadInputError(
            f"{folder.train_data} has {len(records)} records but {folder.sources} {len(sources)} lines; harvest again"
        )
    held = heldout_urls(folder)
    chunks: list[Chunk] = []
    skipped = 0
    for (number, record), (_, source) in zip(records, sources, strict=True):
        text = record.get("output")
        if not isinstance(text, str) or not text.strip():
            raise BadInputError(f"{folder.train_data}:{number}: a record without output text; harvest again")
        url = str(source.get("url", ""))
        if url in held:
            skipped += 1
            continue
        chunks.append(
            Chunk(
                hash=hashlib.sha256(text.encode("utf-8")).hexdigest(),
                text=text,
                url=url,
                title=str(source.get("title", "")),
                section=str(source.get("section", "")),
                source=str(source.get("source", "")),
                record={"instruction": record["instruction"], "input": record.get("input", ""), "output": text},
            )
        )
    return chunks, skipped


def select(chunks: list[Chunk], limit: int | None, seed: int) -> list[Chunk]:
    """At most ``limit`` chunks, chosen by a seeded hash of their text (spread over the sources), in
    harvest's order; every chunk when ``limit`` is None."""
    if limit is None or limit >= len(chunks):
        return chunks
    rank = sorted(range(len(chunks)), key=lambda i: hashlib.sha256(f"{seed}:{chunks[i].hash}".encode()).hexdigest())
    keep = set(rank[:limit])
    return [c for i, c in enumerate(chunks) if i in keep]
