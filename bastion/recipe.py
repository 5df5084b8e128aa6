"""Load a recipe: read it safely, parse YAML, validate against the JSON Schema, fill defaults, cross-check.

Every violation is collected and reported at once, each with its path (``train.lora.r``), the
line in the file, the offending value and what was expected (the first :data:`MAX_SHOWN` are
printed, then how many more).

Hostile or broken files are refused quickly and plainly, never with a traceback: a file larger
than :data:`MAX_RECIPE_BYTES`, text that is not UTF-8 (Latin-1, UTF-16, binary), YAML nested
deeper than :data:`MAX_DEPTH` or expanding (through ``&anchor``/``*alias``) to more than
:data:`MAX_VALUES` values, recursive aliases, and values JSON cannot hold (NaN, infinity, dates,
binary, sets) are each a :class:`BadInputError` (exit 2) naming the file and the problem.

Checks that need only the recipe run here: the schema, cross-field rules, URLs (http/https with a
host), ``allowed_domains`` (host names, not URLs) and paths written in the recipe (a relative path
may not climb out of the recipe's folder; hidden names such as ``.git`` or ``.env`` are refused;
absolute paths are the user's explicit choice). Checks that look at other files (does the source
folder exist, are the eval tasks and banks valid) belong to the stages and are passed in as
``checks`` (:data:`RecipeCheck`); :func:`source_path_violations` is the harvest stage's.
"""

from __future__ import annotations

import codecs
import copy
import datetime
import difflib
import hashlib
import json
import logging
import math
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path, PurePath
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import yaml
from yaml.composer import ComposerError

from bastion.errors import BadInputError, MissingResourceError
from bastion.paths import RECIPES_DIR, SCHEMAS_DIR

log = logging.getLogger(__name__)

SCHEMA_PATH = SCHEMAS_DIR / "recipe.schema.json"
PathParts = tuple[str | int, ...]
#: A check a stage adds to loading: (the recipe's data with defaults filled, the recipe file) ->
#: (path, message) for each problem. It may assume the schema's shape only where no other
#: problem was found; a TypeError/KeyError/... on a recipe with other problems is ignored.
RecipeCheck = Callable[[dict[str, Any], Path], Iterable[tuple[PathParts, str]]]

MAX_RECIPE_BYTES = 1024 * 1024  #: a recipe is a few KB; 1 MiB leaves room for long lists
MAX_VALUES = 20_000  #: values (mapping keys, list items, scalars) after YAML aliases are expanded
MAX_DEPTH = 32  #: nesting of mappings and lists; the schema itself is five deep
MAX_SHOWN = 50  #: problems printed; the rest are counted
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_MERGE_TAG = "tag:yaml.org,2002:merge"


@dataclass(frozen=True)
class Violation:
    """One problem in a recipe: where it is, what was found and what was expected."""

    path: str
    message: str
    line: int | None = None

    def render(self, file: Path) -> str:
        where = f"{file}:{self.line}" if self.line else str(file)
        return f"{where}: {self.path or '<root>'}: {self.message}"


class RecipeError(BadInputError):
    """A recipe that does not validate; carries every violation found (prints the first fifty)."""

    def __init__(self, file: Path, violations: list[Violation]) -> None:
        self.file = file
        self.violations = violations
        count = len(violations)
        lines = [f"{file}: {count} problem{'s' if count != 1 else ''} in the recipe:"]
        lines += [f"  - {v.render(file)}" for v in violations[:MAX_SHOWN]]
        if count > MAX_SHOWN:
            lines.append(f"  ... and {count - MAX_SHOWN} more")
        super().__init__("\n".join(lines))


@dataclass(frozen=True)
class Recipe:
    """A validated recipe with every default filled in. Sections are plain dicts shaped by the schema."""

    path: Path
    name: str
    description: str
    base_model: dict[str, Any]
    system_prompt: str
    harvest: dict[str, Any]
    train: dict[str, Any]
    eval: dict[str, Any]
    export: dict[str, Any]
    sha256: str
    data: dict[str, Any] = field(repr=False, default_factory=dict)

    def section_hash(self, section: str) -> str:
        """Hash of one section (plus base model and system prompt) to tell whether a stage must rerun."""
        payload = {
            "section": self.data.get(section),
            "base_model": self.base_model,
            "system_prompt": self.system_prompt,
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    def resolve_path(self, value: str) -> Path:
        """A path written in the recipe, resolved against the recipe's folder."""
        return resolve_in(self.path.parent, value)


def resolve_in(folder: Path, value: str) -> Path:
    """A path written in a recipe in ``folder``: ``~`` expanded, relative paths against ``folder``."""
    p = Path(value).expanduser()
    return p if p.is_absolute() else (folder / p).resolve()


@lru_cache(maxsize=1)
def load_schema() -> dict[str, Any]:
    """The recipe JSON Schema (draft 2020-12)."""
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


def resolve_recipe_path(name: str | Path) -> Path:
    """Find a recipe: an existing path, else a name under ``recipes/`` (with or without ``.yaml``)."""
    p = Path(name).expanduser()
    candidates = [p]
    if not p.is_absolute():
        candidates += [RECIPES_DIR / p, RECIPES_DIR / f"{p}.yaml", RECIPES_DIR / p.name]
    for c in candidates:
        try:
            if c.is_file():
                return c.resolve()
        except (OSError, ValueError):  # a name too long for the file system, a NUL byte
            continue
    known = sorted(x.name for x in RECIPES_DIR.glob("*.yaml"))
    hint = difflib.get_close_matches(p.name, known, n=1)
    extra = f"; did you mean '{hint[0]}'?" if hint else f"; recipes available: {', '.join(known)}"
    raise MissingResourceError(f"recipe '{name}' not found (looked in . and {RECIPES_DIR}){extra}")


def load_recipe(name: str | Path, checks: Sequence[RecipeCheck] = ()) -> Recipe:
    """Load, validate and complete a recipe; raise :class:`RecipeError` listing every problem.

    ``checks``: the stages' own checks (files the recipe names, eval tasks, ...), run on the
    recipe with defaults filled; their problems are reported with the others.
    """
    path = resolve_recipe_path(name)
    text = read_recipe_text(path)
    data, lines, raw = _parse_yaml(path, text)
    violations = _value_violations(data, lines)
    bad = {v.path for v in violations}
    violations += [v for v in schema_violations(data, lines, raw) if v.path not in bad]
    fill_defaults(data, load_schema())
    already = {v.path for v in violations}
    violations += _safe_violations(cross_field_violations, data, lines, already)
    violations += _safe_violations(lambda d: input_violations(d, path), data, lines, already)
    for check in checks:
        found = _run_check(check, data, path, bool(violations))
        violations += [
            Violation(format_path(p), m, _line_for(lines, p)) for p, m in found if not _within(format_path(p), already)
        ]
    if violations:
        raise RecipeError(path, sorted(dict.fromkeys(violations), key=lambda v: (v.line or 0, v.path)))
    return Recipe(
        path=path,
        name=data["name"],
        description=data.get("description", ""),
        base_model=data["base_model"],
        system_prompt=data["system_prompt"],
        harvest=data["harvest"],
        train=data["train"],
        eval=data["eval"],
        export=data["export"],
        sha256=hashlib.sha256(text.encode("utf-8")).hexdigest(),
        data=data,
    )


def _run_check(check: RecipeCheck, data: dict[str, Any], path: Path, tolerant: bool) -> list[tuple[PathParts, str]]:
    try:
        return list(check(data, path))
    except (TypeError, KeyError, AttributeError, ValueError, IndexError):
        if tolerant:  # a field the check needs is malformed; the other problems already say so
            return []
        raise


# -- reading and parsing -------------------------------------------------------------------------


def read_recipe_text(path: Path) -> str:
    """The recipe's text; a file too large, unreadable or not UTF-8 is a BadInputError saying why."""
    try:
        size = path.stat().st_size
        if size <= MAX_RECIPE_BYTES:
            with path.open("rb") as f:
                data = f.read(MAX_RECIPE_BYTES + 1)
            size = len(data)
    except OSError as exc:
        raise BadInputError(f"{path}: cannot read the recipe: {exc.strerror or exc}") from None
    if size > MAX_RECIPE_BYTES:
        raise BadInputError(
            f"{path}: {size:,} bytes, more than the {MAX_RECIPE_BYTES:,} a recipe may hold "
            "(a recipe is a few KB of YAML); is this the right file?"
        )
    return decode_text(path, data)


def decode_text(path: Path, data: bytes) -> str:
    """UTF-8 text of a file (a UTF-8 byte-order mark is dropped); BadInputError naming the problem."""
    marks = (
        (codecs.BOM_UTF32_LE, "UTF-32"),
        (codecs.BOM_UTF32_BE, "UTF-32"),
        (codecs.BOM_UTF16_LE, "UTF-16"),
        (codecs.BOM_UTF16_BE, "UTF-16"),
    )
    for bom, name in marks:  # UTF-32 first: its little-endian mark starts with UTF-16's
        if data.startswith(bom):
            raise BadInputError(f"{path}: {name} text (byte-order mark {bom.hex(' ').upper()}); save it as UTF-8")
    nul = data.find(b"\x00")
    if nul >= 0:
        sample = data[:4096]
        if sample.count(b"\x00") * 3 >= len(sample):  # every other byte: UTF-16 without a mark
            raise BadInputError(f"{path}: looks like UTF-16 text (NUL bytes between characters); save it as UTF-8")
        raise BadInputError(f"{path}: binary data, not text (NUL byte at offset {nul}); a recipe is a YAML text file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        guess = ""
        try:
            data.decode("cp1252")
            guess = ", perhaps Latin-1/Windows-1252"
        except UnicodeDecodeError:
            pass
        byte = f"byte 0x{data[exc.start]:02x} at offset {exc.start}{guess}"
        raise BadInputError(f"{path}:{line}: not UTF-8 text ({byte}); save it as UTF-8") from None
    return text.removeprefix("\ufeff")


def _parse_yaml(path: Path, text: str) -> tuple[dict[str, Any], dict[PathParts, int], dict[PathParts, str]]:
    """The recipe as data, the line of each path and the raw text of each plain scalar."""
    loader = _LOADER(text)
    try:
        try:
            node = _compose(loader, path)
            lines: dict[PathParts, int] = {}
            raw: dict[PathParts, str] = {}
            duplicates: list[Violation] = []
            if node is not None:
                _index_lines(node, (), lines, raw, duplicates)
            data = loader.construct_document(node) if node is not None else None
        except yaml.YAMLError as exc:
            raise BadInputError(_yaml_message(path, exc, text)) from None
        except (ValueError, OverflowError, RecursionError) as exc:  # e.g. an integer of 5,000 digits
            raise BadInputError(f"{path}: a value YAML cannot read: {exc}") from None
    finally:
        loader.dispose()
    if data is None:
        raise BadInputError(f"{path}: empty; a recipe is a YAML mapping (name:, base_model:, system_prompt:, ...)")
    if not isinstance(data, dict):
        raise BadInputError(
            f"{path}: a recipe must be a YAML mapping (name:, base_model:, ...), got {_type_name(data)}"
        )
    if duplicates:
        raise RecipeError(path, duplicates)
    return data, lines, raw


def _yaml_message(path: Path, exc: yaml.YAMLError, text: str) -> str:
    mark = getattr(exc, "problem_mark", None)
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    lines = text.splitlines()
    line = lines[mark.line] if mark and mark.line < len(lines) else ""
    hint = ""
    if "\t" in problem or "\t" in line[: mark.column + 1 if mark else 0]:
        hint = "; YAML indents with spaces, not tabs"
    elif "could not determine a constructor" in problem or "unhashable" in problem:
        hint = "; a recipe holds plain mappings, lists, text, numbers and booleans"
    return f"{where}: not valid YAML: {problem}" + (f" ({context})" if context else "") + hint


class _Frame:
    """A mapping or list being composed: its node, its expanded size so far, a pending key."""

    __slots__ = ("node", "size", "key")

    def __init__(self, node: yaml.Node) -> None:
        self.node = node
        self.size = 1
        self.key: yaml.Node | None = None


def _compose(loader: Any, path: Path) -> yaml.Node | None:
    """PyYAML's composer without recursion, bounded: nesting deeper than MAX_DEPTH, more than
    MAX_VALUES values once aliases are expanded, or an alias to an unfinished node (a cycle) is
    refused as it is met, so an alias bomb or a deeply nested file costs no more than reading it."""
    loader.get_event()  # stream start
    if loader.check_event(yaml.StreamEndEvent):
        return None
    loader.get_event()  # document start
    anchors: dict[str, yaml.Node] = {}
    sizes: dict[int, int] = {}
    stack: list[_Frame] = []
    aliased = False
    root: yaml.Node | None = None
    while root is None:
        event: Any = loader.get_event()
        mark: Any = event.start_mark  # libyaml's marks are yaml._yaml.Mark
        end_mark: Any = event.end_mark
        node: yaml.Node | None = None
        size = 1
        if isinstance(event, yaml.AliasEvent):
            if event.anchor not in anchors:
                raise ComposerError(None, None, f"found undefined alias {event.anchor!r}", mark)
            node = anchors[event.anchor]
            if id(node) not in sizes:
                raise BadInputError(
                    f"{path}:{mark.line + 1}: the alias *{event.anchor} refers to a mapping or list "
                    "that contains it (a recursive YAML alias); a recipe cannot hold a cycle"
                )
            size, aliased = sizes[id(node)], True
        elif isinstance(event, (yaml.ScalarEvent, yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            if event.anchor is not None and event.anchor in anchors:
                raise ComposerError(
                    "found duplicate anchor", anchors[event.anchor].start_mark, "second occurrence", mark
                )
            tag = event.tag
            if isinstance(event, yaml.ScalarEvent):
                if tag is None or tag == "!":
                    tag = loader.resolve(yaml.ScalarNode, event.value, event.implicit)
                node = yaml.ScalarNode(tag, event.value, mark, end_mark, style=event.style)
                sizes[id(node)] = 1
            else:
                kind = yaml.SequenceNode if isinstance(event, yaml.SequenceStartEvent) else yaml.MappingNode
                if tag is None or tag == "!":
                    tag = loader.resolve(kind, None, event.implicit)
                node = kind(tag, [], mark, None, flow_style=event.flow_style)
                if len(stack) >= MAX_DEPTH:
                    raise BadInputError(
                        f"{path}:{mark.line + 1}: nested more than {MAX_DEPTH} levels deep; "
                        "a recipe needs fewer than ten"
                    )
            if event.anchor is not None:
                anchors[event.anchor] = node
            if not isinstance(event, yaml.ScalarEvent):
                stack.append(_Frame(node))
                continue
        elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            frame = stack.pop()
            frame.node.end_mark = end_mark
            node, size = frame.node, frame.size
            sizes[id(node)] = size
        else:  # pragma: no cover - the parser only yields the events above inside a document
            raise ComposerError(None, None, f"unexpected {type(event).__name__}", mark)
        if not stack:
            root = node
            break
        top = stack[-1]
        top.size += size
        if top.size > MAX_VALUES:
            how = " once its YAML aliases (*name) are expanded" if aliased else ""
            raise BadInputError(
                f"{path}:{top.node.start_mark.line + 1}: the recipe holds more than {MAX_VALUES:,} values{how}; "
                "a recipe needs a few hundred"
            )
        if isinstance(top.node, yaml.MappingNode):
            if top.key is None:
                top.key = node
            else:
                top.node.value.append((top.key, node))
                top.key = None
        else:
            top.node.value.append(node)
    if not loader.check_event(yaml.DocumentEndEvent):
        raise ComposerError(None, None, "expected a single document", loader.peek_event().start_mark)
    loader.get_event()  # document end
    if not loader.check_event(yaml.StreamEndEvent):
        extra: Any = loader.get_event()
        raise ComposerError(
            "expected a single document in the stream", None, "but found another document", extra.start_mark
        )
    return root


def _index_lines(
    node: yaml.Node,
    prefix: PathParts,
    out: dict[PathParts, int],
    raw: dict[PathParts, str],
    duplicates: list[Violation],
) -> None:
    """Map each path to its line and plain scalars to their text; YAML keeps the last of two equal
    keys silently, so report those. Merge keys (``<<: *base``) are not paths of their own."""
    out.setdefault(prefix, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            path = prefix + (str(key_node.value),)
            line = key_node.start_mark.line + 1
            if path in out and path != prefix:
                duplicates.append(
                    Violation(
                        format_path(path),
                        f"key given twice (first on line {out[path]}); YAML would silently keep only the last one",
                        line,
                    )
                )
            out[path] = line
            _index_lines(value_node, path, out, raw, duplicates)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _index_lines(item, prefix + (i,), out, raw, duplicates)
    elif isinstance(node, yaml.ScalarNode) and not node.style:  # plain: None (Python parser) or '' (libyaml)
        raw[prefix] = node.value


def format_path(parts: PathParts) -> str:
    """``('train', 'lora', 'r')`` -> ``train.lora.r``; list indices as ``[0]``."""
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _line_for(lines: dict[PathParts, int], parts: PathParts) -> int | None:
    for cut in range(len(parts), -1, -1):
        if parts[:cut] in lines:
            return lines[parts[:cut]]
    return None


# -- values JSON cannot hold ---------------------------------------------------------------------


def _value_violations(data: Any, lines: dict[PathParts, int]) -> list[Violation]:
    """Keys that are not text and values that are not JSON (NaN, infinity, dates, binary, sets)."""
    found: list[tuple[PathParts, str]] = []
    seen: set[int] = set()

    def walk(value: Any, path: PathParts) -> None:
        if isinstance(value, (dict, list)):
            if id(value) in seen:  # an alias: already checked
                return
            seen.add(id(value))
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str):
                    found.append(
                        (path + (str(key),), f"key {_show(key)} is {_type_name(key)}; keys must be text: quote it")
                    )
                    continue
                walk(item, path + (key,))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                walk(item, path + (i,))
        elif isinstance(value, float) and not math.isfinite(value):
            what = ".nan (not a number)" if math.isnan(value) else f"{'-' if value < 0 else ''}.inf (infinity)"
            found.append((path, f"got {what}, expected a finite number"))
        elif isinstance(value, (datetime.date, datetime.datetime)):
            found.append((path, f"got {value} (a date: YAML reads an unquoted date as a date); quote it for text"))
        elif isinstance(value, bytes):
            found.append((path, "got binary data (!!binary); a recipe holds text, numbers and booleans"))
        elif isinstance(value, (set, tuple)):
            found.append((path, f"got {_type_name(value)} (!!set, !!omap or !!pairs); use a YAML mapping or list"))

    walk(data, ())
    return [Violation(format_path(p), m, _line_for(lines, p)) for p, m in found]


# -- the schema ----------------------------------------------------------------------------------


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        ref = schema["$ref"]
        assert ref.startswith("#/"), ref
        target: Any = root
        for part in ref[2:].split("/"):
            target = target[part]
        schema = target
    return schema


def schema_violations(
    data: dict[str, Any], lines: dict[PathParts, int] | None = None, raw: dict[PathParts, str] | None = None
) -> list[Violation]:
    """Every schema violation in ``data``, in file order, with friendly messages (and a hint for
    YAML's surprises: ``2e-4`` is text, ``no`` is a boolean)."""
    lines = lines or {}
    raw = raw or {}
    schema = load_schema()
    validator = jsonschema.Draft202012Validator(schema)
    found: list[tuple[PathParts, str]] = []
    for error in validator.iter_errors(data):
        found.extend(_explain(error, schema, raw))
    violations = [Violation(format_path(p), m, _line_for(lines, p)) for p, m in dict.fromkeys(found)]
    violations = sorted(violations, key=lambda v: (v.line or 0, v.path))
    return _add_key_hints(violations)


_UNKNOWN_KEY = re.compile(r"^unknown key '(.*)'; allowed keys: (.*)$", re.DOTALL)


def _add_key_hints(violations: list[Violation]) -> list[Violation]:
    """Did-you-mean hints for the unknown keys shown (difflib costs ~0.1 ms a key; a hostile file
    can hold thousands)."""
    out = []
    for i, v in enumerate(violations):
        m = _UNKNOWN_KEY.match(v.message) if i < MAX_SHOWN * 4 else None
        if m:
            hint = difflib.get_close_matches(m.group(1), m.group(2).split(", "), n=1, cutoff=0.6)
            if hint:
                v = Violation(v.path, f"unknown key '{m.group(1)}'; did you mean '{hint[0]}'?", v.line)
        out.append(v)
    return out


def _explain(
    error: jsonschema.ValidationError, root: dict[str, Any], raw: dict[PathParts, str]
) -> list[tuple[PathParts, str]]:
    path: PathParts = tuple(error.absolute_path)
    kind = error.validator
    value = error.instance
    sub = error.schema if isinstance(error.schema, dict) else {}
    if kind == "additionalProperties" and isinstance(value, dict):
        allowed = sorted(_resolve(sub, root).get("properties", {}))
        return [
            (path + (str(key),), f"unknown key '{key}'; allowed keys: {', '.join(allowed)}")
            for key in sorted(set(value) - set(allowed), key=str)
        ]
    if kind == "required":
        missing_keys = [k for k in error.validator_value if isinstance(value, dict) and k not in value]
        missing = ", ".join(f"'{k}'" for k in missing_keys)
        return [(path, f"missing required key {missing}")]
    shown = _show(value)
    hint = _yaml_hint(value, raw.get(path), sub)
    if kind == "type":
        expected = error.validator_value
        expected = " or ".join(expected) if isinstance(expected, list) else expected
        return [(path, f"got {shown} ({_type_name(value)}), expected {expected}{hint}")]
    if kind == "enum":
        opts = ", ".join(_show(o) for o in error.validator_value)
        close = difflib.get_close_matches(str(value), [str(o) for o in error.validator_value], n=1)
        guess = f"; did you mean {close[0]!r}?" if close and not hint else ""
        return [(path, f"got {shown}, expected one of: {opts}{guess}{hint}")]
    bounds = {"minimum": ">=", "maximum": "<=", "exclusiveMinimum": ">", "exclusiveMaximum": "<"}
    if kind in bounds:
        return [(path, f"got {shown}, expected a number {bounds[kind]} {error.validator_value}")]
    if kind == "pattern":
        return [(path, _pattern_message(path, value, sub))]
    if kind in ("minItems", "maxItems", "minLength", "maxLength", "uniqueItems"):
        return [(path, f"got {shown}: {_size_message(kind, error)}")]
    if kind in ("oneOf", "anyOf"):
        desc = sub.get("description", "")
        return [(path, f"got {shown}, expected {desc or 'one of the allowed forms'}{hint}")]
    return [(path, f"got {shown}: {error.message}")]


def _size_message(kind: str, error: jsonschema.ValidationError) -> str:
    n = error.validator_value
    return {
        "minItems": f"expected at least {n} item{'s' if n != 1 else ''}",
        "maxItems": f"expected at most {n} items",
        "minLength": f"expected at least {n} character{'s' if n != 1 else ''}",
        "maxLength": f"expected at most {n:,} characters",
        "uniqueItems": "expected no repeated items",
    }[kind]


def _pattern_message(path: PathParts, value: Any, sub: dict[str, Any]) -> str:
    field_name = next((p for p in reversed(path) if isinstance(p, str)), "")
    if field_name in ("start_urls", "sitemaps"):
        return f"got {_show(value)}: {url_problem(value) or 'expected an http:// or https:// URL'}"
    if field_name == "allowed_domains":
        return f"got {_show(value)}: {host_problem(value) or 'expected a host name'}"
    if sub.get("pattern") == r"\S":
        return f"got {_show(value)}: blank, expected some text"
    desc = sub.get("description", "")
    return f"got {_show(value)}, expected text matching {sub.get('pattern')}" + (f" ({desc})" if desc else "")


_YAML11_BOOLS = {"yes", "no", "on", "off", "true", "false"}
_EXPONENT = re.compile(r"^[-+]?(\d[\d_]*\.?\d*|\.\d+)[eE][-+]?\d+$")


def _yaml_hint(value: Any, raw: str | None, sub: dict[str, Any]) -> str:
    """Why YAML read the value as it did, for the classic YAML 1.1 surprises."""
    wants = sub.get("type", [])
    wants = {wants} if isinstance(wants, str) else set(wants)
    if isinstance(value, str) and _EXPONENT.match(value.strip()) and wants & {"number", "integer"}:
        mantissa, _, exponent = value.strip().lower().partition("e")
        if "." not in mantissa:
            mantissa += ".0"
        if exponent[0] not in "+-":
            exponent = "+" + exponent
        if "integer" in wants and "number" not in wants:
            number = float(value)
            fix = str(int(number)) if number.is_integer() else f"{mantissa}e{exponent}"
        else:
            fix = f"{mantissa}e{exponent}"
        return f"; YAML reads {value} as text (its numbers need a dot and a signed exponent): write {fix}"
    if isinstance(value, str) and wants & {"number", "integer"} and re.fullmatch(r"\d{1,3}(,\d{3})+", value.strip()):
        return f"; write it without separators: {value.replace(',', '')}"
    if isinstance(value, bool) and raw is not None and raw.lower() in _YAML11_BOOLS and "boolean" not in wants:
        return f'; YAML reads an unquoted {raw} as a boolean: quote it, "{raw}"'
    if isinstance(value, (int, float)) and not isinstance(value, bool) and raw is not None and wants == {"string"}:
        return f'; YAML read it as a number: quote it, "{raw}"'
    if value is None and raw is not None and "null" not in wants:
        return "; an empty value (or ~, null) is null in YAML: give a value or remove the key"
    return ""


def _type_name(value: Any) -> str:
    return {
        dict: "mapping",
        list: "list",
        str: "text",
        bool: "boolean",
        int: "integer",
        float: "number",
        type(None): "null",
        datetime.date: "a date",
        datetime.datetime: "a date and time",
        set: "a set",
        tuple: "an ordered map",
    }.get(type(value), type(value).__name__)


def _show(value: Any) -> str:
    try:
        text = json.dumps(value, default=str)
    except (ValueError, TypeError):  # an integer too long to print, keys of mixed types
        text = repr(value)[:80]
    return text if len(text) <= 60 else text[:57] + "..."


def fill_defaults(instance: Any, schema: dict[str, Any], root: dict[str, Any] | None = None) -> None:
    """Fill every missing key that has a schema default, recursively, in place."""
    root = root or schema
    schema = _resolve(schema, root)
    if isinstance(instance, dict):
        for key, prop in schema.get("properties", {}).items():
            resolved = _resolve(prop, root)
            if key not in instance and "default" in resolved:
                instance[key] = copy.deepcopy(resolved["default"])
            if key in instance:
                fill_defaults(instance[key], resolved, root)
    elif isinstance(instance, list) and isinstance(schema.get("items"), dict):
        for item in instance:
            fill_defaults(item, schema["items"], root)


def _safe_violations(
    check: Callable[[dict[str, Any]], list[tuple[PathParts, str]]],
    data: dict[str, Any],
    lines: dict[PathParts, int],
    already: set[str],
) -> list[Violation]:
    """Checks on a recipe that may also have schema errors (then some are skipped)."""
    try:
        found = check(data)
    except (TypeError, KeyError, AttributeError, ValueError, IndexError):
        return []  # a field the checks need is malformed; the schema errors already say so
    return [Violation(format_path(p), m, _line_for(lines, p)) for p, m in found if not _within(format_path(p), already)]


def _within(path: str, reported: set[str]) -> bool:
    """Whether ``path`` or a field holding it (``eval.tasks`` for ``eval.tasks[0]``) is already reported."""
    if path in reported:
        return True
    cuts = [i for i, c in enumerate(path) if c in ".["]
    return any(path[:i] in reported for i in cuts)


# -- cross-field checks --------------------------------------------------------------------------


def cross_field_violations(data: dict[str, Any]) -> list[tuple[PathParts, str]]:
    """Checks the schema cannot express, on a recipe with defaults filled."""
    out: list[tuple[PathParts, str]] = []
    base, train, harvest = data["base_model"], data["train"], data["harvest"]
    max_pos = base.get("max_position_embeddings")
    if max_pos and train["sequence_len"] > max_pos:
        out.append(
            (
                ("train", "sequence_len"),
                f"got {train['sequence_len']}, expected at most the base "
                f"model's context length base_model.max_position_embeddings = {max_pos}",
            )
        )
    bits = train["quantization"]["bits"]
    if train["adapter"] == "qlora" and bits != 4:
        out.append(
            (
                ("train", "quantization", "bits"),
                f"got {_show(bits)}, expected 4: adapter 'qlora' "
                "trains on a 4-bit base (use adapter 'lora' for 8-bit or unquantised)",
            )
        )
    if train["adapter"] == "lora" and bits == 4:
        out.append(
            (("train", "adapter"), "got \"lora\" with quantization.bits 4, expected 'qlora' (a 4-bit base is QLoRA)")
        )
    if train["device"] == "cpu":
        for key, bad, why in (
            ("flash_attention", True, "FlashAttention needs a CUDA GPU"),
            ("precision", "fp16", "fp16 mixed precision needs a GPU; use fp32"),
            ("precision", "bf16", "bf16 mixed precision is not used on CPU; use fp32"),
        ):
            if train[key] == bad:
                out.append((("train", key), f"got {_show(bad)} with device 'cpu': {why}"))
        if train["distributed"] != "none":
            out.append(
                (
                    ("train", "distributed"),
                    f"got {_show(train['distributed'])} with device "
                    "'cpu', expected 'none' (DeepSpeed and FSDP need GPUs)",
                )
            )
        if train["optimizer"].startswith("paged_") or train["optimizer"].endswith("bnb_8bit"):
            out.append(
                (
                    ("train", "optimizer"),
                    f"got {_show(train['optimizer'])} with device 'cpu', "
                    "expected 'adamw_torch' (8-bit and paged optimisers need CUDA)",
                )
            )
    procs = train["gpus_per_node"] or train["num_gpus"] or 1
    if train["device"] == "cpu" and train["launcher"] != "torchrun" and train["nodes"] * procs > 1:
        out.append(
            (
                ("train", "launcher"),
                f"got {_show(train['launcher'])} with device 'cpu' and {train['nodes'] * procs} processes, expected "
                "'torchrun' (several CPU processes train over gloo through torchrun; Ray workers need GPUs)",
            )
        )
    ev = data["eval"]
    if ev["backend"] == "vllm" and "cpu" in (ev["device"], train["device"] if ev["device"] == "auto" else ""):
        out.append((("eval", "backend"), "got \"vllm\" with a CPU device, expected 'hf' (vLLM needs a CUDA GPU)"))
    if ev["backend"] == "vllm" and train["lora"]["r"] > 512:
        out.append((("train", "lora", "r"), f"got {train['lora']['r']}, expected at most 512 with eval.backend 'vllm'"))
    if train["nodes"] > 1 and train["device"] == "auto":
        out.append((("train", "device"), "got \"auto\" with train.nodes > 1, expected 'cuda' or 'cpu' (one for all)"))
    if train["tracking"]["backend"] == "wandb" and not train["tracking"]["project"]:
        out.append((("train", "tracking", "project"), "missing: W&B tracking needs a project name"))
    if train["max_steps"] is not None and train["save_steps"] > train["max_steps"]:
        out.append(
            (
                ("train", "save_steps"),
                f"got {train['save_steps']}, expected at most "
                f"train.max_steps = {train['max_steps']} (no checkpoint would be saved)",
            )
        )
    dedup = harvest["dedup"]
    if dedup["bands"] * dedup["rows"] > dedup["num_perm"]:
        out.append(
            (
                ("harvest", "dedup", "bands"),
                f"bands x rows = {dedup['bands'] * dedup['rows']}, expected at most num_perm = {dedup['num_perm']}",
            )
        )
    quality = harvest["quality"]
    for low, high in (("min_chars", "max_chars"), ("min_words", "max_words"), ("min_grade", "max_grade")):
        if quality[low] > quality[high]:
            out.append(
                (("harvest", "quality", low), f"got {quality[low]}, expected at most quality.{high} = {quality[high]}")
            )
    chunk_max = harvest["chunking"]["max_tokens"]
    if chunk_max is not None and chunk_max >= train["sequence_len"]:
        out.append(
            (
                ("harvest", "chunking", "max_tokens"),
                f"got {chunk_max}, expected less than "
                f"train.sequence_len = {train['sequence_len']} (room is needed for the prompt)",
            )
        )
    for i, source in enumerate(harvest["sources"]):
        where: PathParts = ("harvest", "sources", i)
        if source["kind"] == "web" and not (source["start_urls"] or source["sitemaps"]):
            out.append((where + ("start_urls",), "missing: a 'web' source needs start_urls or sitemaps"))
        if source["kind"] in ("local", "served") and not source.get("path"):
            out.append((where + ("path",), f"missing: a '{source['kind']}' source needs a path"))
    names = [s["name"] for s in harvest["sources"]]
    for i, name in enumerate(names):
        if name in names[:i]:
            out.append(
                (("harvest", "sources", i, "name"), f"got {_show(name)}, expected a name not used by another source")
            )
    export = data["export"]
    q = export["ollama"]["quantization"]
    if q is not None and q not in export["quantizations"] and q != export["outtype"]:
        out.append(
            (
                ("export", "ollama", "quantization"),
                f"got {_show(q)}, expected one of "
                f"export.quantizations {export['quantizations']} or '{export['outtype']}'",
            )
        )
    return out


# -- URLs, host names and paths written in the recipe --------------------------------------------


def url_problem(url: Any) -> str | None:
    """Why ``url`` is not an http(s) URL with a host a crawler can fetch; None when it is."""
    if not isinstance(url, str):
        return None  # the schema reports the type
    if url != url.strip() or any(c.isspace() for c in url):
        return "contains spaces; encode them as %20 (or remove them)"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"not a valid URL ({exc})"
    if parts.scheme.lower() not in ("http", "https"):
        return "expected an http:// or https:// URL"
    if not parts.hostname:
        return "has no host; expected e.g. https://docs.example.com/guide/"
    host = parts.hostname
    if host.startswith(".") or ".." in host:
        return f"host {host!r} is not a valid host name"
    if port == 0:
        return "port 0 is not a port"
    return None


_HOST = re.compile(r"^(?:\[[0-9A-Fa-f:.]+\]|[^\s/:@?#*\[\]]+)(?::\d{1,5})?$")


def host_problem(host: Any) -> str | None:
    """Why ``host`` is not a host name (optionally with a port) for ``allowed_domains``."""
    if not isinstance(host, str):
        return None
    if "://" in host:
        bare = urlsplit(host).netloc or host.split("://", 1)[1].split("/", 1)[0]
        fix = f"; write {bare!r}" if bare else ""
        return f"a URL, expected a host name such as docs.aws.amazon.com{fix} (paths go in path_prefixes)"
    if "*" in host:
        return "wildcards are not supported: list each host (subdomains are not included unless listed)"
    if "/" in host:
        bare, _, rest = host.partition("/")
        return f"a host name has no path: write {bare!r} and put '/{rest}' in path_prefixes"
    if not host.strip() or not _HOST.match(host) or host.startswith(".") or ".." in host:
        return "expected a host name such as docs.aws.amazon.com (optionally with :port)"
    return None


def _is_hidden(name: str) -> bool:
    return name.startswith(".") and name not in (".", "..")


def path_problem(value: Any, folder: Path) -> str | None:
    """Why a path written in a recipe in ``folder`` may not be used; None when it may.

    A relative path must stay inside the recipe's folder; absolute paths (and ``~/...``) are the
    user's explicit choice. Hidden names (``.git``, ``.env``, ``.ssh``) are never read.
    """
    if not isinstance(value, str):
        return None
    if not value.strip():
        return "an empty path"
    if "\x00" in value:
        return "contains a NUL character"
    parts = PurePath(value).parts
    hidden = next((p for p in parts if _is_hidden(p)), None)
    if hidden:
        return f"names a hidden file or folder ({hidden!r}); Bastion never reads hidden files and folders"
    expanded = os.path.expanduser(value)
    if not os.path.isabs(expanded) and os.path.normpath(expanded).split(os.sep)[0] == os.pardir:
        return (
            f"climbs out of the recipe's folder ({folder}); put the files beside the recipe or write an absolute path"
        )
    return None


def _glob_problem(pattern: Any) -> str | None:
    if not isinstance(pattern, str):
        return None
    if not pattern.strip():
        return "an empty pattern"
    if os.path.isabs(pattern) or pattern.startswith("~"):
        return "expected a pattern relative to the source's folder, such as **/*.md"
    parts = PurePath(pattern).parts
    if os.pardir in parts:
        return "climbs out of the source's folder with '..'"
    hidden = next((p for p in parts if _is_hidden(p)), None)
    if hidden:
        return f"names hidden files ({hidden!r}); Bastion never reads hidden files and folders"
    return None


def input_violations(data: dict[str, Any], recipe_path: Path | None = None) -> list[tuple[PathParts, str]]:
    """URLs, host names, glob patterns and paths written in the recipe (no file is opened)."""
    folder = recipe_path.parent if recipe_path else Path(".")
    out: list[tuple[PathParts, str]] = []
    for i, source in enumerate(data["harvest"]["sources"]):
        where: PathParts = ("harvest", "sources", i)
        for key in ("start_urls", "sitemaps"):
            for j, url in enumerate(source.get(key) or []):
                problem = url_problem(url)
                if problem:
                    out.append((where + (key, j), f"got {_show(url)}: {problem}"))
        for j, host in enumerate(source.get("allowed_domains") or []):
            problem = host_problem(host)
            if problem:
                out.append((where + ("allowed_domains", j), f"got {_show(host)}: {problem}"))
        if source.get("kind") in ("local", "served") and source.get("path"):
            problem = path_problem(source["path"], folder)
            if problem:
                out.append((where + ("path",), f"got {_show(source['path'])}: {problem}"))
        for j, pattern in enumerate(source.get("include") or []):
            problem = _glob_problem(pattern)
            if problem:
                out.append((where + ("include", j), f"got {_show(pattern)}: {problem}"))
    for j, task_path in enumerate(data["eval"]["task_paths"]):
        problem = path_problem(task_path, folder)
        if problem:
            out.append((("eval", "task_paths", j), f"got {_show(task_path)}: {problem}"))
    for kind, bank in data["eval"]["banks"].items():
        problem = path_problem(bank, folder) if bank is not None else None
        if problem:
            out.append((("eval", "banks", kind), f"got {_show(bank)}: {problem}"))
    return out


def source_path_violations(data: dict[str, Any], recipe_path: Path) -> list[tuple[PathParts, str]]:
    """The harvest stage's check: each local source's path exists, each served source's folder
    exists and has the index.html its crawl starts from."""
    out: list[tuple[PathParts, str]] = []
    for i, source in enumerate(data["harvest"]["sources"]):
        kind, value = source.get("kind"), source.get("path")
        if kind not in ("local", "served") or not isinstance(value, str) or path_problem(value, recipe_path.parent):
            continue
        where: PathParts = ("harvest", "sources", i, "path")
        target = resolve_in(recipe_path.parent, value)
        if not target.exists():
            out.append((where, f"got {_show(value)}: {target} does not exist"))
        elif kind == "served" and not target.is_dir():
            out.append((where, f"got {_show(value)}: {target} is not a folder (a 'served' source serves a folder)"))
        elif kind == "served" and not any((target / n).is_file() for n in ("index.html", "index.htm")):
            out.append(
                (where, f"got {_show(value)}: {target} has no index.html, where the crawl of a 'served' source starts")
            )
    return out
