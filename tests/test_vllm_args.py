"""vLLM where it pays: the arguments Bastion renders for lm-eval's ``vllm`` model and for ``vllm serve``,
checked against lm-eval's own ``VLLM.__init__`` (its installed source, read with ast: importing it needs
vllm) and against the pinned vLLM wheel's ``EngineArgs`` and CLI flags (tests/data, extracted by
scripts/vllm_signature.py). vLLM itself cannot run here (no GPU); `just gpu-check` runs it for real."""

from __future__ import annotations

import ast
import importlib.util
import json
from pathlib import Path

import pytest
from conftest import REPO

from bastion.errors import BadInputError
from bastion.recipe import load_recipe
from bastion.run_folder import RunFolder
from bastion.vllm import MAX_LORA_RANKS, VLLM_VERSION, max_lora_rank, vllm_serve_command
from evals.runner import reproduce_command, vllm_model_args

SIGNATURE = json.loads((REPO / "tests" / "data" / f"vllm-{VLLM_VERSION}-signature.json").read_text())
LM_EVAL_VLLM = Path(importlib.util.find_spec("lm_eval").origin).parent / "models" / "vllm_causallms.py"  # type: ignore[arg-type]


def lm_eval_vllm() -> tuple[dict[str, ast.expr | None], ast.ClassDef]:
    """lm-eval's VLLM.__init__ parameters (name -> default) and the class itself, from its source."""
    tree = ast.parse(LM_EVAL_VLLM.read_text(encoding="utf-8"))
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "VLLM")
    init = next(n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "__init__")
    args = init.args.args[1:]
    defaults: list[ast.expr | None] = [None] * (len(args) - len(init.args.defaults)) + list(init.args.defaults)
    return {a.arg: d for a, d in zip(args, defaults, strict=True)}, cls


def vllm_recipe(tmp_path: Path, r: int = 32, **eval_keys: object) -> Path:
    text = (REPO / "recipes" / "llama31-8b.yaml").read_text().replace("r: 32,", f"r: {r},")
    extra = "".join(f"  {k}: {v}\n" for k, v in {"backend": "vllm", **eval_keys}.items())
    path = tmp_path / "vllm.yaml"
    path.write_text(text.replace("\neval:\n", "\neval:\n" + extra, 1))
    return path


def test_the_signature_file_is_of_the_pinned_version() -> None:
    assert SIGNATURE["version"] == VLLM_VERSION and VLLM_VERSION in SIGNATURE["wheel"]
    assert tuple(SIGNATURE["max_lora_ranks"]) == MAX_LORA_RANKS
    assert {"tensor_parallel_size", "data_parallel_size", "enable_lora", "max_lora_rank"} <= set(
        SIGNATURE["engine_args"]
    )


def test_lm_eval_model_args_match_lm_evals_signature(tmp_path: Path) -> None:
    recipe = load_recipe(vllm_recipe(tmp_path, tensor_parallel_size=2, data_parallel_size=4))
    adapter = tmp_path / "adapter"
    args = vllm_model_args(recipe, "meta-llama/Llama-3.1-8B-Instruct", adapter)
    params, _ = lm_eval_vllm()
    assert set(args) <= set(params), set(args) - set(params)  # every key is one of VLLM.__init__'s own
    assert args["lora_local_path"] == str(adapter)
    assert args["max_lora_rank"] == 32 >= recipe.train["lora"]["r"]
    assert ast.literal_eval(params["max_lora_rank"]) == 16  # lm-eval's default would refuse an r=32 adapter
    assert (args["tensor_parallel_size"], args["data_parallel_size"]) == (2, 4)
    assert "peft" not in args and "lora_local_path" not in vllm_model_args(recipe, "m", None)


def test_lm_eval_turns_the_adapter_into_a_lora_request() -> None:
    """Bastion runs base and tuned on one engine by setting ``lm.lora_request``: lm-eval must enable LoRA
    from lora_local_path, pass max_lora_rank to the engine, and read self.lora_request when generating."""
    _, cls = lm_eval_vllm()
    source = ast.unparse(cls)
    assert "'enable_lora': bool(lora_local_path)" in source
    assert "'max_lora_rank': int(max_lora_rank)" in source
    assert "self.lora_request = LoRARequest(" in source and "self.lora_request = None" in source
    # read at request time on every path (one engine, and data parallel with and without Ray)
    assert "lora_request=self.lora_request" in source and source.count("self.lora_request") >= 5


def test_lora_rank_rounds_up_to_what_vllm_accepts() -> None:
    assert [max_lora_rank(r) for r in (1, 4, 8, 16, 24, 32, 100, 512)] == [1, 8, 8, 16, 32, 32, 128, 512]
    with pytest.raises(ValueError, match="at most 512"):
        max_lora_rank(1024)


@pytest.mark.parametrize("r", [8, 64, 256])
def test_engine_args_exist_in_the_pinned_vllm(tmp_path: Path, r: int) -> None:
    recipe = load_recipe(vllm_recipe(tmp_path, r=r))
    args = vllm_model_args(recipe, "m", tmp_path)
    params, _ = lm_eval_vllm()
    engine = set(SIGNATURE["engine_args"])
    # what lm-eval does not consume itself reaches vllm.LLM(...) -> EngineArgs
    passed = {k for k in args if k not in ("pretrained", "max_gen_toks", "lora_local_path", "batch_size")}
    assert passed - {"data_parallel_size"} <= engine | {"revision", "dtype", "seed", "trust_remote_code"}
    assert {"tensor_parallel_size", "gpu_memory_utilization", "max_model_len", "max_lora_rank"} <= engine
    assert args["max_lora_rank"] in SIGNATURE["max_lora_ranks"] and args["max_lora_rank"] >= r
    assert set(params) - {"pretrained"}  # parsed


def test_serve_command_flags_are_vllms_own() -> None:
    command = vllm_serve_command(
        "meta-llama/Llama-3.1-70B-Instruct",
        port=8000,
        host="0.0.0.0",
        tensor_parallel=4,
        data_parallel=2,
        max_lora_rank=64,
        lora_modules={"cloudsec": "/runs/x/train/adapter"},
        served_model_name="teacher",
        max_model_len=8192,
        seed=7,
        revision="main",
    )
    assert command[:3] == ["vllm", "serve", "meta-llama/Llama-3.1-70B-Instruct"]
    flags = [part for part in command if part.startswith("--")]
    known = set(SIGNATURE["engine_flags"]) | set(SIGNATURE["frontend_flags"])
    assert set(flags) <= known, set(flags) - known
    value = {flag: command[command.index(flag) + 1] for flag in flags if flag != "--enable-lora"}
    assert value["--tensor-parallel-size"] == "4" and value["--data-parallel-size"] == "2"
    assert value["--max-lora-rank"] == "64" and value["--lora-modules"] == "cloudsec=/runs/x/train/adapter"
    assert "--enable-lora" in command and value["--port"] == "8000"


def test_serve_command_without_adapters_has_no_lora_flags() -> None:
    command = vllm_serve_command("m", port=8100)
    assert not [p for p in command if "lora" in p] and set(p for p in command if p.startswith("--")) <= set(
        SIGNATURE["engine_flags"]
    ) | set(SIGNATURE["frontend_flags"])


def test_reproduce_command_names_the_vllm_model(tmp_path: Path) -> None:
    recipe = load_recipe(vllm_recipe(tmp_path, tensor_parallel_size=2))
    line = reproduce_command(recipe, RunFolder(tmp_path), "m", tmp_path / "adapter", tmp_path / "out")
    assert "--model vllm" in line and f"lora_local_path={tmp_path / 'adapter'}" in line
    assert "max_lora_rank=32" in line and "tensor_parallel_size=2" in line and "peft=" not in line


def test_vllm_on_cpu_is_refused(tmp_path: Path) -> None:
    text = (REPO / "recipes" / "tiny-cpu.yaml").read_text().replace("\neval:\n", "\neval:\n  backend: vllm\n", 1)
    path = tmp_path / "r.yaml"
    path.write_text(text)
    with pytest.raises(BadInputError, match=r"eval.backend.*vLLM needs a CUDA GPU"):
        load_recipe(path)


def test_the_readme_names_the_pinned_version() -> None:
    import re

    named = set(re.findall(r"vllm==([0-9][0-9.]*[0-9])", (REPO / "README.md").read_text()))
    assert named == {VLLM_VERSION}
