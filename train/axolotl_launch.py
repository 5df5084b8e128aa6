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

    from axolotl.cli.train import do_cli

    sys.argv = [sys.argv[0]]  # do_cli parses trainer CLI arguments from sys.argv
    overrides: dict[str, Any] = {}
    if args.resume_from_checkpoint is not None:
        overrides["resume_from_checkpoint"] = str(args.resume_from_checkpoint)
    do_cli(config=str(args.config), **overrides)


if __name__ == "__main__":
    main()
