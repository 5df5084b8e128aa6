"""Fetch llama.cpp's converter, vocabularies and chat templates from the llama-cpp-python sdist.

Nothing third-party is committed: the sdist of the SAME version as the installed
``llama-cpp-python`` is downloaded from the package registry once and the parts Bastion needs
are extracted into the cache folder (``<cache>/llama.cpp-<version>/``).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import logging
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bastion.errors import MissingResourceError
from bastion.paths import cache_dir

log = logging.getLogger(__name__)

#: The llama-cpp-python release Bastion is pinned to (also pinned in pyproject.toml).
PINNED_LLAMA_CPP_PYTHON = "0.3.36"

#: Members of ``vendor/llama.cpp/`` that Bastion extracts (files or folder prefixes).
_WANTED = (
    "convert_hf_to_gguf.py",
    "conversion/",
    "gguf-py/",
    "models/ggml-vocab-llama-bpe.gguf",
    "models/ggml-vocab-llama-bpe.gguf.inp",
    "models/ggml-vocab-llama-bpe.gguf.out",
    "models/templates/",
    "LICENSE",
)


def llama_cpp_python_version() -> str:
    """The installed llama-cpp-python version, or the pinned one when it is not installed."""
    try:
        return importlib.metadata.version("llama-cpp-python")
    except importlib.metadata.PackageNotFoundError:
        return PINNED_LLAMA_CPP_PYTHON


def llama_cpp_dir(version: str | None = None) -> Path:
    """Return the extracted ``vendor/llama.cpp`` tree for ``version``, fetching it if needed."""
    version = version or llama_cpp_python_version()
    target = cache_dir() / f"llama.cpp-{version}"
    if (target / ".complete").exists():
        return target
    with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp:
        sdist = _download_sdist(version, Path(tmp))
        staging = Path(tmp) / "tree"
        _extract(sdist, staging)
        (staging / ".complete").write_text(version + "\n")
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    log.info("llama.cpp %s tools extracted to %s", version, target)
    return target


def _download_sdist(version: str, into: Path) -> Path:
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--no-deps",
        "--no-binary",
        ":all:",
        f"llama-cpp-python=={version}",
        "-d",
        str(into),
    ]
    log.info("downloading the llama-cpp-python %s sdist (llama.cpp converter and vocabularies)", version)
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    found = sorted(into.glob("llama_cpp_python-*.tar.gz"))
    if proc.returncode != 0 or not found:
        raise MissingResourceError(
            f"could not download the llama-cpp-python {version} sdist from the package registry "
            f"(needed for llama.cpp's converter and the Llama 3 vocabulary): {proc.stderr.strip()[-400:]}"
        )
    return found[0]


def _extract(sdist: Path, staging: Path) -> None:
    with tarfile.open(sdist) as tar:
        for member in tar.getmembers():
            parts = member.name.split("/", 3)
            if len(parts) < 4 or parts[1:3] != ["vendor", "llama.cpp"]:
                continue
            rel = parts[3]
            if not any(rel == w or (w.endswith("/") and rel.startswith(w)) for w in _WANTED):
                continue
            if not (member.isfile() or member.isdir()):
                continue
            member.name = rel
            tar.extract(member, staging, filter="data")


def converter_script(version: str | None = None) -> Path:
    """Path to llama.cpp's ``convert_hf_to_gguf.py`` matching the installed runtime."""
    return llama_cpp_dir(version) / "convert_hf_to_gguf.py"


def llama3_vocab_gguf(version: str | None = None) -> Path:
    """The real Llama 3 tokenizer vocabulary (128256 tokens) as a vocab-only GGUF."""
    return llama_cpp_dir(version) / "models" / "ggml-vocab-llama-bpe.gguf"


def llama31_chat_template(version: str | None = None) -> str:
    """Meta's Llama 3.1 8B Instruct chat template (Jinja)."""
    path = llama_cpp_dir(version) / "models" / "templates" / "meta-llama-Llama-3.1-8B-Instruct.jinja"
    return path.read_text(encoding="utf-8")


def gguf_py_path(version: str | None = None) -> Path:
    """The ``gguf-py`` folder that pairs with the converter (put it first on ``sys.path``)."""
    return llama_cpp_dir(version) / "gguf-py"


@contextlib.contextmanager
def vendored_gguf() -> Iterator[Any]:
    """Import llama.cpp's gguf-py for the duration of the block, then restore ``sys.modules``.

    gguf-py imports itself by its absolute name (``gguf``), so it must be importable as ``gguf``;
    any ``gguf`` already imported (the older registry wheel, say) is put back afterwards.
    """
    path = str(gguf_py_path())
    saved = {name: mod for name, mod in sys.modules.items() if name == "gguf" or name.startswith("gguf.")}
    for name in saved:
        del sys.modules[name]
    sys.path.insert(0, path)
    try:
        importlib.invalidate_caches()
        yield importlib.import_module("gguf")
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(path)
        for name in [n for n in sys.modules if n == "gguf" or n.startswith("gguf.")]:
            del sys.modules[name]
        sys.modules.update(saved)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(llama_cpp_dir())  # noqa: T201 - the path is this command's output
