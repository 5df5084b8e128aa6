#!/usr/bin/env bash
# Set up Bastion on a fresh machine: .venv with the pinned dependencies (CPU torch first),
# llama.cpp's converter and vocabularies fetched from the pinned llama-cpp-python sdist into the
# cache, and the tiny test model built once. Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-}"
if [ -z "$PYTHON" ]; then
  for candidate in python3.11 python3.12 python3; do
    if command -v "$candidate" >/dev/null 2>&1; then PYTHON="$candidate"; break; fi
  done
fi
"$PYTHON" - <<'PY' || { echo "setup: Bastion needs Python 3.11 or 3.12 (found $("$PYTHON" --version 2>&1))" >&2; exit 2; }
import sys
sys.exit(0 if (3, 11) <= sys.version_info[:2] <= (3, 12) else 1)
PY

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=(.venv/bin/python -m pip --disable-pip-version-check)

# One stamp per dependency set: skip the (slow) resolver when nothing changed.
stamp=".venv/.bastion-setup-$(cat pyproject.toml constraints.txt scripts/setup.sh | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "setup: installing torch 2.13.0 first (any other torch request would pull the CUDA build)"
  "${PIP[@]}" install --quiet "torch==2.13.0"
  echo "setup: installing Bastion and its pinned dependencies (llama-cpp-python compiles once, ~9 min)"
  # GGML_NATIVE=OFF: a llama.cpp build that runs on any x86-64 CPU, not only this one.
  CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF}" "${PIP[@]}" install --quiet -c constraints.txt -e ".[dev]"
  rm -f .venv/.bastion-setup-*
  touch "$stamp"
fi

export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
echo "setup: fetching llama.cpp's converter and vocabularies (pinned llama-cpp-python sdist)"
.venv/bin/python -m bastion.vendor
echo "setup: building the tiny test model (cached)"
.venv/bin/python -m bastion.tiny_model
echo "setup: caching the keys of Axolotl's config schema (recipe validation)"
.venv/bin/python -c "from train.axolotl_config import known_axolotl_keys; known_axolotl_keys()"
# Go: tests/test_modelfile.py runs the Ollama TEMPLATE with Go's text/template, as Ollama does.
if ! command -v go >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing Go (Debian's golang-go) for the Modelfile template test"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends golang-go; } \
      || echo "setup: could not install golang-go; tests/test_modelfile.py will fail until Go is installed" >&2
  else
    echo "setup: Go is missing and this is not root with apt-get: install Go 1.19+ (e.g. sudo apt-get install golang-go)," \
      "or tests/test_modelfile.py will fail" >&2
  fi
fi
echo "setup: done. Next: .venv/bin/just demo   (or: source .venv/bin/activate)"
