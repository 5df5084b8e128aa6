"""Recipe loading: the shipped recipes validate; every mistake is reported with path and line."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import REPO

from bastion.errors import MissingResourceError
from bastion.recipe import RecipeError, load_recipe, resolve_recipe_path

BASE = """\
name: test-recipe
base_model:
  id: bastion:tiny-llama
system_prompt: You are helpful.
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", ["llama31-8b.yaml", "tiny-cpu.yaml"])
def test_shipped_recipes_validate(name: str) -> None:
    recipe = load_recipe(name)
    assert recipe.path == REPO / "recipes" / name
    assert len(recipe.sha256) == 64


def test_shipped_recipes_point_editors_at_the_schema() -> None:
    for path in (REPO / "recipes").glob("*.yaml"):
        assert path.read_text().startswith("# yaml-language-server: $schema=../schemas/recipe.schema.json")


def test_flagship_is_qlora_nf4_packed_flash_attention() -> None:
    r = load_recipe("llama31-8b.yaml")
    assert r.base_model["id"] == "meta-llama/Llama-3.1-8B-Instruct"
    assert (r.train["adapter"], r.train["quantization"]["quant_type"]) == ("qlora", "nf4")
    assert r.train["sequence_len"] == 4096 and r.train["sample_packing"] and r.train["flash_attention"]
    names = {s["name"] for s in r.harvest["sources"]}
    assert {
        "aws-security-pillar",
        "azure-security",
        "gcp-security",
        "kubernetes-security",
        "nist-publications",
        "cis-controls",
        "owasp-cloud",
    } <= names
    for source in r.harvest["sources"]:
        assert source["allowed_domains"] and source["path_prefixes"], source["name"]


def test_defaults_are_filled(tmp_path: Path) -> None:
    r = load_recipe(write(tmp_path, BASE))
    assert r.train["lora"] == {"r": 32, "alpha": 64, "dropout": 0.05, "target_modules": "all-linear"}
    assert r.harvest["dedup"]["bands"] * r.harvest["dedup"]["rows"] <= r.harvest["dedup"]["num_perm"]
    assert r.export["quantizations"] == ["q4_k_m", "q8_0"]
    assert r.train["axolotl"] == {}


def test_three_mistakes_are_all_reported_with_path_line_and_hint(tmp_path: Path) -> None:
    text = BASE + "trian:\n  num_epochs: 2\ntrain:\n  lora:\n    r: abc\n  lr_scheduler: cosin\n"
    with pytest.raises(RecipeError) as info:
        load_recipe(write(tmp_path, text))
    err = info.value
    assert err.exit_code == 2
    by_path = {v.path: v for v in err.violations}
    assert set(by_path) == {"trian", "train.lora.r", "train.lr_scheduler"}
    assert "did you mean 'train'" in by_path["trian"].message
    assert by_path["trian"].line == 5
    assert '"abc"' in by_path["train.lora.r"].message and "integer" in by_path["train.lora.r"].message
    assert by_path["train.lora.r"].line == 9
    assert "did you mean 'cosine'" in by_path["train.lr_scheduler"].message
    assert "3 problems" in str(err) and str(tmp_path / "recipe.yaml") in str(err)


def test_cross_field_checks(tmp_path: Path) -> None:
    text = (
        BASE.replace("  id: bastion:tiny-llama\n", "  id: x\n  max_position_embeddings: 2048\n")
        + """\
train:
  device: cpu
  adapter: qlora
  sequence_len: 4096
  quantization: {bits: 8}
  precision: bf16
  flash_attention: true
  optimizer: adamw_torch
harvest:
  dedup: {num_perm: 64, bands: 16, rows: 8}
  sources:
    - {name: a, kind: web}
"""
    )
    with pytest.raises(RecipeError) as info:
        load_recipe(write(tmp_path, text))
    paths = {v.path for v in info.value.violations}
    assert paths == {
        "train.sequence_len",
        "train.quantization.bits",
        "train.precision",
        "train.flash_attention",
        "harvest.dedup.bands",
        "harvest.sources[0].start_urls",
    }


def test_cross_field_checks_run_alongside_schema_errors(tmp_path: Path) -> None:
    text = BASE + "train:\n  quantization: {bits: 8}\n  warmup_ratio: 2\n"
    with pytest.raises(RecipeError) as info:
        load_recipe(write(tmp_path, text))
    assert {v.path for v in info.value.violations} == {"train.warmup_ratio", "train.quantization.bits"}


def test_yaml_syntax_error_names_file_line_and_column(tmp_path: Path) -> None:
    with pytest.raises(Exception) as info:
        load_recipe(write(tmp_path, BASE + "train: [unclosed\n"))
    assert getattr(info.value, "exit_code", None) == 2
    assert f"{tmp_path / 'recipe.yaml'}:" in str(info.value) and "not valid YAML" in str(info.value)


def test_non_mapping_recipe(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="must be a YAML mapping"):
        load_recipe(write(tmp_path, "- just\n- a list\n"))


def test_name_resolution_against_recipes_folder() -> None:
    assert resolve_recipe_path("llama31-8b.yaml") == REPO / "recipes" / "llama31-8b.yaml"
    assert resolve_recipe_path("llama31-8b") == REPO / "recipes" / "llama31-8b.yaml"
    with pytest.raises(MissingResourceError, match="did you mean 'llama31-8b.yaml'"):
        resolve_recipe_path("llama31-8c.yaml")


def test_duplicate_keys_are_reported(tmp_path: Path) -> None:
    with pytest.raises(RecipeError) as info:
        load_recipe(write(tmp_path, BASE + "train:\n  seed: 1\n  seed: 2\n"))
    (violation,) = info.value.violations
    assert violation.path == "train.seed" and violation.line == 7 and "first on line 6" in violation.message
