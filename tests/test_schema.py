"""The recipe schema itself: draft 2020-12, closed objects, a description and default everywhere."""

from __future__ import annotations

from typing import Any

import jsonschema

from bastion.recipe import load_schema


def _objects(schema: dict[str, Any], where: str = "#") -> list[tuple[str, dict[str, Any]]]:
    found = []
    if schema.get("type") == "object":
        found.append((where, schema))
    for key, sub in schema.get("properties", {}).items():
        found += _objects(sub, f"{where}/properties/{key}")
    for key, sub in schema.get("$defs", {}).items():
        found += _objects(sub, f"{where}/$defs/{key}")
    if isinstance(schema.get("items"), dict):
        found += _objects(schema["items"], f"{where}/items")
    return found


def test_schema_is_valid_draft_2020_12() -> None:
    schema = load_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)


def test_every_object_is_closed_except_the_axolotl_escape_hatch() -> None:
    open_objects = [w for w, s in _objects(load_schema()) if s.get("additionalProperties") is not False]
    assert open_objects == ["#/$defs/train/properties/axolotl"]


def test_every_field_has_a_description_and_a_default() -> None:
    schema = load_schema()
    missing = []
    for where, obj in _objects(schema):
        required = set(obj.get("required", []))
        for key, prop in obj.get("properties", {}).items():
            target = prop
            if "$ref" in prop:
                target = schema["$defs"][prop["$ref"].split("/")[-1]]
            if "description" not in target:
                missing.append(f"{where}.{key}: description")
            if "default" not in target and key not in required:
                missing.append(f"{where}.{key}: default")
    assert missing == []
