"""Paths in a recipe and what the local and served sources read: nothing outside the recipe's
folder unless written as an absolute path, never a hidden file, only documentation types, no
directory listings, and no traceback when a client of the served folder hangs up."""

from __future__ import annotations

import http.client
import logging
import socket
import struct
import time
from pathlib import Path

import pytest
from conftest import REPO

from bastion.recipe import RecipeError, load_recipe, path_problem, source_path_violations
from harvest.extract import list_local_files, read_local_file
from harvest.serve import serve_folder

CORPUS = REPO / "recipes" / "corpus" / "cloudsec-mini"
PAGE = "<html><head><title>{0}</title></head><body><main><h1>{0}</h1><p>{1}</p></main></body></html>"


def recipe_with_source(folder: Path, source: str, name: str = "recipe.yaml") -> Path:
    path = folder / name
    path.write_text(
        "name: paths\nbase_model: {id: m}\nsystem_prompt: s\nharvest:\n  sources:\n" + f"    - {source}\n",
        encoding="utf-8",
    )
    return path


def problems(path: Path, *checks: object) -> dict[str, str]:
    with pytest.raises(RecipeError) as info:
        load_recipe(path, checks=list(checks))  # type: ignore[arg-type]
    return {v.path: v.message for v in info.value.violations}


# -- the recipe ----------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["../docs", "../../../../../etc", "docs/../../x", "./../x"])
def test_a_relative_path_may_not_climb_out(tmp_path: Path, value: str) -> None:
    (tmp_path / "sub").mkdir()
    path = recipe_with_source(tmp_path / "sub", f"{{name: d, kind: local, path: '{value}'}}")
    found = problems(path)
    assert "climbs out of the recipe's folder" in found["harvest.sources[0].path"]
    assert str(tmp_path / "sub") in found["harvest.sources[0].path"]


def test_absolute_and_home_paths_are_the_users_choice(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# A\n\ntext\n")
    (tmp_path / "r").mkdir()
    path = recipe_with_source(tmp_path / "r", f"{{name: d, kind: local, path: '{docs}'}}")
    recipe = load_recipe(path, checks=[source_path_violations])
    assert recipe.resolve_path(recipe.harvest["sources"][0]["path"]) == docs
    assert path_problem("~/docs", tmp_path) is None
    assert path_problem("docs/./guide", tmp_path) is None


@pytest.mark.parametrize(
    "value", [".env", "corpus/.git", "~/.ssh", "~/.aws/credentials", "/home/u/.config/x", ".hidden/docs"]
)
def test_hidden_names_are_refused(tmp_path: Path, value: str) -> None:
    path = recipe_with_source(tmp_path, f"{{name: d, kind: local, path: '{value}'}}")
    assert "hidden file or folder" in problems(path)["harvest.sources[0].path"]


def test_hidden_or_climbing_paths_elsewhere_in_the_recipe(tmp_path: Path) -> None:
    path = recipe_with_source(
        tmp_path, "{name: d, kind: local, path: docs, include: ['../**/*.md', '**/.env', '/etc/*']}"
    )
    path.write_text(
        path.read_text() + "eval:\n  task_paths: [../tasks, .tasks]\n  banks: {mcq: .x/mcq.jsonl, open: ../o.jsonl}\n"
    )
    found = problems(path)
    assert "climbs out" in found["harvest.sources[0].include[0]"]
    assert "hidden" in found["harvest.sources[0].include[1]"]
    assert "relative to the source's folder" in found["harvest.sources[0].include[2]"]
    assert "climbs out" in found["eval.task_paths[0]"] and "hidden" in found["eval.task_paths[1]"]
    assert "hidden" in found["eval.banks.mcq"] and "climbs out" in found["eval.banks.open"]


def test_missing_source_paths_are_the_harvest_stages_check(tmp_path: Path) -> None:
    (tmp_path / "site").mkdir()
    (tmp_path / "page.html").write_text("<html></html>")
    path = tmp_path / "recipe.yaml"
    path.write_text(
        "name: paths\nbase_model: {id: m}\nsystem_prompt: s\nharvest:\n  sources:\n"
        "    - {name: a, kind: local, path: nowhere}\n"
        "    - {name: b, kind: served, path: site}\n"
        "    - {name: c, kind: served, path: page.html}\n"
        "    - {name: d, kind: served, path: missing}\n"
    )
    load_recipe(path)  # the recipe alone is fine: another machine may hold the files
    found = problems(path, source_path_violations)
    assert "does not exist" in found["harvest.sources[0].path"]
    assert "has no index.html" in found["harvest.sources[1].path"]
    assert "is not a folder" in found["harvest.sources[2].path"]
    assert "does not exist" in found["harvest.sources[3].path"]
    shipped = load_recipe("tiny-cpu.yaml", checks=[source_path_violations])
    assert shipped.harvest["sources"][0]["kind"] == "served"


# -- the local source ----------------------------------------------------------------------------


def make_tree(root: Path, outside: Path) -> None:
    (root / "guide").mkdir(parents=True)
    (root / ".git").mkdir()
    (root / "guide" / ".drafts").mkdir()
    (root / "guide" / "a.md").write_text("# A\n\nVisible text.\n")
    (root / "guide" / "b.html").write_text(PAGE.format("B", "visible"))
    (root / "guide" / "c.pdf").write_bytes(b"%PDF-1.4\n")
    (root / "guide" / "style.css").write_text("body {}")
    (root / ".env").write_text("SECRET=1\n")
    (root / ".git" / "notes.md").write_text("# secret\n")
    (root / "guide" / ".drafts" / "d.md").write_text("# secret draft\n")
    (root / "guide" / ".hidden.md").write_text("# secret\n")
    outside.mkdir(exist_ok=True)
    (outside / "passwd.txt").write_text("root:x:0:0\n")
    (root / "guide" / "link.txt").symlink_to(outside / "passwd.txt")


def test_local_listing_skips_hidden_files_other_types_and_links_out(tmp_path: Path) -> None:
    root = tmp_path / "docs"
    make_tree(root, tmp_path / "outside")
    everything = ["**/*", "**/*.md", "**/*.env", "**/.*"]
    found = [p.relative_to(root).as_posix() for p in list_local_files(root, everything)]
    assert found == ["guide/a.md", "guide/b.html"]
    with_pdf = [p.name for p in list_local_files(root, everything, allow_pdf=True)]
    assert with_pdf == ["a.md", "b.html", "c.pdf"]
    assert list_local_files(root, ["../**/*.txt", "/etc/*"]) == []
    assert list_local_files(root / "guide" / "a.md", ["**/*"]) == [root / "guide" / "a.md"]


def test_a_hidden_file_is_never_read(tmp_path: Path) -> None:
    secret = tmp_path / ".env.md"
    secret.write_text("# Secrets\n\nAWS_SECRET_ACCESS_KEY=abc\n")
    assert read_local_file(secret, "s") is None
    visible = tmp_path / "notes.md"
    visible.write_text("# Notes\n\nPlain text.\n")
    doc = read_local_file(visible, "s")
    assert doc is not None and doc.title == "Notes"


# -- the served source ---------------------------------------------------------------------------


def get(base: str, path: str, method: str = "GET") -> tuple[int, bytes]:
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_served_folder_serves_documentation_only(tmp_path: Path) -> None:
    root = tmp_path / "site"
    make_tree(root, tmp_path / "outside")
    (root / "index.html").write_text(PAGE.format("Home", "welcome"))
    (root / "sitemap.xml").write_text("<urlset/>")
    (root / "robots.txt").write_text("User-agent: *\nAllow: /\n")
    with serve_folder(root) as base:
        assert get(base, "/")[0] == 200 and b"welcome" in get(base, "/")[1]
        for ok in ("/index.html", "/guide/a.md", "/guide/b.html", "/guide/c.pdf", "/sitemap.xml", "/robots.txt"):
            assert get(base, ok)[0] == 200, ok
        assert get(base, "/guide/a.md", "HEAD")[0] == 200
        refused = [
            "/.env",
            "/.git/notes.md",
            "/guide/.drafts/d.md",
            "/guide/.hidden.md",
            "/%2Eenv",
            "/guide/../.env",
            "/../../etc/passwd",
            "/guide/style.css",
            "/guide/link.txt",  # a link out of the folder
            "/guide/",  # no index.html: no listing
            "/.git/",
        ]
        for path in refused:
            status, body = get(base, path)
            assert status == 404, (path, status)
            assert b"SECRET" not in body and b"root:x" not in body and b"a.md" not in body


def test_the_shipped_corpus_is_served_as_before() -> None:
    with serve_folder(CORPUS) as base:
        status, body = get(base, "/")
        assert status == 200 and b"<html" in body.lower()
        assert get(base, "/robots.txt")[0] == 200 and get(base, "/sitemap.xml")[0] == 200
        assert get(base, "/assets/")[0] == 404


def test_a_client_that_hangs_up_leaves_no_traceback(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "site"
    root.mkdir()
    (root / "index.html").write_text(PAGE.format("Home", "x"))
    (root / "big.html").write_bytes(b"<p>" + b"x" * (16 * 1024 * 1024) + b"</p>")
    caplog.set_level(logging.DEBUG, logger="harvest.serve")
    with serve_folder(root) as base:
        host, port = base.removeprefix("http://").split(":")
        for _ in range(3):
            sock = socket.create_connection((host, int(port)), timeout=5)
            sock.sendall(b"GET /big.html HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.recv(1024).startswith(b"HTTP/1.1 200")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # reset, not close
            sock.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and sum("went away" in r.getMessage() for r in caplog.records) < 3:
            time.sleep(0.05)
        assert get(base, "/")[0] == 200  # still serving
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Exception occurred during processing of request" not in err
    assert sum("went away" in r.getMessage() for r in caplog.records) == 3
