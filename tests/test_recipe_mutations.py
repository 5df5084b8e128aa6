"""A seeded mutation suite: broken recipes made from the shipped ones, each refused by `bastion validate`.

Every case exits 2 and names the broken field's path (or the file's problem), without a
traceback and within a second. Cases come from two sources:

- the schema itself: for every field of recipes/tiny-cpu.yaml and recipes/llama31-8b.yaml (chosen
  by a seeded random generator), a value of the wrong type, out of range, not finite or not in
  its enum; and an unknown key in every object, at every depth;
- hand-written hostile and broken files: encodings (Latin-1, UTF-16, UTF-32, binary), YAML syntax,
  aliases (an alias bomb, a recursive alias), sizes (5 MB, deep nesting, too many values), paths
  (climbing out, hidden names), URLs and host names, and YAML 1.1's surprises.

All cases run through the real CLI in process (click's CliRunner); a sample of one case per kind,
including every hostile one, runs as a subprocess of the installed ``bastion`` command.
"""

from __future__ import annotations

import copy
import math
import random
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from conftest import REPO

from bastion.cli import main
from bastion.recipe import MAX_RECIPE_BYTES, _resolve, format_path, load_schema

SEED = 20261202
BASES = ("tiny-cpu.yaml", "llama31-8b.yaml")
CORPUS = REPO / "recipes" / "corpus" / "cloudsec-mini"
BASTION = Path(sys.executable).parent / "bastion"
IN_PROCESS_LIMIT_S = 1.0
SUBPROCESS_LIMIT_S = 2.0  # interpreter start included


@dataclass(frozen=True)
class Case:
    """One broken recipe: its name, kind, bytes and what the message must contain."""

    name: str
    kind: str
    content: bytes
    expect: tuple[str, ...]


def base_recipe(name: str) -> dict[str, Any]:
    data = yaml.safe_load((REPO / "recipes" / name).read_text(encoding="utf-8"))
    for source in data["harvest"]["sources"]:
        if source.get("path"):
            source["path"] = str(CORPUS)  # the copy lives elsewhere: keep the source findable
    return data


def dump(data: dict[str, Any]) -> bytes:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True).encode("utf-8")


# -- cases from the schema -----------------------------------------------------------------------


def schema_fields() -> tuple[list[tuple[tuple[Any, ...], dict[str, Any]]], list[tuple[Any, ...]]]:
    """(path, schema) of every leaf field and the path of every closed object."""
    root = load_schema()
    leaves: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
    objects: list[tuple[Any, ...]] = [()]

    def walk(node: dict[str, Any], path: tuple[Any, ...]) -> None:
        node = _resolve(node, root)
        for key, raw in node.get("properties", {}).items():
            sub = _resolve(raw, root)
            here = path + (key,)
            items = _resolve(sub["items"], root) if isinstance(sub.get("items"), dict) else {}
            if sub.get("type") == "object" and sub.get("additionalProperties") is False:
                objects.append(here)
                walk(sub, here)
            elif sub.get("type") == "array" and items.get("type") == "object":
                objects.append(here + (0,))
                walk(items, here + (0,))
            else:
                leaves.append((here, sub))

    walk(root, ())
    return leaves, objects


def set_at(data: dict[str, Any], path: tuple[Any, ...], value: Any) -> None:
    node: Any = data
    for part in path[:-1]:
        if isinstance(part, int):
            node = node[part]
        else:
            node = node.setdefault(part, {})
    node[path[-1]] = value


def _types(sub: dict[str, Any]) -> set[str]:
    t = sub.get("type", [])
    return {t} if isinstance(t, str) else set(t)


def wrong_type(sub: dict[str, Any], rng: random.Random) -> Any | None:
    types = _types(sub)
    if "enum" in sub:
        first = sub["enum"][0]
        return rng.choice([f"{first}x", "bogus"]) if isinstance(first, str) else rng.choice([5, "four"])
    if not types:
        return 12  # target_modules: 'all-linear' or a list
    if types & {"integer", "number"}:
        return rng.choice(["abc", [1, 2], {"x": 1}, True])
    if "string" in types:
        return rng.choice([[1, 2], {"x": 1}, 12.5, False])
    if "boolean" in types:
        return rng.choice(["maybe", 3, [True]])
    if "array" in types:
        return rng.choice(["text", 5, {"x": 1}])
    if "object" in types:
        return rng.choice(["text", [1]])
    return None


def out_of_range(sub: dict[str, Any]) -> Any | None:
    step = 1 if "integer" in _types(sub) else 0.5
    if "minimum" in sub:
        return sub["minimum"] - step
    if "exclusiveMinimum" in sub:
        return sub["exclusiveMinimum"]
    if "maximum" in sub:
        return sub["maximum"] + step
    return None


def schema_cases() -> list[Case]:
    rng = random.Random(SEED)
    leaves, objects = schema_fields()
    bases = {name: base_recipe(name) for name in BASES}
    cases: list[Case] = []

    def add(kind: str, path: tuple[Any, ...], value: Any) -> None:
        base = rng.choice(BASES)
        data = copy.deepcopy(bases[base])
        set_at(data, path, value)
        where = format_path(path)
        cases.append(Case(f"{kind}:{where}:{base}", kind, dump(data), (f"{where}:",)))

    for path, sub in leaves:
        bad = wrong_type(sub, rng)
        if bad is not None:
            add("type", path, bad)
        bad = out_of_range(sub)
        if bad is not None:
            add("range", path, bad)
        if _types(sub) & {"number", "integer"}:
            add("non-finite", path, rng.choice([math.nan, math.inf, -math.inf]))
    for path in objects:
        add("unknown-key", path + (rng.choice(["zz_extra", "colour", "lerning_rate", "enabled_"]),), 1)
    return cases


# -- hand-written hostile and broken files -------------------------------------------------------

TINY = (
    (REPO / "recipes" / "tiny-cpu.yaml")
    .read_text(encoding="utf-8")
    .replace("path: corpus/cloudsec-mini", f"path: {CORPUS}")
)


def swap(old: str, new: str, text: str = TINY) -> bytes:
    assert old in text, old
    return text.replace(old, new, 1).encode("utf-8")


def set_value(key: str, value: str, text: str = TINY) -> bytes:
    """``key: <anything>`` (first occurrence, comment kept) -> ``key: value``."""
    out, count = re.subn(rf"^(\s*{key}:) [^#\n]*?(\s*(#.*)?)$", rf"\g<1> {value}\g<2>", text, count=1, flags=re.M)
    assert count == 1, key
    return out.encode("utf-8")


def alias_bomb(levels: int = 12, width: int = 9) -> bytes:
    lines = ["name: bomb", "a0: &a0 [" + ",".join(["lol"] * width) + "]"]
    lines += [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * width) + "]" for i in range(1, levels)]
    return ("\n".join(lines) + "\n").encode()


def hand_cases() -> list[Case]:
    rng = random.Random(SEED + 1)
    latin = TINY.replace("Cloud Security Architect", "Architecte sécurité", 1)
    text_cases: list[tuple[str, str, bytes, tuple[str, ...]]] = [
        # encodings
        ("latin-1", "encoding", latin.encode("latin-1"), ("not UTF-8 text", "byte 0xe9", "save it as UTF-8")),
        ("cp1252", "encoding", TINY.replace("Answer", "\u2019Answer").encode("cp1252"), ("not UTF-8 text",)),
        ("utf-16", "encoding", TINY.encode("utf-16"), ("UTF-16", "save it as UTF-8")),
        ("utf-16-le-no-bom", "encoding", TINY.encode("utf-16-le"), ("UTF-16", "save it as UTF-8")),
        ("utf-16-be", "encoding", b"\xfe\xff" + TINY.encode("utf-16-be"), ("UTF-16",)),
        ("utf-32", "encoding", TINY.encode("utf-32"), ("UTF-32",)),
        ("binary", "encoding", bytes(rng.randrange(256) for _ in range(3000)), ("yaml",)),
        ("nul-byte", "encoding", TINY.encode() + b"\x00", ("binary data", "NUL byte")),
        ("gzip", "encoding", b"\x1f\x8b\x08\x00" + bytes(range(200, 256)) * 10, ("binary data",)),
        # YAML syntax
        ("unclosed-bracket", "syntax", swap("tasks: [cloudsec]", "tasks: [cloudsec"), ("not valid YAML",)),
        ("tab-indent", "syntax", swap("  device: cpu", "\tdevice: cpu"), ("not valid YAML", "tabs")),
        ("bad-indent", "syntax", swap("  adapter: qlora", "   adapter: qlora"), ("not valid YAML",)),
        ("undefined-alias", "syntax", swap("  device: cpu", "  device: *nowhere"), ("not valid YAML", "nowhere")),
        ("duplicate-anchor", "syntax", b"name: &a x\ndescription: &a y\n", ("not valid YAML", "duplicate anchor")),
        ("two-documents", "syntax", TINY.encode() + b"---\nname: other\n", ("not valid YAML", "single document")),
        ("python-tag", "syntax", swap("name: tiny-cpu", "name: !!python/name:os.system x"), ("not valid YAML",)),
        ("unknown-tag", "syntax", swap("  tasks: [cloudsec]", "  tasks: !function x.y"), ("not valid YAML",)),
        ("unhashable-key", "syntax", b"? [a, b]\n: 1\n", ("not valid YAML", "unhashable")),
        ("duplicate-key", "syntax", swap("  device: cpu", "  device: cpu\n  device: cuda"), ("train.device:", "twice")),
        ("control-char", "syntax", swap("name: tiny-cpu", "name: tiny\x07cpu"), ("not valid YAML",)),
        ("a-list", "syntax", b"- name: x\n- name: y\n", ("must be a YAML mapping",)),
        ("a-scalar", "syntax", b"just text\n", ("must be a YAML mapping",)),
        ("empty", "syntax", b"", ("empty",)),
        ("comments-only", "syntax", b"# nothing here\n", ("empty",)),
        ("huge-integer", "syntax", swap("  seed: 1234", "  seed: " + "9" * 5000, TINY + "  seed: 1234\n"), ("yaml",)),
        # aliases
        ("alias-bomb", "alias", alias_bomb(), ("values once its YAML aliases",)),
        (
            "alias-bomb-mapping",
            "alias",
            b"a: &a {x: 1, y: 2}\n"
            + b"".join(
                f"b{i}: &b{i} {{p: *{'a' if i == 0 else f'b{i - 1}'}, q: *{'a' if i == 0 else f'b{i - 1}'}}}\n".encode()
                for i in range(30)
            ),
            ("values once its YAML aliases",),
        ),
        (
            "merge-bomb",
            "alias",
            b"a0: &a0 {k: 1}\n"
            + b"".join(f"a{i}: &a{i} {{<<: [*a{i - 1}, *a{i - 1}], k{i}: 1}}\n".encode() for i in range(1, 30)),
            ("values once its YAML aliases",),
        ),
        ("recursive-alias", "alias", b"name: x\nloop: &l [1, *l]\n", ("recursive YAML alias",)),
        ("recursive-mapping", "alias", b"name: x\nloop: &m {self: *m}\n", ("recursive YAML alias",)),
        (
            "alias-in-recipe",
            "alias",
            swap(
                "  languages: [en]",
                "  languages: *langs",
                TINY.replace("description:", "x_langs: &langs [en, nope]\ndescription:", 1) + "  languages: [en]\n",
            ),
            ("x_langs:",),
        ),
        # sizes
        ("5-MB", "size", b"k: 1\n" * (5 * 1024 * 1024 // 5), ("bytes, more than",)),
        (
            "1-MiB-plus-1",
            "size",
            TINY.encode() + b"#" * (MAX_RECIPE_BYTES - len(TINY.encode()) + 1),
            ("bytes, more than",),
        ),
        ("deep-flow", "size", b"x: " + b"[" * 100_000 + b"]" * 100_000 + b"\n", ("nested more than",)),
        ("deep-block", "size", "".join(f"{'  ' * i}k{i}:\n" for i in range(200)).encode(), ("nested more than",)),
        (
            "many-values",
            "size",
            b"name: x\n" + b"".join(f"k{i}: {i}\n".encode() for i in range(30_000)),
            ("more than 20,000 values",),
        ),
        (
            "many-unknown-keys",
            "size",
            TINY.encode() + b"".join(f"k{i}: {i}\n".encode() for i in range(9_000)),
            ("k0:", "... and 8950 more"),
        ),
        (
            "long-prompt",
            "size",
            swap("system_prompt: You", "system_prompt: " + "x" * 30_000 + " You"),
            ("system_prompt:",),
        ),
        # paths
        (
            "climb-out",
            "path",
            swap(f"path: {CORPUS}", "path: ../../../../../etc"),
            ("harvest.sources[0].path:", "climbs out"),
        ),
        (
            "climb-out-nested",
            "path",
            swap(f"path: {CORPUS}", "path: corpus/../../etc"),
            ("harvest.sources[0].path:", "climbs out"),
        ),
        ("hidden-folder", "path", swap(f"path: {CORPUS}", "path: corpus/.git"), ("harvest.sources[0].path:", "hidden")),
        ("hidden-home", "path", swap(f"path: {CORPUS}", "path: ~/.ssh"), ("harvest.sources[0].path:", "hidden")),
        ("dot-env", "path", swap(f"path: {CORPUS}", "path: .env"), ("harvest.sources[0].path:", "hidden")),
        ("nul-in-path", "path", swap(f"path: {CORPUS}", 'path: "corpus\\0x"'), ("harvest.sources[0].path:", "NUL")),
        ("empty-path", "path", swap(f"path: {CORPUS}", 'path: "  "'), ("harvest.sources[0].path:",)),
        (
            "include-climbs",
            "path",
            swap("      max_pages: 100", "      include: ['../**/*.md']\n      max_pages: 100"),
            ("harvest.sources[0].include[0]:",),
        ),
        (
            "include-hidden",
            "path",
            swap("      max_pages: 100", "      include: ['**/.env']\n      max_pages: 100"),
            ("harvest.sources[0].include[0]:", "hidden"),
        ),
        (
            "task-path-climbs",
            "path",
            swap("  tasks: [cloudsec]", "  tasks: [cloudsec]\n  task_paths: [../../tasks]"),
            ("eval.task_paths[0]:", "climbs out"),
        ),
        (
            "bank-hidden",
            "path",
            swap("  tasks: [cloudsec]", "  tasks: [cloudsec]\n  banks: {mcq: .cache/mcq.jsonl}"),
            ("eval.banks.mcq:", "hidden"),
        ),
        # URLs and host names
        (
            "url-no-host",
            "url",
            web_source("start_urls: ['https://']"),
            ("harvest.sources[1].start_urls[0]:", "no host"),
        ),
        (
            "url-ftp",
            "url",
            web_source("start_urls: ['ftp://docs.example.com/']"),
            ("harvest.sources[1].start_urls[0]:",),
        ),
        (
            "url-spaces",
            "url",
            web_source("start_urls: ['https://docs.example.com/a b']"),
            ("harvest.sources[1].start_urls[0]:", "spaces"),
        ),
        (
            "url-port",
            "url",
            web_source("start_urls: ['https://docs.example.com:99999/']"),
            ("harvest.sources[1].start_urls[0]:",),
        ),
        (
            "url-port-only",
            "url",
            web_source("start_urls: ['https://:443/']"),
            ("harvest.sources[1].start_urls[0]:", "no host"),
        ),
        ("sitemap-relative", "url", web_source("sitemaps: ['/sitemap.xml']"), ("harvest.sources[1].sitemaps[0]:",)),
        (
            "domain-is-url",
            "url",
            web_source(
                "start_urls: ['https://docs.aws.amazon.com/']", "allowed_domains: ['https://docs.aws.amazon.com/']"
            ),
            ("harvest.sources[1].allowed_domains[0]:", "'docs.aws.amazon.com'"),
        ),
        (
            "domain-with-path",
            "url",
            web_source("start_urls: ['https://a.example.com/']", "allowed_domains: ['a.example.com/docs']"),
            ("harvest.sources[1].allowed_domains[0]:", "path_prefixes"),
        ),
        (
            "domain-wildcard",
            "url",
            web_source("start_urls: ['https://a.example.com/']", "allowed_domains: ['*.example.com']"),
            ("harvest.sources[1].allowed_domains[0]:", "wildcards"),
        ),
        ("web-without-urls", "url", web_source("max_pages: 3"), ("harvest.sources[1].start_urls:",)),
        # YAML 1.1 surprises and values JSON cannot hold
        (
            "exponent-2e-4",
            "yaml11",
            set_value("learning_rate", "2e-4"),
            ("train.learning_rate:", "write 2.0e-4"),
        ),
        ("exponent-int", "yaml11", set_value("max_steps", "1e3"), ("train.max_steps:", "write 1000")),
        (
            "norway",
            "yaml11",
            swap("  min_words: 25", "  min_words: 25\n    languages: [no]"),
            ("harvest.quality.languages[0]:", "boolean"),
        ),
        ("yes-name", "yaml11", swap("name: tiny-cpu", "name: yes"), ("name:", "quote it")),
        (
            "revision-float",
            "yaml11",
            swap('  id: "bastion:tiny-llama"', '  id: "bastion:tiny-llama"\n  revision: 1.10'),
            ("base_model.revision:", '"1.10"'),
        ),
        (
            "revision-date",
            "yaml11",
            swap('  id: "bastion:tiny-llama"', '  id: "bastion:tiny-llama"\n  revision: 2024-01-01'),
            ("base_model.revision:", "date"),
        ),
        ("binary-value", "yaml11", swap("  device: cpu", "  device: !!binary aGVsbG8="), ("train.device:", "binary")),
        ("set-value", "yaml11", swap("  tasks: [cloudsec]", "  tasks: !!set {cloudsec}"), ("eval.tasks:",)),
        ("int-key", "yaml11", swap("train:\n", "train:\n  1: x\n"), ("train.1:", "keys must be text")),
        (
            "nan-in-axolotl",
            "yaml11",
            (
                swap("\n  axolotl:\n", "\n  axolotl:\n    lr: .nan\n")
                if "\n  axolotl:\n" in TINY
                else swap("  flash_attention: false", "  flash_attention: false\n  axolotl: {lr: .nan}")
            ),
            ("train.axolotl.lr:", "finite"),
        ),
        ("null-value", "yaml11", swap("  device: cpu", "  device:"), ("train.device:", "null")),
        # required and blank
        (
            "blank-prompt",
            "required",
            swap(
                "system_prompt: You are a Cloud Security Architect. Answer precisely and practically.",
                'system_prompt: "   "',
            ),
            ("system_prompt:", "blank"),
        ),
        (
            "empty-prompt",
            "required",
            swap(
                "system_prompt: You are a Cloud Security Architect. Answer precisely and practically.",
                'system_prompt: ""',
            ),
            ("system_prompt:",),
        ),
        ("no-sources", "required", no_sources(), ("harvest.sources:", "at least 1")),
        ("no-harvest", "required", b"name: x\nbase_model: {id: m}\nsystem_prompt: s\n", ("'harvest'",)),
        ("no-name", "required", swap("name: tiny-cpu\n", ""), ("'name'",)),
        ("empty-tasks", "required", swap("  tasks: [cloudsec]", "  tasks: []"), ("eval.tasks:",)),
    ]
    return [Case(f"{kind}:{name}", kind, content, expect) for name, kind, content, expect in text_cases]


def sources_block(text: str = TINY) -> tuple[int, int]:
    """Where ``harvest.sources`` starts and ends in the recipe's text (the next key of harvest)."""
    start = text.index("\n  sources:\n") + 1
    end = start + len("  sources:\n")
    while end < len(text) and (text.startswith("    ", end) or text.startswith("\n", end)):
        end = text.index("\n", end) + 1
    return start, end


def web_source(*lines: str) -> bytes:
    """tiny-cpu.yaml with a second source, a web one with ``lines``."""
    entry = "    - name: web\n      kind: web\n" + "".join(f"      {line}\n" for line in lines)
    _, end = sources_block()
    return (TINY[:end] + entry + TINY[end:]).encode("utf-8")


def no_sources() -> bytes:
    start, end = sources_block()
    return (TINY[:start] + "  sources: []\n" + TINY[end:]).encode("utf-8")


CASES = schema_cases() + hand_cases()
HOSTILE = {
    "alias:alias-bomb",
    "alias:alias-bomb-mapping",
    "alias:merge-bomb",
    "size:5-MB",
    "size:deep-flow",
    "size:many-values",
    "size:many-unknown-keys",
    "encoding:binary",
    "encoding:utf-16",
}
TIMES: dict[str, float] = {}


@pytest.fixture(scope="module")
def runner() -> CliRunner:
    return CliRunner()


def test_the_suite_is_large_and_covers_every_kind() -> None:
    kinds = {c.kind for c in CASES}
    assert len(CASES) >= 100
    assert {
        "type",
        "range",
        "non-finite",
        "unknown-key",
        "encoding",
        "syntax",
        "alias",
        "size",
        "path",
        "url",
        "yaml11",
    } <= kinds
    assert len({c.name for c in CASES}) == len(CASES)
    depths = {c.name.count(".") for c in CASES if c.kind == "unknown-key"}
    assert max(depths) >= 2  # unknown keys at every depth, down to harvest.sources[0].x and train.lora.x


@pytest.mark.parametrize("name", BASES)
def test_the_unmutated_recipes_pass(tmp_path: Path, runner: CliRunner, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(dump(base_recipe(name)))
    result = runner.invoke(main, ["validate", str(path)])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_validate_refuses_the_mutant(tmp_path: Path, runner: CliRunner, case: Case) -> None:
    path = tmp_path / "recipe.yaml"
    path.write_bytes(case.content)
    start = time.perf_counter()
    result = runner.invoke(main, ["validate", str(path)])
    TIMES[case.name] = elapsed = time.perf_counter() - start
    out = result.output
    assert result.exit_code == 2, f"exit {result.exit_code}: {out[-2000:]}"
    assert "Traceback" not in out and "unexpected error" not in out
    assert str(path) in out
    for needle in case.expect:
        assert needle.lower() in out.lower(), f"{needle!r} not in: {out[-2000:]}"
    assert len(out) < 20_000  # the first fifty problems, then a count
    assert elapsed < IN_PROCESS_LIMIT_S, f"{elapsed:.2f} s"


def sample() -> list[Case]:
    """One case per kind, and every hostile one."""
    rng = random.Random(SEED + 2)
    picked = {c.name: c for c in CASES if c.name in HOSTILE}
    for kind in sorted({c.kind for c in CASES}):
        case = rng.choice([c for c in CASES if c.kind == kind])
        picked.setdefault(case.name, case)
    return list(picked.values())


@pytest.mark.parametrize("case", sample(), ids=[c.name for c in sample()])
def test_the_installed_command_refuses_it_too(tmp_path: Path, case: Case) -> None:
    path = tmp_path / "recipe.yaml"
    path.write_bytes(case.content)
    start = time.perf_counter()
    proc = subprocess.run([str(BASTION), "validate", str(path)], capture_output=True, timeout=60)
    elapsed = time.perf_counter() - start
    TIMES[f"subprocess:{case.name}"] = elapsed
    out = (proc.stdout + proc.stderr).decode("utf-8", errors="replace")
    assert proc.returncode == 2, out[-2000:]
    assert "Traceback" not in out
    for needle in case.expect:
        assert needle.lower() in out.lower(), f"{needle!r} not in: {out[-2000:]}"
    assert elapsed < SUBPROCESS_LIMIT_S, f"{elapsed:.2f} s"


def test_report_the_slowest(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Runs last in this file: the figures of the run (visible with -s)."""
    if not TIMES:  # run alone: time the hostile cases here
        for case in (c for c in CASES if c.name in HOSTILE):
            path = tmp_path / f"{case.name}.yaml"
            path.write_bytes(case.content)
            start = time.perf_counter()
            CliRunner().invoke(main, ["validate", str(path)])
            TIMES[case.name] = time.perf_counter() - start
    in_process = {k: v for k, v in TIMES.items() if not k.startswith("subprocess:")}
    slowest = max(in_process, key=in_process.__getitem__)
    with capsys.disabled():
        sys.stdout.write(
            f"\nmutation suite: {len(in_process)} cases in process, slowest {slowest} {in_process[slowest]:.3f} s; "
            + ", ".join(f"{k} {v:.2f} s" for k, v in sorted(TIMES.items()) if k.startswith("subprocess:"))
            + "\n"
        )
    assert max(in_process.values()) < IN_PROCESS_LIMIT_S
