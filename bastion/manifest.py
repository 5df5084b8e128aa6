"""What a manifest records: package versions, the git commit, file fingerprints and times."""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib.metadata
import logging
import subprocess
from pathlib import Path

from bastion.paths import REPO_ROOT

log = logging.getLogger(__name__)

TRACKED_PACKAGES = (
    "torch",
    "transformers",
    "tokenizers",
    "axolotl",
    "peft",
    "accelerate",
    "bitsandbytes",
    "datasets",
    "trl",
    "lm_eval",
    "llama_cpp_python",
    "trafilatura",
    "datasketch",
    "textstat",
    "protego",
)


def package_versions(names: tuple[str, ...] = TRACKED_PACKAGES) -> dict[str, str]:
    """Installed versions of the packages that shape results (absent ones are left out)."""
    out: dict[str, str] = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def git_commit() -> str | None:
    """The repository's HEAD commit, with ``-dirty`` when the tree has changes; None outside git."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("-dirty" if dirty else "")


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def now_iso() -> str:
    """Current UTC time, ISO 8601 with seconds."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


HASHED_BYTES = 64 * 2**20  # files up to this size are fingerprinted by content, larger ones by size and mtime


def fingerprint(path: Path) -> str:
    """A fingerprint of a file or folder (every file below it, by relative path), or ``missing``.

    Files up to ``HASHED_BYTES`` are hashed (SHA-256); larger ones (merged weights, GGUFs of several
    GB) are fingerprinted by size and modification time, as make and ninja do.
    """
    if path.is_file():
        stat = path.stat()
        if stat.st_size <= HASHED_BYTES:
            return file_sha256(path)
        return f"size={stat.st_size},mtime_ns={stat.st_mtime_ns}"
    if path.is_dir():
        digest = hashlib.sha256()
        for item in sorted(p for p in path.rglob("*") if p.is_file() and not _ignored(p.relative_to(path))):
            digest.update(f"{item.relative_to(path).as_posix()}\0{fingerprint(item)}\n".encode())
        return digest.hexdigest()
    return "missing"


def _ignored(relative: Path) -> bool:
    """Caches and hidden files are not content: ``__pycache__``, ``.ipynb_checkpoints``, ``.DS_Store``."""
    return any(part.startswith(".") or part == "__pycache__" for part in relative.parts)
