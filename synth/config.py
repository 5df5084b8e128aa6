"""The recipe's ``synth:`` section as typed settings, and the stage's recipe check (no server needed)."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bastion.recipe import PathParts, path_problem, url_problem

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# what an API key looks like, so that a key pasted where its variable's NAME belongs is refused
_KEY_PREFIX = re.compile(r"^(sk-|sk_|hf_|gsk_|xai-|AIza)")


def looks_like_a_key(name: str) -> bool:
    """A value that is an API key rather than a variable name: a known key prefix, or long mixed-case
    text with digits (variable names are short and upper case)."""
    mixed = any(c.islower() for c in name) and any(c.isupper() for c in name) and any(c.isdigit() for c in name)
    return bool(_KEY_PREFIX.match(name)) or (len(name) >= 24 and mixed)


def base_urls(value: Any) -> list[str]:
    """``teacher.base_url`` as a list (a string, a list of strings, or null)."""
    if value is None:
        return []
    return [value] if isinstance(value, str) else [str(v) for v in value]


@dataclass(frozen=True)
class TeacherSettings:
    """What decides a teacher's replies (part of every cache key) and how it is reached (not part of it)."""

    model: str
    temperature: float
    seed: int
    max_tokens: int
    response_format: str
    timeout: float
    max_retries: int
    backoff: float
    max_backoff: float
    max_concurrency: int
    api_key_env: str | None

    def cache_identity(self) -> dict[str, Any]:
        """The settings that change a reply: model, sampling, seed, length limit (never URLs or keys)."""
        return {
            "model": self.model,
            "temperature": self.temperature,
            "seed": self.seed,
            "max_tokens": self.max_tokens,
        }


def teacher_settings(section: dict[str, Any], model: str, **override: Any) -> TeacherSettings:
    t = section["teacher"]
    values = {
        "model": model,
        "temperature": float(t["temperature"]),
        "seed": int(t["seed"]),
        "max_tokens": int(t["max_tokens"]),
        "response_format": str(t["response_format"]),
        "timeout": float(t["timeout_seconds"]),
        "max_retries": int(t["max_retries"]),
        "backoff": float(t["backoff_seconds"]),
        "max_backoff": float(t["max_backoff_seconds"]),
        "max_concurrency": int(t["max_concurrency"]),
        "api_key_env": t["api_key_env"],
    }
    values.update({k: v for k, v in override.items() if v is not None})
    return TeacherSettings(**values)


def check_synth(data: dict[str, Any], recipe_path: Path) -> Iterator[tuple[PathParts, str]]:
    """What the synth section needs beyond the schema: a teacher to reach, key variables by NAME,
    shares that sum to 1, LSH bands that fit, served files that exist."""
    s = data.get("synth") or {}
    if not s.get("enabled"):
        return
    t = s["teacher"]
    serve = t["serve"]
    urls = base_urls(t["base_url"])
    engine = serve["engine"]
    if engine == "none" and not urls:
        yield ("synth", "teacher", "base_url"), "synth is enabled: set teacher.base_url, or teacher.serve.engine"
    if engine != "none" and urls:
        yield ("synth", "teacher", "base_url"), f"set either base_url or serve.engine ({engine}), not both"
    for i, url in enumerate(urls):
        problem = url_problem(url)
        where: PathParts = ("synth", "teacher", "base_url") + ((i,) if isinstance(t["base_url"], list) else ())
        if problem:
            yield where, problem
    if len(set(urls)) != len(urls):
        yield ("synth", "teacher", "base_url"), "a base_url is listed twice"
    if engine == "none" and not t["model"]:
        yield ("synth", "teacher", "model"), "name the teacher's model (the server's model name)"
    if engine == "llama_cpp":
        if not serve["gguf"]:
            yield ("synth", "teacher", "serve", "gguf"), "serve.engine llama_cpp needs the GGUF file"
        else:
            problem = path_problem(serve["gguf"], recipe_path.parent)
            if problem:
                yield ("synth", "teacher", "serve", "gguf"), problem
    if engine == "vllm" and not serve["model"]:
        yield ("synth", "teacher", "serve", "model"), "serve.engine vllm needs the model (hub id or folder)"
    for where, name in (
        (("synth", "teacher", "api_key_env"), t["api_key_env"]),
        (("synth", "judge", "api_key_env"), s["judge"]["api_key_env"]),
    ):
        if name is not None and (not _ENV_NAME.match(name) or looks_like_a_key(name)):
            yield where, "the NAME of an environment variable (e.g. TEACHER_API_KEY), never the key itself"
    shares = s["question_types"]
    total = sum(float(v) for v in shares.values())
    if not math.isclose(total, 1.0, abs_tol=0.011):
        yield ("synth", "question_types"), f"the shares sum to {total:.3f}; they must sum to 1"
    d = s["dedup"]
    if d["bands"] * d["rows"] > d["num_perm"]:
        yield ("synth", "dedup"), f"bands x rows ({d['bands']} x {d['rows']}) exceeds num_perm ({d['num_perm']})"
    j = s["judge"]
    if j["base_url"] is not None:
        problem = url_problem(j["base_url"])
        if problem:
            yield ("synth", "judge", "base_url"), problem
