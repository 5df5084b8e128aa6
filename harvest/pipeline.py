"""The harvest stage: sources -> pages -> sections -> gates -> dedup -> instructions -> Alpaca JSONL.

Everything is checkpointed in one SQLite file (``runs/<name>/data/state.sqlite``):

1. Pages are fetched by the crawler; each page's sections, with their gate verdicts, are stored in
   the same transaction that marks the page done. A SIGKILL loses at most the pages in flight.
2. Passed sections are deduplicated and turned into records in a fixed order (source, URL,
   section), each decision committed with its MinHash signature, so the LSH index is rebuilt
   exactly on resume and a repeated harvest never re-admits a near-duplicate.
3. ``train.jsonl`` and ``sources.jsonl`` are written atomically from the records table.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import statistics
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import jsonschema
from rich.progress import Progress

from bastion.atomic import write_jsonl
from bastion.errors import BadInputError, MissingResourceError
from bastion.manifest import file_sha256, now_iso
from bastion.ngrams import ngrams
from bastion.paths import SCHEMAS_DIR
from bastion.progress import progress_bar
from bastion.recipe import Recipe
from bastion.run_folder import RunFolder
from harvest.dedup import Deduper, DedupResult
from harvest.extract import Document, extract_html, extract_pdf, list_local_files, read_local_file
from harvest.gates import QualityGates, link_chars
from harvest.instructions import Instruction, instruction_diversity, make_instruction
from harvest.report import write_report
from harvest.sections import Section, chunk_sections, split_sections, unescape_markdown
from harvest.tokens import TokenCounter

log = logging.getLogger(__name__)

PROMPT_ROOM_TOKENS = 96  # chat headers, the instruction and the end-of-turn token

_SCHEMA = """
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY,
    source_rank INTEGER NOT NULL, source TEXT NOT NULL, url TEXT NOT NULL, title TEXT NOT NULL,
    heading TEXT NOT NULL, section_index INTEGER NOT NULL, chunk_index INTEGER NOT NULL,
    kind TEXT NOT NULL, text TEXT NOT NULL, fetched_at TEXT NOT NULL,
    passed INTEGER NOT NULL, reason TEXT, metrics TEXT NOT NULL,
    UNIQUE (source, url, section_index, chunk_index)
);
CREATE TABLE IF NOT EXISTS page_notes (
    source TEXT NOT NULL, url TEXT NOT NULL, note TEXT NOT NULL, PRIMARY KEY (source, url)
);
CREATE TABLE IF NOT EXISTS records (
    id INTEGER PRIMARY KEY, chunk_id INTEGER NOT NULL UNIQUE,
    instruction TEXT NOT NULL, input TEXT NOT NULL, output TEXT NOT NULL,
    intent TEXT NOT NULL, template_id TEXT NOT NULL,
    exact_hash TEXT NOT NULL, signature BLOB NOT NULL, content_hash TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS duplicates (
    chunk_id INTEGER PRIMARY KEY, kind TEXT NOT NULL, duplicate_of TEXT, similarity REAL
);
CREATE TABLE IF NOT EXISTS local_files (
    source TEXT NOT NULL, path TEXT NOT NULL, PRIMARY KEY (source, path)
);
CREATE TABLE IF NOT EXISTS page_texts (
    source TEXT NOT NULL, url TEXT NOT NULL, title TEXT NOT NULL, text TEXT NOT NULL, fetched_at TEXT NOT NULL,
    PRIMARY KEY (source, url)
);
CREATE TABLE IF NOT EXISTS heldout (url TEXT PRIMARY KEY);
"""


class ChunkStore:
    """The pipeline's tables inside the crawler's SQLite file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.conn = sqlite3.connect(path, timeout=30, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        # WAL + NORMAL survives a killed process (the guarantee the harvest needs); only an OS
        # crash can drop the last commits, which a rerun then redoes.
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.executescript(_SCHEMA)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def close(self) -> None:
        self.conn.close()


VERDICT_MEMO_SIZE = 4096  # (chunk text, page language) verdicts kept by a PageProcessor (cleared when full)


class PageProcessor:
    """Turns one page into gated chunks, written with the caller's connection (its transaction)."""

    _METRICS_JSON = json.JSONEncoder(default=float)  # json.dumps(..., default=float), built once

    def __init__(self, recipe: Recipe, count_tokens: Callable[[str], int], max_tokens: int) -> None:
        self.recipe = recipe
        self.count_tokens = count_tokens
        self.max_tokens = max_tokens
        self.gates = QualityGates(recipe.harvest["quality"])
        self.chunking = recipe.harvest["chunking"]
        self.source_rank = {s["name"]: i for i, s in enumerate(recipe.harvest["sources"])}
        # (text, language) -> (passed, reason, metrics JSON): a section repeated across a site's
        # pages gets the same verdict, and its metrics are encoded once
        self._verdicts: dict[tuple[str, str, float, tuple[int, int]], tuple[int, str | None, str]] = {}

    def document_chunks(self, doc: Document) -> list[Section]:
        sections = split_sections(doc, self.chunking["min_heading_level"])
        return chunk_sections(sections, self.max_tokens, self.chunking["overlap_tokens"], self.count_tokens)

    def verdict(
        self, text: str, language: tuple[str, float], links: tuple[int, int] = (0, 0)
    ) -> tuple[int, str | None, str]:
        """(passed, reason, metrics as JSON) of the gates on a chunk of a page in ``language``;
        ``links``: ``gates.link_chars`` of the chunk with its page's link texts."""
        key = (text, language[0], round(language[1], 4), links)  # all that the verdict reads of the page
        found = self._verdicts.get(key)
        if found is None:
            result = self.gates.check(text, language=language, links=links)
            found = (int(result.passed), result.reason, self._METRICS_JSON.encode(result.metrics))
            if len(self._verdicts) >= VERDICT_MEMO_SIZE:
                self._verdicts.clear()
            self._verdicts[key] = found
        return found

    def store(self, conn: sqlite3.Connection, doc: Document | None, *, source: str, url: str, fetched_at: str) -> None:
        """Gate one page's chunks and write them with ``conn`` (inside the caller's transaction)."""
        self.store_pages(conn, source, [(doc, url, fetched_at)])

    def store_pages(self, conn: sqlite3.Connection, source: str, pages: list[tuple[Document | None, str, str]]) -> None:
        """``store`` for several ``(document, url, fetched_at)`` pages of one source.

        Each step runs over all the pages before the next (languages, then chunks, then gates):
        the language model's tables, the tokenizer's and the gates' memos stay in the CPU cache
        for the whole batch. The rows are the same as storing the pages one by one.
        """
        found: list[tuple[Document, str, str]] = []
        empty: list[tuple[str, str, str]] = []
        for doc, url, fetched_at in pages:
            if doc is not None and doc.text.strip():
                found.append((doc, url, fetched_at))
            else:
                empty.append((source, url, "no_text"))
        if empty:
            conn.executemany("INSERT OR REPLACE INTO page_notes VALUES (?, ?, ?)", empty)
        conn.executemany(
            "INSERT OR REPLACE INTO page_texts VALUES (?, ?, ?, ?, ?)",
            [(source, url, doc.title or "", doc.text, fetched_at) for doc, url, fetched_at in found],
        )
        languages = [self.gates.page_language(doc.text) for doc, _, _ in found]
        chunked = [self.document_chunks(doc) for doc, _, _ in found]
        rank = self.source_rank.get(source, 0)
        rows = []
        for (doc, url, fetched_at), language, chunks in zip(found, languages, chunked, strict=True):
            by_section: Counter[int] = Counter()
            title = doc.title or ""
            anchors = Counter(doc.links)
            for chunk in chunks:
                chunk_index = by_section[chunk.index]
                by_section[chunk.index] += 1
                place = (rank, source, url, title, chunk.heading, chunk.index, chunk_index)
                verdict = self.verdict(chunk.text, language, link_chars(chunk.text, anchors))
                rows.append((*place, chunk.kind, chunk.text, fetched_at, *verdict))
        conn.executemany(
            "INSERT OR REPLACE INTO chunks (source_rank, source, url, title, heading, section_index, "
            "chunk_index, kind, text, fetched_at, passed, reason, metrics) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )


def max_record_tokens(recipe: Recipe, count_tokens: Callable[[str], int]) -> int:
    """Most tokens a record's output may have so that the whole chat sample fits sequence_len."""
    configured = recipe.harvest["chunking"]["max_tokens"]
    if configured is not None:
        return int(configured)
    room = count_tokens(recipe.system_prompt) + PROMPT_ROOM_TOKENS
    budget = recipe.train["sequence_len"] - room
    if budget < 32:
        raise BadInputError(
            f"{recipe.path}: train.sequence_len = {recipe.train['sequence_len']} leaves "
            f"{budget} tokens for a record after the system prompt; raise sequence_len "
            "or shorten system_prompt"
        )
    return budget


def run_harvest(recipe: Recipe, folder: RunFolder, **_: Any) -> dict[str, Any]:
    """Stage entry point: harvest every source, then dedup, write the data and the report."""
    from bastion.models import load_tokenizer

    if not recipe.harvest["sources"]:
        raise BadInputError(f"{recipe.path}: harvest.sources is empty; add at least one source")
    folder.data_dir.mkdir(parents=True, exist_ok=True)
    kinds = Counter(s["kind"] for s in recipe.harvest["sources"])
    log.info(
        "harvest: %d source(s) (%s); loading the tokenizer of %s for exact token counts",
        len(recipe.harvest["sources"]),
        ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items())),
        recipe.base_model["id"],
    )
    count_tokens = TokenCounter(load_tokenizer(recipe))  # exact counts, by the tokenizer itself
    processor = PageProcessor(recipe, count_tokens, max_record_tokens(recipe, count_tokens))
    state_path = folder.harvest_state
    store = ChunkStore(state_path)
    try:
        with harvest_progress() as progress:
            crawl_stats = harvest_sources(recipe, processor, state_path, store, progress)
            decide_records(recipe, store, progress)
        counts = write_outputs(recipe, store, folder)
        stats = collect_stats(recipe, store, crawl_stats)
    finally:
        store.close()
    write_report(folder, stats, histograms=recipe.harvest["output"]["histograms"])
    kept = stats["records"]["kept"]
    if kept < recipe.harvest["output"]["min_records"]:
        raise BadInputError(
            f"{recipe.path}: only {kept} records survived the harvest (harvest.output.min_records = "
            f"{recipe.harvest['output']['min_records']}); see {folder.quality_md} for what was "
            "rejected and why"
        )
    log.info("harvest: %d records -> %s (report: %s)", kept, folder.train_data, folder.quality_md)
    return {"records": kept, "train_sha256": counts["train_sha256"], "pages": stats["pages"]["fetched"]}


def harvest_progress() -> Progress:
    """The harvest's progress display (one bar per source, then dedup)."""
    return progress_bar()


def harvest_sources(
    recipe: Recipe,
    processor: PageProcessor,
    state_path: Path,
    store: ChunkStore,
    progress: Progress | None = None,
) -> list[dict[str, Any]]:
    """Harvest every source; returns their crawl statistics, in the recipe's order.

    Local folders are read first, one after another; then every web and served source is crawled
    at once (``crawl.crawl_sources``: one politeness for all of them, ``max_concurrency`` requests
    in flight in all).
    """
    sources = recipe.harvest["sources"]
    tasks = {s["name"]: progress.add_task(f"{s['name']}", total=s["max_pages"]) if progress else None for s in sources}

    def tick(name: str, message: str = "") -> None:
        task = tasks.get(name)
        if progress is not None and task is not None:
            progress.advance(task)

    stats: dict[str, dict[str, Any]] = {}
    for source in sources:
        if source["kind"] == "local":
            stats[source["name"]] = harvest_local(recipe, source, processor, store, partial(tick, source["name"]))
    crawled = [s for s in sources if s["kind"] != "local"]
    if crawled:
        from harvest.crawl import crawl_sources

        with ExitStack() as stack:
            effective = [stack.enter_context(served_source(recipe, s)) if s["kind"] == "served" else s for s in crawled]

            def on_page(page: Any, conn: sqlite3.Connection) -> None:
                doc = page_document(page, page.source)
                processor.store(conn, doc, source=page.source, url=page.url, fetched_at=page.fetched_at)

            log.info(
                "harvest: crawling %d source(s) at once: %s", len(effective), ", ".join(s["name"] for s in effective)
            )
            for source, result in zip(
                crawled,
                crawl_sources(
                    effective,
                    recipe.harvest["politeness"],
                    recipe.harvest["user_agent"],
                    state_path,
                    on_page,
                    progress=tick,
                ),
                strict=True,
            ):
                stats[source["name"]] = stats_dict(result)
    return [stats[s["name"]] for s in sources]


def page_document(page: Any, source: str) -> Document | None:
    """Extract a fetched page (HTML or PDF)."""
    if "pdf" in (page.content_type or ""):
        return extract_pdf(page.body, page.url, source)
    return extract_html(page.text or "", page.url, source)


@contextmanager
def served_source(recipe: Recipe, source: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Serve a local folder on loopback and describe it as a web source for the crawler."""
    from harvest.serve import serve_folder

    root = recipe.resolve_path(source["path"] or "")
    if not root.is_dir():
        raise MissingResourceError(
            f"{recipe.path}: harvest.sources[{source['name']}].path: folder {root} "
            "does not exist (a 'served' source needs a folder of HTML pages)"
        )
    port = stable_port(f"{recipe.name}/{source['name']}")
    with serve_folder(root, host="127.0.0.1", port=port) as base_url:
        host = base_url.split("://", 1)[1].rstrip("/")
        yield {
            **source,
            "kind": "web",
            "start_urls": [base_url.rstrip("/") + "/"],
            "sitemaps": [],
            "allowed_domains": [host.split(":")[0], host],
        }


def stable_port(key: str) -> int:
    """A port derived from the source, so that a resumed harvest sees the same URLs."""
    return 20000 + int(hashlib.sha256(key.encode()).hexdigest(), 16) % 20000


LOCAL_BATCH = 64  # local files read and extracted, then gated and stored in one transaction


def harvest_local(
    recipe: Recipe,
    source: dict[str, Any],
    processor: PageProcessor,
    store: ChunkStore,
    tick: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Read local files (HTML, Markdown, text, PDF) in sorted order, checkpointing each batch.

    Files go in batches of ``LOCAL_BATCH``: all of a batch is extracted first, then gated and
    stored in one transaction that also marks its files done. Extraction and the gates each keep
    their working set in the CPU cache for a whole batch (interleaving them page by page costs
    about a tenth more time), and there is one commit per batch. A killed harvest loses at most
    the batch in flight, which a rerun reads again.
    """
    root = recipe.resolve_path(source["path"] or "")
    if not root.exists():
        raise MissingResourceError(f"{recipe.path}: source '{source['name']}': path {root} does not exist")
    files = list_local_files(root, source["include"], allow_pdf=source["allow_pdf"])[: source["max_pages"]]
    done = {row[0] for row in store.conn.execute("SELECT path FROM local_files WHERE source = ?", (source["name"],))}
    todo = [path for path in files if str(path) not in done]
    for start in range(0, len(todo), LOCAL_BATCH):
        paths = todo[start : start + LOCAL_BATCH]
        pages = [(read_local_file(path, source["name"]), path.as_uri(), now_iso()) for path in paths]
        with store.transaction() as conn:
            processor.store_pages(conn, source["name"], pages)
            conn.executemany(
                "INSERT OR IGNORE INTO local_files VALUES (?, ?)", [(source["name"], str(p)) for p in paths]
            )
        if tick is not None:
            for path in paths:
                tick(str(path))
    return {"fetched": len(files), "not_followed": {}, "requested_failed": {}, "per_host": {"local": len(files)}}


def stats_dict(stats: Any) -> dict[str, Any]:
    """CrawlStats as a plain dict."""
    return stats if isinstance(stats, dict) else dict(stats.to_dict())


def choose_heldout(recipe: Recipe, store: ChunkStore) -> list[str]:
    """Pick the held-out pages (whole pages, by URL) and store the choice; decisions made against
    another choice (the harvest gained or lost pages since) are dropped and made again.

    Candidates are the pages with at least one passing section. A page is held out when the hash
    of the seed and its URL, read as a number in [0, 1), is below the fraction: the choice depends
    neither on crawl order nor on which other pages exist, so adding a source keeps the split.
    When the fraction is above 0 and no page falls below it, the page with the smallest hash is
    held out; with a single candidate, none is.
    """
    cfg = recipe.harvest["heldout"]
    pages = store.conn.execute("SELECT DISTINCT source, url FROM chunks WHERE passed = 1 ORDER BY url").fetchall()
    urls = [url for _, url in pages]
    keys = {url: split_key(recipe, source, url) for source, url in pages}
    digests = {url: hashlib.sha256(f"{cfg['seed']}:{keys[url]}".encode()).hexdigest() for url in urls}
    rank = {url: int(digest[:16], 16) / 2**64 for url, digest in digests.items()}  # uniform in [0, 1)
    chosen = sorted(url for url in urls if rank[url] < cfg["fraction"])
    if cfg["fraction"] > 0 and not chosen and len(urls) > 1:
        chosen = [min(urls, key=rank.__getitem__)]
    if len(chosen) == len(urls):  # never hold out everything
        chosen = sorted(sorted(chosen, key=rank.__getitem__)[:-1])
    count = len(chosen)
    stored = [row[0] for row in store.conn.execute("SELECT url FROM heldout ORDER BY url")]
    if stored != chosen:
        with store.transaction() as conn:
            conn.execute("DELETE FROM heldout")
            conn.executemany("INSERT INTO heldout VALUES (?)", [(url,) for url in chosen])
            conn.execute("DELETE FROM records")
            conn.execute("DELETE FROM duplicates")
        if stored:
            log.info("harvest: the held-out pages changed (%d -> %d); records are decided again", len(stored), count)
    return chosen


def split_key(recipe: Recipe, source: str, url: str) -> str:
    """What the held-out split hashes for a page: the source's name and, for local and served folders,
    the file's path inside it (not where the folder sits on disk, nor the loopback port), else the
    URL's host, path and query (not its scheme or port)."""
    kinds = {s["name"]: s for s in recipe.harvest["sources"]}
    config = kinds.get(source, {})
    if config.get("kind") == "local" and url.startswith("file://"):
        root = recipe.resolve_path(config["path"] or "")
        path = Path(urllib.parse.unquote(urllib.parse.urlsplit(url).path))
        return f"{source}:{path.relative_to(root).as_posix() if path.is_relative_to(root) else path.name}"
    parts = urllib.parse.urlsplit(url)
    if config.get("kind") == "served":
        return f"{source}:{parts.path}"
    return f"{source}:{parts.hostname}{parts.path}" + (f"?{parts.query}" if parts.query else "")


class HeldoutOverlap:
    """Word n-grams of the held-out pages; ``match`` names the page a text shares one with."""

    def __init__(self, store: ChunkStore, urls: list[str], n: int) -> None:
        self.n = n
        self.owner: dict[tuple[str, ...], str] = {}
        for url in urls:
            for (text,) in store.conn.execute("SELECT text FROM page_texts WHERE url = ?", (url,)):
                for gram in ngrams(text, n):
                    self.owner.setdefault(gram, url)

    def match(self, text: str) -> str | None:
        if not self.owner:
            return None
        for gram in ngrams(text, self.n):
            url = self.owner.get(gram)
            if url is not None:
                return url
        return None


DECISION_BATCH = 256  # chunks decided per transaction


def decide_records(recipe: Recipe, store: ChunkStore, progress: Progress | None = None) -> None:
    """Dedup passed chunks in a fixed order and make an Alpaca record of each unique one.

    Decisions are committed in batches together with the records and their signatures; after a
    kill, undecided chunks are decided again against the index rebuilt from committed records,
    which gives the same outcome as an uninterrupted run.
    """
    cfg, ins = recipe.harvest["dedup"], recipe.harvest["instructions"]
    held_out = choose_heldout(recipe, store)
    overlap = HeldoutOverlap(store, held_out, recipe.harvest["heldout"]["ngram"])
    deduper = Deduper(cfg["threshold"], cfg["num_perm"], cfg["bands"], cfg["rows"], cfg["shingle_size"])
    deduper.load(store.conn.execute("SELECT CAST(chunk_id AS TEXT), exact_hash, signature FROM records ORDER BY id"))
    # sorted here rather than by SQLite, whose sorter would copy every chunk's text
    ordered = sorted(
        store.conn.execute(
            "SELECT source_rank, url, section_index, chunk_index, id, title, heading, kind, text FROM chunks "
            "WHERE passed = 1 AND id NOT IN (SELECT chunk_id FROM records) "
            "AND id NOT IN (SELECT chunk_id FROM duplicates) AND url NOT IN (SELECT url FROM heldout)"
        )
    )
    pending = [
        (cid, title, heading, index, part, kind, text) for _, _, index, part, cid, title, heading, kind, text in ordered
    ]
    task = progress.add_task("dedup + instructions", total=len(pending)) if progress else None
    for start in range(0, len(pending), DECISION_BATCH):
        batch = pending[start : start + DECISION_BATCH]
        decisions = Decisions(ins)
        for row in batch:
            if not decisions.overlaps_heldout(overlap, row):
                decisions.decide(deduper, row, cfg["enabled"])
        with store.transaction() as conn:
            decisions.write(conn)
        if progress is not None and task is not None:
            progress.advance(task, len(batch))


class Decisions:
    """One batch of decisions (duplicates and records), written in one go; a chunk is decided
    once it is in either table.

    Dedup runs row by row (each unique text is admitted before the next row is checked); the
    instructions of the admitted rows are made afterwards, for the whole batch at once, so that
    the dedup index and the keyword tables each stay in the CPU cache while they are used.
    """

    def __init__(self, instructions: dict[str, Any]) -> None:
        self.instructions = instructions
        self.duplicates: list[tuple[Any, ...]] = []
        self.admitted: list[tuple[tuple[Any, ...], DedupResult | None]] = []

    def overlaps_heldout(self, overlap: HeldoutOverlap, row: tuple[Any, ...]) -> bool:
        """Drop (as a ``heldout`` duplicate) a chunk that shares a word sequence with a held-out page."""
        _, title, heading, *_, text = row
        url = overlap.match(f"{title}\n{heading}\n{text}")
        if url is not None:
            self.duplicates.append((row[0], "heldout", url, None))
        return url is not None

    def decide(self, deduper: Deduper, row: tuple[Any, ...], dedup_enabled: bool) -> None:
        """Decide one chunk row; a unique one is admitted into ``deduper`` at once."""
        cid, text = row[0], row[-1]
        result = deduper.check(str(cid), text) if dedup_enabled else None
        if result is not None and result.kind != "unique":
            self.duplicates.append((cid, result.kind, result.duplicate_of, result.similarity))
            return
        self.admitted.append((row, result))
        if result is not None:
            deduper.add(str(cid), result)

    def records(self) -> list[tuple[Any, ...]]:
        """The admitted rows as ``records`` rows, in decision order."""
        ins = self.instructions
        rows = []
        for (cid, title, heading, index, part, kind, text), result in self.admitted:
            section = Section(heading=heading, level=2, text=text, index=index, page_title=title, kind=kind, part=part)
            instruction = make_instruction(section, ins["persona"], ins["intents"], ins["seed"])
            output = unescape_markdown(text)
            rows.append(
                (
                    cid,
                    instruction.instruction,
                    "",
                    output,
                    instruction.intent,
                    instruction.template_id,
                    result.exact_hash if result else "",
                    result.signature if result else b"",
                    hashlib.sha256(output.encode()).hexdigest(),
                )
            )
        return rows

    def write(self, conn: sqlite3.Connection) -> None:
        """Store the batch with ``conn`` (inside the caller's transaction); records in decision order."""
        conn.executemany("INSERT OR REPLACE INTO duplicates VALUES (?, ?, ?, ?)", self.duplicates)
        conn.executemany(
            "INSERT OR REPLACE INTO records (chunk_id, instruction, input, output, intent, template_id, "
            "exact_hash, signature, content_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            self.records(),
        )


def write_outputs(recipe: Recipe, store: ChunkStore, folder: RunFolder) -> dict[str, Any]:
    """Write train.jsonl (Alpaca records only, schema-checked) and sources.jsonl, atomically."""
    record_errors = schema_errors(json.loads((SCHEMAS_DIR / "alpaca.schema.json").read_text()))
    rows = store.conn.execute(
        "SELECT r.instruction, r.input, r.output, c.url, c.title, c.heading, c.source, c.fetched_at, "
        "r.content_hash, r.intent, r.template_id FROM records r JOIN chunks c ON c.id = r.chunk_id "
        "ORDER BY c.source_rank, c.url, c.section_index, c.chunk_index"
    ).fetchall()
    train, sources = [], []
    for instr, inp, out, url, title, heading, source, fetched, chash, intent, template in rows:
        record = {"instruction": instr, "input": inp, "output": out}
        errors = record_errors(record)
        if errors:
            raise BadInputError(
                f"record from {url} ({heading}) does not match schemas/alpaca.schema.json: {'; '.join(errors)}"
            )
        train.append(record)
        sources.append(
            {
                "url": url,
                "title": title,
                "section": heading,
                "source": source,
                "fetched_at": fetched,
                "content_hash": chash,
                "intent": intent,
                "template": template,
            }
        )
    heldout = [
        {
            "url": url,
            "title": title,
            "source": source,
            "fetched_at": fetched,
            "content_hash": hashlib.sha256(text.encode()).hexdigest(),
            "words": len(text.split()),
            "text": text,
        }
        for source, url, title, text, fetched in store.conn.execute(
            "SELECT p.source, p.url, p.title, p.text, p.fetched_at FROM page_texts p JOIN heldout h ON h.url = p.url "
            "ORDER BY p.url"
        )
    ]
    write_jsonl(folder.train_data, train)
    write_jsonl(folder.sources, sources)
    write_jsonl(folder.heldout, heldout)
    return {"records": len(train), "train_sha256": file_sha256(folder.train_data)}


_ANNOTATIONS = {"$schema", "$id", "$comment", "title", "description", "default", "examples"}


def schema_errors(schema: dict[str, Any]) -> Callable[[Any], list[str]]:
    """``record -> sorted jsonschema (2020-12) error messages``; a record that a plain check of a
    flat object schema accepts is not run through jsonschema (the same answer, much faster)."""
    validator = jsonschema.Draft202012Validator(schema)
    plain = _flat_string_object(schema)

    def errors(record: Any) -> list[str]:
        if plain is not None and plain(record):
            return []
        return sorted(e.message for e in validator.iter_errors(record))

    return errors


def _flat_string_object(schema: dict[str, Any]) -> Callable[[Any], bool] | None:
    """For a schema of an object with string properties (``type``, ``required``,
    ``additionalProperties: false``, ``minLength``/``maxLength``, annotations), a check that is
    true only for records the schema accepts; None for any other schema."""
    if set(schema) - _ANNOTATIONS - {"type", "additionalProperties", "required", "properties"}:
        return None
    props, required = schema.get("properties", {}), schema.get("required", [])
    extra_allowed = schema.get("additionalProperties", True)
    if schema.get("type") != "object" or extra_allowed not in (True, False) or not isinstance(props, dict):
        return None
    bounds: dict[str, tuple[int, float]] = {}
    for name, prop in props.items():
        if not isinstance(prop, dict) or set(prop) - _ANNOTATIONS - {"type", "minLength", "maxLength"}:
            return None
        low, high = prop.get("minLength", 0), prop.get("maxLength", float("inf"))
        if prop.get("type") != "string" or not isinstance(low, int) or not isinstance(high, int | float):
            return None
        bounds[name] = (low, high)
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        return None

    def accepts(record: Any) -> bool:
        if not isinstance(record, dict) or any(r not in record for r in required):
            return False
        for key, value in record.items():
            if key not in bounds:
                if extra_allowed:
                    continue
                return False
            low, high = bounds[key]
            if not isinstance(value, str) or not low <= len(value) <= high:
                return False
        return True

    return accepts


def collect_stats(recipe: Recipe, store: ChunkStore, crawl_stats: list[dict[str, Any]]) -> dict[str, Any]:
    """Everything quality.json reports."""
    conn = store.conn
    not_followed: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    per_domain: Counter[str] = Counter()
    fetched = 0
    for s in crawl_stats:
        fetched += int(s.get("fetched", 0))
        not_followed.update({str(k): int(v) for k, v in (s.get("not_followed") or {}).items()})
        failed.update({str(k): int(v) for k, v in (s.get("requested_failed") or {}).items()})
        per_domain.update({str(k): int(v) for k, v in (s.get("per_host") or {}).items()})
    rejected = Counter(
        dict(conn.execute("SELECT reason, COUNT(*) FROM chunks WHERE passed = 0 GROUP BY reason").fetchall())
    )
    dup = dict(conn.execute("SELECT kind, COUNT(*) FROM duplicates GROUP BY kind").fetchall())
    rows = conn.execute(
        "SELECT c.source, c.metrics, r.intent, r.template_id, r.output FROM records r "
        "JOIN chunks c ON c.id = r.chunk_id"
    ).fetchall()
    words = [len(out.split()) for *_, out in rows]
    grades = [json.loads(m).get("grade") for _, m, *_ in rows]
    grades_known = [g for g in grades if isinstance(g, int | float)]
    instructions = [Instruction(instruction="", intent=i, template_id=t) for _, _, i, t, _ in rows]
    return {
        "recipe": recipe.name,
        "generated": now_iso(),
        "pages": {
            "fetched": fetched,
            "not_followed": dict(sorted(not_followed.items())),  # links never requested, by reason
            "failed": dict(sorted(failed.items())),  # requested, no page: by HTTP status or error
            "per_domain": dict(per_domain),
            "no_text": conn.execute("SELECT COUNT(*) FROM page_notes").fetchone()[0],
        },
        "sections": {
            "total": conn.execute("SELECT COUNT(DISTINCT url || '#' || section_index) FROM chunks").fetchone()[0],
            "chunks": conn.execute("SELECT COUNT(*) FROM chunks").fetchone()[0],
            "passed": conn.execute("SELECT COUNT(*) FROM chunks WHERE passed = 1").fetchone()[0],
            "rejected": dict(rejected),
        },
        "dedup": {
            "exact": dup.get("exact", 0),
            "near": dup.get("near", 0),
            "threshold": recipe.harvest["dedup"]["threshold"],
        },
        "heldout": {
            "fraction": recipe.harvest["heldout"]["fraction"],
            "pages": conn.execute("SELECT COUNT(*) FROM heldout").fetchone()[0],
            "words": sum(
                len(text.split())
                for (text,) in conn.execute("SELECT text FROM page_texts WHERE url IN (SELECT url FROM heldout)")
            ),
            "sections_of_heldout_pages": conn.execute(
                "SELECT COUNT(*) FROM chunks WHERE passed = 1 AND url IN (SELECT url FROM heldout)"
            ).fetchone()[0],
            "overlapping_sections_dropped": dup.get("heldout", 0),
        },
        "records": {
            "kept": len(rows),
            "per_source": dict(Counter(r[0] for r in rows)),
            "words_min": min(words, default=0),
            "words_max": max(words, default=0),
            "words_median": statistics.median(words) if words else 0,
            "grade_median": round(statistics.median(grades_known), 1) if grades_known else None,
        },
        "diversity": instruction_diversity(instructions),
        "word_counts": words,
        "grades": grades_known,
    }
