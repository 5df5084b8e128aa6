"""Recipe loading: the shipped recipes validate; every mistake is reported with path and line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import REPO

from bastion.errors import BadInputError, MissingResourceError
from bastion.recipe import RecipeError, load_recipe, resolve_recipe_path

BASE = """\
name: test-recipe
base_model:
  id: bastion:tiny-llama
system_prompt: You are helpful.
"""


SOURCE = "harvest:\n  sources:\n    - {name: docs, kind: web, start_urls: ['https://docs.example.com/']}\n"


def write(tmp_path: Path, text: str) -> Path:
    """``text`` as tmp_path/recipe.yaml; a recipe without a harvest section gets a web source."""
    path = tmp_path / "recipe.yaml"
    path.write_text(text if "\nharvest:" in text or not text.startswith("name:") else text + SOURCE)
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


# -- issue 15: hostile and broken input ----------------------------------------------------------

TINY = (
    (REPO / "recipes" / "tiny-cpu.yaml")
    .read_text(encoding="utf-8")
    .replace("path: corpus/cloudsec-mini", f"path: {REPO / 'recipes' / 'corpus' / 'cloudsec-mini'}")
)
MCQ_ROW = {
    "id": "q1",
    "question": "Which is least privilege?",
    "choices": ["Admin", "Scoped", "Root", "Shared"],
    "answer": "B",
}
OPEN_ROW = {
    "id": "o1",
    "question": "Name a factor.",
    "reference": "A key.",
    "key_points": [{"point": "key", "any_of": ["key"]}],
}


def tiny(tmp_path: Path, old: str = "", new: str = "", name: str = "recipe.yaml") -> Path:
    assert old in TINY
    path = tmp_path / name
    path.write_text(TINY.replace(old, new, 1), encoding="utf-8")
    return path


def violations(path: Path, checks: tuple[object, ...] = ()) -> dict[str, str]:
    with pytest.raises(RecipeError) as info:
        load_recipe(path, checks=list(checks))  # type: ignore[arg-type]
    return {v.path: v.message for v in info.value.violations}


def eval_checks() -> tuple[object, ...]:
    from evals.recipe_checks import check_recipe

    return (check_recipe,)


@pytest.mark.parametrize(
    ("old", "new", "path", "needle"),
    [
        ("val_set_size: 0.05", "val_set_size: .nan", "train.val_set_size", ".nan (not a number)"),
        ("timeout_seconds: 5", "timeout_seconds: .inf", "harvest.politeness.timeout_seconds", ".inf (infinity)"),
        ("val_set_size: 0.05", "val_set_size: 5e-2", "train.val_set_size", "YAML reads 5e-2 as text"),
        (
            "system_prompt: You are a Cloud Security Architect. Answer precisely and practically.",
            'system_prompt: "    "',
            "system_prompt",
            "blank",
        ),
    ],
)
def test_values_that_used_to_pass(tmp_path: Path, old: str, new: str, path: str, needle: str) -> None:
    assert needle in violations(tiny(tmp_path, old, new))[path]


def test_empty_sources_and_host_checks(tmp_path: Path) -> None:
    served = TINY[
        TINY.index("    - name: cloudsec-mini") : TINY.index("      max_depth: 4\n") + len("      max_depth: 4\n")
    ]
    empty = tmp_path / "empty.yaml"
    empty.write_text(TINY.replace("  sources:\n" + served, "  sources: []\n"))
    assert "at least 1 item" in violations(empty)["harvest.sources"]
    web = "    - {name: aws, kind: web, start_urls: ['https://'], allowed_domains: ['https://docs.aws.amazon.com/']}\n"
    found = violations(tiny(tmp_path, "  sources:\n", "  sources:\n" + web))
    assert "has no host" in found["harvest.sources[0].start_urls[0]"]
    assert "write 'docs.aws.amazon.com'" in found["harvest.sources[0].allowed_domains[0]"]


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (TINY.replace("Architect", "Architecte sécurité").encode("latin-1"), "not UTF-8 text (byte 0xe9 at offset"),
        (TINY.encode("utf-16"), "UTF-16 text (byte-order mark FF FE); save it as UTF-8"),
        (bytes(range(256)) * 4, "binary data"),
    ],
    ids=["latin-1", "utf-16", "binary"],
)
def test_undecodable_recipes_name_the_file_and_exit_2(tmp_path: Path, content: bytes, needle: str) -> None:
    path = tmp_path / "recipe.yaml"
    path.write_bytes(content)
    with pytest.raises(BadInputError) as info:
        load_recipe(path)
    assert info.value.exit_code == 2
    assert str(info.value).startswith(str(path)) and needle in str(info.value)


def test_hostile_files_are_refused_fast(tmp_path: Path) -> None:
    import time

    bomb = "a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
        f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 12)
    )
    unknown = "".join(f"key{i}: {i}\n" for i in range(400_000))
    for text, needle in ((bomb, "aliases"), (unknown, "bytes, more than")):
        path = tmp_path / "hostile.yaml"
        path.write_text(text)
        start = time.perf_counter()
        with pytest.raises(BadInputError, match=needle):
            load_recipe(path)
        assert time.perf_counter() - start < 1.0


def test_problems_are_capped_at_fifty(tmp_path: Path) -> None:
    path = tmp_path / "recipe.yaml"
    path.write_text(TINY + "".join(f"unknown{i}: 1\n" for i in range(500)))
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    text = str(info.value)
    assert len(info.value.violations) == 500 and "500 problems" in text
    assert text.count("\n  - ") == 50 and text.endswith("... and 450 more")


def test_yaml_booleans_get_a_hint(tmp_path: Path) -> None:
    found = violations(tiny(tmp_path, "    min_words: 25\n", "    min_words: 25\n    languages: [en, no]\n"))
    assert 'YAML reads an unquoted no as a boolean: quote it, "no"' in found["harvest.quality.languages[1]"]


def test_a_climbing_source_path_is_refused(tmp_path: Path) -> None:
    path = tiny(tmp_path, f"path: {REPO / 'recipes' / 'corpus' / 'cloudsec-mini'}", "path: ../../../../../etc")
    assert "climbs out of the recipe's folder" in violations(path)["harvest.sources[0].path"]


def test_eval_tasks_are_checked(tmp_path: Path) -> None:
    path = tiny(tmp_path, "tasks: [cloudsec]", "tasks: [cloudsek, cloudsec_mcq, mmlu_computer_security, 'cloudsec_*']")
    found = violations(path, eval_checks())
    assert set(found) == {"eval.tasks[0]"} and "did you mean 'cloudsec'?" in found["eval.tasks[0]"]
    load_recipe(
        tiny(tmp_path, "tasks: [cloudsec]", "tasks: [cloudsec, mmlu_computer_security]"), checks=list(eval_checks())
    )


def test_own_task_folders_are_checked(tmp_path: Path) -> None:
    tasks = tmp_path / "mytasks" / "sub"
    tasks.mkdir(parents=True)
    (tasks / "mine.yaml").write_text("task: my_benchmark\ndataset_path: json\n")
    (tasks / "group.yaml").write_text("group: my_group\ntask:\n  - my_benchmark\ntag:\n  - my_tag\n")
    ok = tiny(tmp_path, "tasks: [cloudsec]", "tasks: [my_benchmark, my_group, my_tag]\n  task_paths: [mytasks]")
    load_recipe(ok, checks=list(eval_checks()))
    bad = tiny(tmp_path, "tasks: [cloudsec]", "tasks: [my_benchmrk]\n  task_paths: [mytasks, missing]", "bad.yaml")
    found = violations(bad, eval_checks())
    assert "did you mean 'my_benchmark'?" in found["eval.tasks[0]"]
    assert "does not exist" in found["eval.task_paths[1]"]


def test_eval_banks_are_checked(tmp_path: Path) -> None:
    import json

    (tmp_path / "mcq.jsonl").write_text(json.dumps(MCQ_ROW) + "\n")
    (tmp_path / "open.jsonl").write_text(json.dumps(OPEN_ROW) + "\n")
    good = tiny(tmp_path, "tasks: [cloudsec]", "tasks: [cloudsec]\n  banks: {mcq: mcq.jsonl, open: open.jsonl}")
    assert load_recipe(good, checks=list(eval_checks())).eval["banks"]["mcq"] == "mcq.jsonl"
    # three options are fine; an answer that is not among them is not
    (tmp_path / "three.jsonl").write_text(json.dumps(dict(MCQ_ROW, choices=["a", "b", "c"], answer="D")) + "\n")
    (tmp_path / "broken.jsonl").write_text('{"id": 1,\n')
    bad = tiny(
        tmp_path, "tasks: [cloudsec]", "tasks: [cloudsec]\n  banks: {mcq: three.jsonl, open: broken.jsonl}", "b.yaml"
    )
    found = violations(bad, eval_checks())
    assert "answer" in found["eval.banks.mcq"] and "broken.jsonl:1: not valid JSON" in found["eval.banks.open"]
    missing = tiny(
        tmp_path, "tasks: [cloudsec]", "tasks: [cloudsec_open]\n  banks: {mcq: mcq.jsonl, open: nope.jsonl}", "m.yaml"
    )
    found = violations(missing, eval_checks())
    assert "would not be used" in found["eval.banks.mcq"] and "does not exist" in found["eval.banks.open"]


def test_stage_checks_do_not_repeat_a_malformed_field(tmp_path: Path) -> None:
    found = violations(tiny(tmp_path, "tasks: [cloudsec]", "tasks: cloudsek"), eval_checks())
    assert set(found) == {"eval.tasks"} and "expected array" in found["eval.tasks"]


def test_anchors_aliases_and_merge_keys_still_work(tmp_path: Path) -> None:
    text = TINY.replace("val_set_size: 0.05", "val_set_size: &lr 0.05")
    text = text.replace("    num_ctx: 2048\n", "    num_ctx: 2048\n    temperature: *lr\n")
    merged = "  tracking: {<<: &off {backend: none}, project: p}\n"
    text = re.sub(r"^  flash_attention: .*\n", lambda m: m.group(0) + merged, text, count=1, flags=re.M)
    path = tmp_path / "anchors.yaml"
    path.write_text(text)
    recipe = load_recipe(path)
    assert recipe.export["ollama"]["temperature"] == 0.05
    assert recipe.train["tracking"]["backend"] == "none" and recipe.train["tracking"]["project"] == "p"
