"""Extract the argument names of the pinned vLLM release from its wheel, without installing it.

    python scripts/vllm_signature.py                 # pip download --no-deps vllm==VLLM_VERSION into a temp dir
    python scripts/vllm_signature.py --wheel W.whl   # or read a wheel you already have

Writes tests/data/vllm-<version>-signature.json: ``EngineArgs``' dataclass fields (what ``vllm.LLM(**kwargs)``
and lm-eval's ``vllm`` model accept), every ``--flag`` of ``vllm serve`` (the engine's, written out in
``EngineArgs.add_cli_args``, and the OpenAI frontend's, one per ``FrontendArgs`` field) and the ranks
``max_lora_rank`` accepts. The tests check Bastion's rendered arguments against it; the wheel is not kept.
"""

from __future__ import annotations

import argparse
import ast
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bastion.vllm import VLLM_VERSION  # noqa: E402

OUT_DIR = REPO / "tests" / "data"


def dataclass_fields(tree: ast.Module, name: str) -> tuple[list[str], list[str]]:
    """Annotated field names of class ``name`` and the names of its bases."""
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == name:
            fields = [s.target.id for s in node.body if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)]
            return fields, [ast.unparse(b) for b in node.bases]
    raise SystemExit(f"class {name} not found")


def flag_literals(tree: ast.Module) -> list[str]:
    """Every string constant that looks like a long option (``--tensor-parallel-size``)."""
    return sorted(
        {
            n.value
            for n in ast.walk(tree)
            if isinstance(n, ast.Constant)
            and isinstance(n.value, str)
            and n.value.startswith("--")
            and " " not in n.value
        }
    )


def literal_ints(tree: ast.Module, name: str) -> list[int]:
    """The values of ``name = Literal[1, 8, ...]``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            sub = node.value
            assert isinstance(sub, ast.Subscript)
            elts = sub.slice.elts if isinstance(sub.slice, ast.Tuple) else [sub.slice]
            return [int(e.value) for e in elts if isinstance(e, ast.Constant)]
    raise SystemExit(f"{name} not found")


def signature(wheel: Path) -> dict[str, object]:
    with zipfile.ZipFile(wheel) as z:

        def parse(path: str) -> ast.Module:
            return ast.parse(z.read(path).decode("utf-8"))

        engine = parse("vllm/engine/arg_utils.py")
        frontend = parse("vllm/entrypoints/common/cli_args.py")
        lora = parse("vllm/config/lora.py")
    engine_fields, _ = dataclass_fields(engine, "EngineArgs")
    front_fields, _ = dataclass_fields(frontend, "FrontendArgs")
    base_fields, _ = dataclass_fields(frontend, "BaseFrontendArgs")
    return {
        "version": VLLM_VERSION,
        "wheel": wheel.name,
        "engine_args": sorted(engine_fields),
        "engine_flags": flag_literals(engine),
        "frontend_flags": sorted({"--" + f.replace("_", "-") for f in front_fields + base_fields}),
        "max_lora_ranks": literal_ints(lora, "MaxLoRARanks"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheel", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        wheel = args.wheel
        if wheel is None:
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "--no-deps", f"vllm=={VLLM_VERSION}", "-d", tmp], check=True
            )
            wheel = next(Path(tmp).glob("vllm-*.whl"))
        data = signature(wheel)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    out = OUT_DIR / f"vllm-{VLLM_VERSION}-signature.json"
    out.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    sys.stdout.write(f"wrote {out}: {len(data['engine_args'])} engine args, {len(data['engine_flags'])} flags\n")  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
