# Bastion: the user's verbs. Every verb takes `recipe=NAME` (a file under recipes/ or a path):
#   just train recipe=llama31-8b.yaml
set shell := ["bash", "-euo", "pipefail", "-c"]

recipe := "tiny-cpu.yaml"
venv_bin := justfile_directory() / ".venv" / "bin"
bastion := if path_exists(venv_bin / "bastion") == "true" { venv_bin / "bastion" } else { "bastion" }
python := if path_exists(venv_bin / "python") == "true" { venv_bin / "python" } else { "python3" }


# List the verbs.
default:
    @just --list --unsorted

# Create .venv with the pinned dependencies, llama.cpp's tools and the tiny model (idempotent).
setup:
    bash scripts/setup.sh

# Run every stage on recipes/tiny-cpu.yaml: tiny model, offline, CPU.
demo:
    {{bastion}} demo

# Check a recipe against the schema; every problem is listed at once.
validate recipe=recipe:
    {{bastion}} validate {{quote(trim_start_match(recipe, "recipe="))}}

# Crawl and read the recipe's sources into Alpaca JSONL plus a quality report.
harvest recipe=recipe:
    {{bastion}} harvest {{quote(trim_start_match(recipe, "recipe="))}}

# Have a teacher model write grounded question-answer pairs from the harvested chunks (synth.enabled).
synth recipe=recipe:
    {{bastion}} synth {{quote(trim_start_match(recipe, "recipe="))}}

# Fine-tune the base model with Axolotl (QLoRA/LoRA).
train recipe=recipe:
    {{bastion}} train {{quote(trim_start_match(recipe, "recipe="))}}

# Evaluate base vs tuned with lm-evaluation-harness.
eval recipe=recipe:
    {{bastion}} eval {{quote(trim_start_match(recipe, "recipe="))}}

# Merge, convert to GGUF, quantise, verify, write the Ollama Modelfile.
export recipe=recipe:
    {{bastion}} export {{quote(trim_start_match(recipe, "recipe="))}}

# Run the eval tasks on the exported GGUF (eval.gguf) and compare it with the tuned model.
eval-gguf recipe=recipe:
    {{bastion}} eval-gguf {{quote(trim_start_match(recipe, "recipe="))}}

# Run every stage in order (harvest, synth, train, eval, export, eval-gguf), skipping those that are up to date.
all recipe=recipe:
    {{bastion}} all {{quote(trim_start_match(recipe, "recipe="))}}

# Serve the exported GGUF through llama-cpp-python's OpenAI-compatible server (loopback).
serve recipe=recipe:
    {{bastion}} serve {{quote(trim_start_match(recipe, "recipe="))}}

# Chat with the exported GGUF in the terminal.
chat recipe=recipe:
    {{bastion}} chat {{quote(trim_start_match(recipe, "recipe="))}}

# Lint (ruff), format check, type check (mypy), then the test suite (offline, CPU).
test *args:
    {{python}} -m ruff check .
    {{python}} -m ruff format --check .
    {{python}} -m mypy bastion harvest synth train evals export
    HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 {{python}} -m pytest {{args}}

# On a CUDA machine: the chain on the GPU with the tiny model, offline, in under 8 minutes; prints a pass/fail table.
gpu-check *args:
    {{python}} scripts/gpu_check.py {{args}}

# Run the benchmarks under bench/ (each prints a ratio measured side by side).
bench *args:
    for b in bench/*.py; do {{python}} "$b" {{args}}; done

# Regenerate docs/recipe.md, the recipe reference, from schemas/recipe.schema.json.
docs:
    {{python}} -m bastion.docs

# Build the CUDA image for GPU runs (extra arguments go to docker build, e.g. --build-arg MAX_JOBS=8).
docker-build *args:
    docker build -t bastion:latest {{args}} .

# Train in the CUDA image: HF_TOKEN from your environment, the hub cache in a volume, runs in ./runs.
docker-train recipe=recipe:
    mkdir -p runs
    docker run --gpus all --rm -e HF_TOKEN -v bastion-hf:/cache/huggingface -v "$PWD/runs:/workspace/runs" bastion:latest train recipe={{quote(trim_start_match(recipe, "recipe="))}}
