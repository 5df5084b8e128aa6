"""Loader of the held-out pages for the ``heldout_domain`` task: ``--metadata '{"heldout_pages": PATH}'``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import datasets


def load_heldout(**kwargs: Any) -> datasets.DatasetDict:
    """The held-out pages (JSONL with ``id``-less rows of url, title, text...) as the test split."""
    path = kwargs.get("heldout_pages")
    if not path:
        raise ValueError('heldout_domain needs --metadata \'{"heldout_pages": "runs/<name>/data/heldout.jsonl"}\'')
    rows = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = [{"id": row["url"], "category": "heldout", **row} for row in rows]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})
