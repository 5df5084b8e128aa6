# Bastion's CUDA image for GPU runs.
#   just docker-build                          (docker build -t bastion:latest .)
#   just docker-train recipe=llama31-8b.yaml   or, by hand:
#   docker run --gpus all --rm -e HF_TOKEN -v bastion-hf:/cache/huggingface \
#       -v "$PWD/runs:/workspace/runs" bastion:latest train recipe=llama31-8b.yaml
# The arguments after the image are `just` arguments: any verb of the Justfile (train, eval, export, all, ...).
# HF_TOKEN is read from the environment at run time (-e HF_TOKEN) and never stored in the image.
# Run folders land in /workspace/runs (BASTION_RUNS), the hub cache in /cache/huggingface (HF_HOME): both volumes.
# Your own recipe: -v "$PWD/mine.yaml:/workspace/mine.yaml:ro" ... train recipe=/workspace/mine.yaml
#
# Base image: torch==2.13.0 (pinned in pyproject.toml and constraints.txt) is, on PyPI, the CUDA 13.0 build:
# its wheel requires cuda-toolkit 13.0.3 (cudart 13.0.96, nvcc 13.0.88) and nvidia-cudnn-cu13. The toolkit that
# compiles llama.cpp, flash-attn and DeepSpeed's JIT ops here is that same CUDA 13.0.3, so one CUDA version is in
# play end to end. torch loads its own cuDNN wheel; the image's cuDNN serves builds. Host driver: 580 or newer.
FROM nvidia/cuda:13.0.3-cudnn-devel-ubuntu24.04

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ARG DEBIAN_FRONTEND=noninteractive

# Ubuntu 24.04's own Python 3.12 (pyproject allows 3.11 and 3.12; the pinned set resolves to the same versions
# on both). Compilers, cmake and ninja build llama.cpp, flash-attn and DeepSpeed's ops.
# apt versions are not pinned: the base image tag fixes the Ubuntu release and the CUDA toolkit, and Ubuntu's
# archive drops superseded versions, so exact pins would break the build within weeks. The versions that matter,
# the Python ones, are pinned by pyproject.toml and constraints.txt.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        python3.12 python3.12-venv python3.12-dev build-essential cmake ninja-build git ca-certificates \
    && rm -rf /var/lib/apt/lists/*

# A non-root user. The base image's 'ubuntu' user holds uid 1000; Bastion's user takes its place. Build with
# --build-arg BASTION_UID="$(id -u)" so that files in a bind-mounted runs/ belong to you.
ARG BASTION_UID=1000
RUN if id -u ubuntu >/dev/null 2>&1; then userdel --remove ubuntu 2>/dev/null || true; fi \
    && useradd --create-home --uid "${BASTION_UID}" --user-group --shell /bin/bash bastion \
    && mkdir -p /opt/bastion /opt/bastion-cache /cache/huggingface /workspace/runs \
    && chown bastion:bastion /opt/bastion /opt/bastion-cache /cache/huggingface /workspace/runs

ENV VIRTUAL_ENV=/opt/bastion/.venv \
    PATH=/opt/bastion/.venv/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HOME=/cache/huggingface \
    BASTION_CACHE=/opt/bastion-cache \
    BASTION_RUNS=/workspace/runs

WORKDIR /opt/bastion
USER ${BASTION_UID}

# Dependencies first, from pyproject.toml + constraints.txt only, so that editing the code does not rebuild them.
# constraints.txt is a freeze of the CPU install; the CUDA build of torch pins triton itself (exactly), so the
# freeze's triton line is left out of this image's constraints. torch goes in first: flash-attn and DeepSpeed
# compile against it. wheel: flash-attn's setup.py imports it.
COPY --chown=bastion:bastion pyproject.toml constraints.txt ./
RUN python3.12 -m venv "${VIRTUAL_ENV}" \
    && grep -v '^triton==' constraints.txt > /tmp/constraints-cuda.txt \
    && pip install -c /tmp/constraints-cuda.txt torch packaging psutil wheel \
    && python -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; print("\n".join(p["dependencies"]))' > /tmp/requirements.txt \
    && python -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; print("\n".join(p["optional-dependencies"]["gpu"]))' > /tmp/requirements-gpu.txt

# llama-cpp-python compiles llama.cpp with CUDA for these GPU generations (GGML_NATIVE=OFF: not "whatever the
# build machine has", which has no GPU). CUDA 13 supports compute capability 7.5 and newer.
ARG CUDA_ARCHITECTURES="75;80;86;89;90;100;120"
RUN CMAKE_ARGS="-DGGML_CUDA=on -DGGML_NATIVE=OFF -DCMAKE_CUDA_ARCHITECTURES=${CUDA_ARCHITECTURES}" \
        pip install -c /tmp/constraints-cuda.txt -r /tmp/requirements.txt \
    && python -c 'import importlib.util, pathlib, sys; lib = pathlib.Path(importlib.util.find_spec("llama_cpp").origin).parent / "lib"; sys.exit(0 if any(lib.glob("libggml-cuda.so*")) else "llama-cpp-python was built without CUDA")'

# The gpu extra (flash-attn, deepspeed) builds against the installed torch: no build isolation. flash-attn
# compiles for FLASH_ATTN_CUDA_ARCHS with MAX_JOBS parallel jobs (about 9 GB of memory each): lower it on small
# build machines. DeepSpeed's ops are compiled on first use (JIT), so DS_ACCELERATOR says "cuda" at build time.
ARG MAX_JOBS=4
ARG FLASH_ATTN_CUDA_ARCHS="80;90;100;120"
RUN MAX_JOBS="${MAX_JOBS}" FLASH_ATTN_CUDA_ARCHS="${FLASH_ATTN_CUDA_ARCHS}" DS_ACCELERATOR=cuda DS_BUILD_OPS=0 \
        pip install --no-build-isolation -c /tmp/constraints-cuda.txt -r /tmp/requirements-gpu.txt

# Bastion itself (editable: recipes/, schemas/ and the Justfile live next to the package), checked against the
# pins, then llama.cpp's converter and vocabularies fetched into the image's cache (BASTION_CACHE).
COPY --chown=bastion:bastion . .
RUN pip install -c /tmp/constraints-cuda.txt -e ".[gpu]" \
    && pip check \
    && python -m bastion.vendor

VOLUME ["/cache/huggingface", "/workspace/runs"]
ENTRYPOINT ["/opt/bastion/.venv/bin/just", "--justfile", "/opt/bastion/Justfile", "--working-directory", "/opt/bastion"]
CMD ["--list", "--unsorted"]
