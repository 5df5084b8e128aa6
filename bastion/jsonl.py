"""Reading JSON Lines: one object per line, every problem named by file and line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bastion.errors import BadInputError


def read_jsonl(path: Path, *, fix: str = "") -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` for each non-blank line of ``path``; a line that is not a JSON object
    is a BadInputError naming the file and the line (``fix``: what to do about it, appended)."""
    hint = f"; {fix}" if fix else ""
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise BadInputError(f"{path}:{number}: not valid JSON ({exc.msg}){hint}") from None
            if not isinstance(row, dict):
                raise BadInputError(f"{path}:{number}: expected a JSON object{hint}")
            yield number, row
