"""The training process: validate the config with Axolotl's schema, check sample lengths, then train.

``bastion train`` runs this module as its subprocess (``python -m train.axolotl_launch CONFIG``,
or under ``accelerate launch`` for several GPUs) instead of the ``axolotl`` command, so that the
heavy imports (torch, transformers, axolotl) happen once, in the process that trains: the checks
cost no extra start-up, and they still run before any GPU time is spent.

Exit code 2 with a line ``bastion-error: ...`` means bad input; the parent turns it into a
clear message.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import yaml

ERROR_PREFIX = "bastion-error: "
log = logging.getLogger("train.axolotl_launch")


def _fail(message: str) -> None:
    sys.stderr.write(ERROR_PREFIX + message.replace("\n", "\n" + ERROR_PREFIX) + "\n")
    sys.stderr.flush()
    raise SystemExit(2)


def _rank0() -> bool:
    return os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) == "0"


def check_lengths(cfg: dict[str, Any], lengths_out: Path | None) -> None:
    """Length of every sample in the trainer's own format vs sequence_len; all too long -> exit 2."""
    from transformers import AutoTokenizer

    from bastion.chat_format import CHAT_TEMPLATE_KWARGS

    tokenizer = AutoTokenizer.from_pretrained(
        cfg["base_model"], revision=cfg.get("revision_of_model"), trust_remote_code=bool(cfg.get("trust_remote_code"))
    )
    path = Path(cfg["datasets"][0]["path"])
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    kwargs = cfg.get("chat_template_kwargs") or CHAT_TEMPLATE_KWARGS
    lengths = [
        len(tokenizer.apply_chat_template(r["messages"], tokenize=True, return_dict=False, **kwargs)) for r in rows
    ]
    limit = int(cfg["sequence_len"])
    too_long = sum(n > limit for n in lengths)
    report = {
        "samples": len(lengths),
        "too_long": too_long,
        "max_tokens": max(lengths, default=0),
        "sequence_len": limit,
        "tokens": sum(n for n in lengths if n <= limit),
    }
    if lengths_out is not None and _rank0():
        lengths_out.write_text(json.dumps(report) + "\n")
    if lengths and too_long == len(lengths):
        _fail(
            f"{path}: all {len(lengths)} samples are longer than sequence_len = {limit} tokens (longest "
            f"{report['max_tokens']}); Axolotl would drop every one and stop with num_samples=0. Raise "
            "train.sequence_len or lower harvest.chunking.max_tokens and harvest again"
        )
    if too_long:
        log.warning(
            "%d of %d samples are longer than sequence_len = %d tokens; Axolotl drops them",
            too_long,
            len(lengths),
            limit,
        )


def _world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def allow_cpu_processes() -> None:
    """Let Axolotl train with several processes on CPU (torch.distributed over gloo).

    Two things stop it otherwise. Accelerate makes a distributed CPU state (gloo, DDP, sharded batches) only
    when told the run is on CPU (``ACCELERATE_USE_CPU``); without it every process trains alone on its own
    shard and nothing is averaged. And Axolotl's ``normalize_config`` (axolotl/utils/config/__init__.py,
    ``cfg.device_map = {"": int(os.environ.get("LOCAL_RANK", 0))}`` when world_size != 1) asks for device
    index LOCAL_RANK, which transformers' ``is_accelerator_device`` (modeling_utils.py) refuses on a machine
    without an accelerator: "RuntimeError: Cannot access accelerator device when none is available". The
    model is placed on "cpu" instead, right after Axolotl normalises the config. GPU runs are untouched.
    """
    os.environ.setdefault("ACCELERATE_USE_CPU", "true")
    import axolotl.cli.config as cli_config

    normalize = cli_config.normalize_config

    def normalize_on_cpu(cfg: Any) -> None:
        normalize(cfg)
        cfg.device_map = {"": "cpu"}

    cli_config.normalize_config = normalize_on_cpu


def record_samples(folder: Path) -> None:
    """Diagnostics (``BASTION_SAMPLE_LOG=DIR``): each process appends, per training step, a fingerprint of
    every sample it trained on to ``DIR/rank-<RANK>.jsonl`` (shows which process saw which data)."""
    from transformers import Trainer

    folder.mkdir(parents=True, exist_ok=True)
    out = folder / f"rank-{os.environ.get('RANK', '0')}.jsonl"
    step = Trainer.training_step

    def training_step(self: Any, model: Any, inputs: Any, *args: Any, **kwargs: Any) -> Any:
        ids, mask = inputs["input_ids"], inputs.get("attention_mask")
        rows = list(ids) if mask is None else [row[m.bool()] for row, m in zip(ids, mask, strict=True)]
        prints = [hashlib.sha1(str(row.tolist()).encode()).hexdigest()[:16] for row in rows]
        with out.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps({"step": int(self.state.global_step), "samples": prints}) + "\n")
        return step(self, model, inputs, *args, **kwargs)

    Trainer.training_step = training_step  # type: ignore[method-assign]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m train.axolotl_launch", description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    parser.add_argument("--num-gpus", type=int, default=None)
    parser.add_argument("--distributed", default="none")
    parser.add_argument("--lengths-out", type=Path, default=None)
    parser.add_argument("--resume-from-checkpoint", type=Path, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    from bastion.errors import BastionError
    from train.axolotl_config import capabilities, validate_with_axolotl

    cfg = yaml.safe_load(args.config.read_text(encoding="utf-8"))
    try:
        validate_with_axolotl(cfg, capabilities(args.device, args.num_gpus, args.distributed), str(args.config))
    except BastionError as exc:
        _fail(str(exc))
    check_lengths(cfg, args.lengths_out)
    log.info("config valid for Axolotl; starting the trainer")
    if args.device == "cpu" and _world_size() > 1:
        allow_cpu_processes()
    if os.environ.get("BASTION_SAMPLE_LOG"):
        record_samples(Path(os.environ["BASTION_SAMPLE_LOG"]))

    from axolotl.cli.train import do_cli

    sys.argv = [sys.argv[0]]  # do_cli parses trainer CLI arguments from sys.argv
    overrides: dict[str, Any] = {}
    if args.resume_from_checkpoint is not None:
        overrides["resume_from_checkpoint"] = str(args.resume_from_checkpoint)
    do_cli(config=str(args.config), **overrides)


if __name__ == "__main__":
    main()
