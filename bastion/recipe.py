"""Load a recipe: parse YAML, validate against the JSON Schema, fill defaults, cross-check.

Every violation is collected and reported at once, each with its path (``train.lora.r``), the
line in the file, the offending value and what was expected.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from bastion.errors import BadInputError, MissingResourceError
from bastion.paths import RECIPES_DIR, SCHEMAS_DIR

SCHEMA_PATH = SCHEMAS_DIR / "recipe.schema.json"
PathParts = tuple[str | int, ...]


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
    """A recipe that does not validate; carries every violation found."""

    def __init__(self, file: Path, violations: list[Violation]) -> None:
        self.file = file
        self.violations = violations
        count = len(violations)
        lines = [f"{file}: {count} problem{'s' if count != 1 else ''} in the recipe:"]
        lines += [f"  - {v.render(file)}" for v in violations]
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
        p = Path(value).expanduser()
        return p if p.is_absolute() else (self.path.parent / p).resolve()


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
        if c.is_file():
            return c.resolve()
    known = sorted(x.name for x in RECIPES_DIR.glob("*.yaml"))
    hint = difflib.get_close_matches(p.name, known, n=1)
    extra = f"; did you mean '{hint[0]}'?" if hint else f"; recipes available: {', '.join(known)}"
    raise MissingResourceError(f"recipe '{name}' not found (looked in . and {RECIPES_DIR}){extra}")


def load_recipe(name: str | Path) -> Recipe:
    """Load, validate and complete a recipe; raise :class:`RecipeError` listing every problem."""
    path = resolve_recipe_path(name)
    text = path.read_text(encoding="utf-8")
    data, lines = _parse_yaml(path, text)
    violations = schema_violations(data, lines)
    fill_defaults(data, load_schema())
    violations += _safe_cross_field_violations(data, lines, {v.path for v in violations})
    if violations:
        raise RecipeError(path, violations)
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


def _parse_yaml(path: Path, text: str) -> tuple[dict[str, Any], dict[PathParts, int]]:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise BadInputError(f"{where}: not valid YAML: {problem}") from None
    if not isinstance(data, dict):
        raise BadInputError(
            f"{path}: a recipe must be a YAML mapping (name:, base_model:, ...), got {type(data).__name__}"
        )
    lines: dict[PathParts, int] = {}
    duplicates: list[Violation] = []
    if node is not None:
        _index_lines(node, (), lines, duplicates)
    if duplicates:
        raise RecipeError(path, duplicates)
    return data, lines


def _index_lines(node: yaml.Node, prefix: PathParts, out: dict[PathParts, int], duplicates: list[Violation]) -> None:
    """Map each path to its line; YAML keeps the last of two equal keys silently, so report those."""
    out.setdefault(prefix, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
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
            _index_lines(value_node, path, out, duplicates)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _index_lines(item, prefix + (i,), out, duplicates)


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


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        ref = schema["$ref"]
        assert ref.startswith("#/"), ref
        target: Any = root
        for part in ref[2:].split("/"):
            target = target[part]
        schema = target
    return schema


def schema_violations(data: dict[str, Any], lines: dict[PathParts, int] | None = None) -> list[Violation]:
    """Every schema violation in ``data``, in file order, with friendly messages."""
    lines = lines or {}
    schema = load_schema()
    validator = jsonschema.Draft202012Validator(schema)
    found: list[tuple[PathParts, str]] = []
    for error in validator.iter_errors(data):
        found.extend(_explain(error, schema))
    unique = dict.fromkeys(found)
    violations = [Violation(format_path(p), m, _line_for(lines, p)) for p, m in unique]
    return sorted(violations, key=lambda v: (v.line or 0, v.path))


def _explain(error: jsonschema.ValidationError, root: dict[str, Any]) -> list[tuple[PathParts, str]]:
    path: PathParts = tuple(error.absolute_path)
    kind = error.validator
    value = error.instance
    sub = error.schema if isinstance(error.schema, dict) else {}
    if kind == "additionalProperties" and isinstance(value, dict):
        allowed = sorted(_resolve(sub, root).get("properties", {}))
        out = []
        for key in sorted(set(value) - set(allowed)):
            hint = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
            guess = f"did you mean '{hint[0]}'?" if hint else f"allowed keys: {', '.join(allowed)}"
            out.append((path + (str(key),), f"unknown key '{key}'; {guess}"))
        return out
    if kind == "required":
        missing = str(error.validator_value)
        missing_keys = [k for k in error.validator_value if isinstance(value, dict) and k not in value]
        missing = ", ".join(f"'{k}'" for k in missing_keys)
        return [(path, f"missing required key {missing}")]
    shown = _show(value)
    if kind == "type":
        expected = error.validator_value
        expected = " or ".join(expected) if isinstance(expected, list) else expected
        return [(path, f"got {shown} ({_type_name(value)}), expected {expected}")]
    if kind == "enum":
        opts = ", ".join(_show(o) for o in error.validator_value)
        hint = difflib.get_close_matches(str(value), [str(o) for o in error.validator_value], n=1)
        guess = f"; did you mean {hint[0]!r}?" if hint else ""
        return [(path, f"got {shown}, expected one of: {opts}{guess}")]
    bounds = {"minimum": ">=", "maximum": "<=", "exclusiveMinimum": ">", "exclusiveMaximum": "<"}
    if kind in bounds:
        return [(path, f"got {shown}, expected a number {bounds[kind]} {error.validator_value}")]
    if kind == "pattern":
        desc = sub.get("description", "")
        return [(path, f"got {shown}, expected text matching {error.validator_value}" + (f" ({desc})" if desc else ""))]
    if kind in ("minItems", "maxItems", "minLength", "maxLength", "uniqueItems"):
        return [(path, f"got {shown}: {error.message.replace(repr(value), '').strip()}")]
    if kind in ("oneOf", "anyOf"):
        desc = sub.get("description", "")
        return [(path, f"got {shown}, expected {desc or 'one of the allowed forms'}")]
    return [(path, f"got {shown}: {error.message}")]


def _type_name(value: Any) -> str:
    return {
        dict: "mapping",
        list: "list",
        str: "text",
        bool: "boolean",
        int: "integer",
        float: "number",
        type(None): "null",
    }.get(type(value), type(value).__name__)


def _show(value: Any) -> str:
    text = json.dumps(value, default=str)
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


def _safe_cross_field_violations(
    data: dict[str, Any], lines: dict[PathParts, int], already: set[str]
) -> list[Violation]:
    """Cross-field checks on a recipe that may also have schema errors (then some are skipped)."""
    try:
        found = cross_field_violations(data, lines)
    except (TypeError, KeyError, AttributeError, ValueError):
        return []  # a field the checks need is malformed; the schema errors already say so
    return [v for v in found if v.path not in already]


def cross_field_violations(data: dict[str, Any], lines: dict[PathParts, int] | None = None) -> list[Violation]:
    """Checks the schema cannot express, on a recipe with defaults filled."""
    lines = lines or {}
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
    return [Violation(format_path(p), m, _line_for(lines, p)) for p, m in out]
