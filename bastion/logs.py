"""Logging setup: rich console output by default, one JSON object per line with --log-json."""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time

_SECRET_ENV = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "WANDB_API_KEY", "MLFLOW_TRACKING_PASSWORD")
_TOKEN_PATTERN = re.compile(r"\bhf_[A-Za-z0-9]{20,}\b")


_EXTRA_SECRET_ENV: set[str] = set()  # variables named by a recipe (e.g. synth.teacher.api_key_env)


def register_secret_env(name: str) -> None:
    """Treat the value of environment variable ``name`` as a secret from now on (redacted everywhere)."""
    _EXTRA_SECRET_ENV.add(name)


def redact(text: str) -> str:
    """Replace secrets (HF tokens and the values of secret environment variables) by ``***``."""
    for name in (*_SECRET_ENV, *sorted(_EXTRA_SECRET_ENV)):
        value = os.environ.get(name)
        if value and len(value) >= 4:
            text = text.replace(value, "***")
    return _TOKEN_PATTERN.sub("hf_***", text)


class _RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = ()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message."""

    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        return json.dumps(payload, ensure_ascii=False)


_MARK = "_bastion_handler"
OWN_LOGGERS = ("bastion", "harvest", "synth", "train", "evals", "export")  # what -v turns to DEBUG
QUIET_LOGGERS = (
    "urllib3",
    "filelock",
    "httpx",
    "httpcore",
    "datasets",
    "trafilatura",
    "htmldate",
    "charset_normalizer",
    "matplotlib",
    "PIL",
)


def setup_logging(verbose: bool = False, log_json: bool = False, debug: bool = False) -> None:
    """Configure the root logger for the CLI: INFO; ``verbose``: Bastion's own loggers at DEBUG
    (libraries stay at INFO, chatty ones at WARNING); ``debug``: every logger at DEBUG.

    Called again (several CLI runs in one process), it replaces the handler it installed before
    and leaves other handlers (a test's log capture) in place.
    """
    handler: logging.Handler
    if log_json:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
    else:
        from rich.console import Console
        from rich.logging import RichHandler

        console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)
        handler = RichHandler(console=console, show_path=False, show_time=True, markup=False, rich_tracebacks=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    handler.addFilter(_RedactingFilter())
    setattr(handler, _MARK, True)  # noqa: B010 - marks the handler that a later call replaces
    root = logging.getLogger()
    root.handlers[:] = [h for h in root.handlers if not getattr(h, _MARK, False)] + [handler]
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    for name in OWN_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG if verbose or debug else logging.NOTSET)
    for noisy in QUIET_LOGGERS:
        logging.getLogger(noisy).setLevel(logging.DEBUG if debug else logging.WARNING)
