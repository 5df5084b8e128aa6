"""Local sources are harvested in batches: the same rows as one file at a time, and a failure
inside a batch loses only that batch, which a rerun completes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import REPO

from bastion.models import load_tokenizer
from bastion.recipe import load_recipe
from harvest import pipeline
from harvest.pipeline import ChunkStore, PageProcessor, harvest_local, max_record_tokens
from harvest.tokens import TokenCounter

CORPUS = REPO / "recipes" / "corpus" / "cloudsec-mini"
CHUNK_COLUMNS = "source, url, title, heading, section_index, chunk_index, kind, text, passed, reason, metrics"


@pytest.fixture(scope="module")
def recipe() -> Any:
    return load_recipe("tiny-cpu.yaml")


@pytest.fixture(scope="module")
def count_tokens(recipe: Any) -> TokenCounter:
    return TokenCounter(load_tokenizer(recipe))


def local_source(max_pages: int = 1000) -> dict[str, Any]:
    return {
        "name": "local",
        "kind": "local",
        "path": str(CORPUS),
        "include": ["**/*.html"],
        "allow_pdf": False,
        "max_pages": max_pages,
    }


def run_local(recipe: Any, count_tokens: TokenCounter, state: Path) -> list[tuple[Any, ...]]:
    processor = PageProcessor(recipe, count_tokens, max_record_tokens(recipe, count_tokens))
    store = ChunkStore(state)
    try:
        harvest_local(recipe, local_source(), processor, store)
        query = f"SELECT {CHUNK_COLUMNS} FROM chunks ORDER BY url, section_index, chunk_index"
        return store.conn.execute(query).fetchall()
    finally:
        store.close()


def test_batches_store_the_same_rows_as_single_files(
    recipe: Any, count_tokens: TokenCounter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pipeline, "LOCAL_BATCH", 1)
    single = run_local(recipe, count_tokens, tmp_path / "single.sqlite")
    monkeypatch.setattr(pipeline, "LOCAL_BATCH", 4)
    batched = run_local(recipe, count_tokens, tmp_path / "batched.sqlite")
    assert len(single) > 20
    assert batched == single


def test_a_failed_batch_is_lost_alone_and_a_rerun_completes_it(
    recipe: Any, count_tokens: TokenCounter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pipeline, "LOCAL_BATCH", 3)
    files = sorted(p for p in CORPUS.glob("**/*.html") if p.is_file())
    assert len(files) > 7
    broken = files[4]  # in the second batch
    real_read = pipeline.read_local_file

    def failing_read(path: Path, source: str) -> Any:
        if path == broken:
            raise OSError(f"{path}: disk error")
        return real_read(path, source)

    state = tmp_path / "state.sqlite"
    monkeypatch.setattr(pipeline, "read_local_file", failing_read)
    with pytest.raises(OSError, match="disk error"):
        run_local(recipe, count_tokens, state)
    store = ChunkStore(state)
    done = {row[0] for row in store.conn.execute("SELECT path FROM local_files")}
    urls = {row[0] for row in store.conn.execute("SELECT DISTINCT url FROM chunks")}
    store.close()
    assert done == {str(p) for p in files[:3]}  # the first batch only, nothing of the second
    assert urls <= {p.as_uri() for p in files[:3]}

    monkeypatch.setattr(pipeline, "read_local_file", real_read)
    resumed = run_local(recipe, count_tokens, state)
    uninterrupted = run_local(recipe, count_tokens, tmp_path / "clean.sqlite")
    assert resumed == uninterrupted
