"""Libraries first: no module of ours reaches into the private internals of the pinned text libraries.

A copy or a patch of a library's private names (textstat's syllable loop, py3langid's automaton,
datasketch's permutations, the tokenizer's pre-tokenizer) breaks silently when the library is
upgraded. The check reads every module with ``ast``: ``from lib.x import _y``, ``import
lib._x``, ``lib.x._y`` (through any name bound to the library or to something imported from
it), and a subclass of a library class that overrides or reads one of its private names.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO

LIBRARIES = ("textstat", "py3langid", "datasketch", "tokenizers")
PACKAGES = ("harvest", "evals", "export", "bastion", "train")


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _library(module: str) -> bool:
    return module.split(".")[0] in LIBRARIES


def _resolve(module: str, name: str | None = None) -> Any:
    """The object ``from module import name`` binds (None when it cannot be imported here)."""
    try:
        found = importlib.import_module(module)
        return getattr(found, name) if name else found
    except (ImportError, AttributeError):
        return None


def private_uses(source: str, filename: str = "<code>") -> list[str]:
    """Where ``source`` uses a private name of one of ``LIBRARIES``: ``file:line: what``."""
    tree = ast.parse(source, filename)
    bound: dict[str, Any] = {}  # local name -> library module or object it is bound to
    found: list[str] = []

    def report(node: ast.AST, what: str) -> None:
        found.append(f"{filename}:{getattr(node, 'lineno', 0)}: {what}")

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _library(alias.name):
                    if any(_private(part) for part in alias.name.split(".")):
                        report(node, f"import {alias.name}")
                    local = alias.asname or alias.name.split(".")[0]
                    bound[local] = _resolve(alias.name if alias.asname else local)
        elif isinstance(node, ast.ImportFrom) and node.module and _library(node.module):
            if any(_private(part) for part in node.module.split(".")):
                report(node, f"from {node.module} import ...")
            for alias in node.names:
                if _private(alias.name):
                    report(node, f"from {node.module} import {alias.name}")
                bound[alias.asname or alias.name] = _resolve(node.module, alias.name)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            root: ast.AST = node.value
            while isinstance(root, ast.Attribute):
                root = root.value
            if isinstance(root, ast.Name) and root.id in bound:
                report(node, f"{ast.unparse(node)}")
        elif isinstance(node, ast.ClassDef):
            bases = [bound[b.id] for b in node.bases if isinstance(b, ast.Name) and b.id in bound]
            for item in ast.walk(node):
                name = None
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                    name = item.name
                elif isinstance(item, ast.Attribute) and isinstance(item.value, ast.Name | ast.Call):
                    name = item.attr  # self._x, super()._x
                if name and _private(name) and any(hasattr(base, name) for base in bases if base is not None):
                    report(item, f"class {node.name} uses {name} of its library base")
    return found


def _modules() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (REPO / package).rglob("*.py") if ".venv" not in p.parts)


def test_no_module_uses_private_names_of_the_pinned_libraries() -> None:
    assert len(_modules()) > 20
    problems = [hit for path in _modules() for hit in private_uses(path.read_text(), str(path.relative_to(REPO)))]
    assert not problems, "private library internals used (call the public API instead):\n" + "\n".join(problems)


@pytest.mark.parametrize(
    "code",
    [
        "from textstat.backend.counts import _count_syllables",
        "from textstat.backend.counts._count_syllables import count_syllables",
        "import textstat.backend.counts._count_syllables as cs",
        "import textstat\ntextstat.backend.counts._count_syllables.get_cmudict = None",
        "from datasketch import MinHashLSH\nkey = MinHashLSH._byteswap",
        "import datasketch.minhash as m\nm._fmix(1, 64)",
        "from py3langid.langid import LanguageIdentifier\n"
        "class Fast(LanguageIdentifier):\n    def _raw_score(self, text):\n        return self._rowbase",
        "from tokenizers import Tokenizer as T\nT._private_thing",
    ],
)
def test_the_check_finds_private_uses(code: str) -> None:
    assert private_uses(code)


def test_the_check_allows_public_uses() -> None:
    code = (
        "import textstat\nfrom datasketch import LeanMinHash, MinHash, MinHashLSH\n"
        "from py3langid.langid import MODEL_FILE, LanguageIdentifier\n"
        "textstat.flesch_kincaid_grade('x')\nMinHash(num_perm=8).update_batch([b'a'])\n"
        "LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)\n"
        "class Mine:\n    def _helper(self):\n        return self._state\n"
        "print(textstat.__version__)\n"
    )
    assert private_uses(code) == []
