# Bastion GPU image (CUDA). Build: just docker-build ; run: docker run --gpus all IMAGE train recipe=llama31-8b.yaml
FROM nvidia/cuda:12.8.1-cudnn-devel-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    HF_HOME=/cache/huggingface BASTION_CACHE=/cache/bastion BASTION_RUNS=/workspace/runs
RUN apt-get update && apt-get install -y --no-install-recommends \
        python3.12 python3.12-venv python3.12-dev build-essential cmake git ca-certificates \
    && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 1000 bastion && mkdir -p /cache /workspace && chown -R bastion /cache /workspace
WORKDIR /opt/bastion
COPY --chown=bastion . /opt/bastion
USER bastion
RUN python3.12 -m venv /opt/bastion/.venv \
    && /opt/bastion/.venv/bin/pip install "torch==2.13.0" \
    && CMAKE_ARGS="-DGGML_CUDA=on" /opt/bastion/.venv/bin/pip install -e ".[gpu]" \
    && /opt/bastion/.venv/bin/python -m bastion.vendor
ENV PATH=/opt/bastion/.venv/bin:$PATH
VOLUME ["/cache", "/workspace/runs"]
ENTRYPOINT ["just", "--justfile", "/opt/bastion/Justfile", "--working-directory", "/workspace"]
CMD ["--list"]
