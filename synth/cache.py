"""Every teacher reply, kept in the run folder (SQLite, WAL) the moment it arrives.

A reply is keyed by what decides it: the chunk's hash, the prompt template's hash, the request (question
type, persona, slot), the teacher's model and settings, and the seed (:func:`key`). A rerun finds every
reply here and calls the teacher 0 times; after a SIGKILL the replies committed before it are kept
(WAL with synchronous=NORMAL survives a killed process) and only the missing ones are asked for.
URLs and API keys are not part of a key nor stored.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS replies (
    key TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    content TEXT NOT NULL,
    error TEXT,
    attempts INTEGER NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL
);
"""


def key(**parts: Any) -> str:
    """The cache key of a request: a hash of its parts (JSON with sorted keys)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Reply:
    """A teacher's final reply to one request: its text, the reason it was refused (None when it parsed),
    the calls it took and their tokens."""

    content: str
    error: str | None
    attempts: int
    prompt_tokens: int
    completion_tokens: int


class ReplyCache:
    """The replies table; safe to use from several threads."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.executescript(_SCHEMA)

    def get(self, cache_key: str) -> Reply | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT content, error, attempts, prompt_tokens, completion_tokens FROM replies WHERE key = ?",
                (cache_key,),
            ).fetchone()
        return Reply(*row) if row else None

    def put(self, cache_key: str, kind: str, reply: Reply) -> None:
        with self._lock:
            self._conn.execute(
                "INSERT OR REPLACE INTO replies VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    cache_key,
                    kind,
                    reply.content,
                    reply.error,
                    reply.attempts,
                    reply.prompt_tokens,
                    reply.completion_tokens,
                ),
            )

    def __len__(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM replies").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._conn.close()
