"""The teacher: OpenAI-compatible servers reached through the ``openai`` client, with retries,
Retry-After, failover over several base URLs, both structured-output forms, and accounting.

- Retries: a timeout, a connection error, HTTP 429 or 5xx is retried up to ``max_retries`` times on
  the same server, waiting ``backoff * 2**attempt`` seconds (capped) or what its Retry-After header
  says; then the request moves to the next base URL, and that server is left out from then on.
  When every server is down the request fails with :class:`TeacherDownError`.
- Structured output: ``json_schema`` sends the OpenAI form (vLLM, OpenAI);
  ``json_object`` sends llama-cpp-python's ``{"type": "json_object", "schema": ...}``; ``auto`` starts
  with the OpenAI form and switches a server to the other one for good when it refuses the form
  (HTTP 400, or a 500 that names ``response_format``/``json_object``, as llama-cpp-python's does).
- A request the server refuses for itself (another 4xx) is returned as a refusal with its reason,
  not retried; 401/403 stop the stage (the key is wrong).
- The API key is read from the environment variable the recipe names, and is never logged.
"""

from __future__ import annotations

import email.utils
import logging
import os
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import openai

from bastion.errors import MissingResourceError, ToolError
from bastion.logs import register_secret_env

log = logging.getLogger(__name__)

for _noisy in ("openai", "httpx2", "httpcore2", "httpx", "httpcore"):
    logging.getLogger(_noisy).setLevel(logging.WARNING)

FORMAT_WORDS = ("response_format", "json_object", "json_schema")


class TeacherDownError(ToolError):
    """Every teacher server failed one request after its retries."""


@dataclass(frozen=True)
class Completion:
    """One answered request: the reply text (or the server's refusal), and its tokens."""

    content: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    refusal: str | None = None  # the server refused this request (a 4xx other than 401/403/429)


@dataclass
class Usage:
    """What the teacher cost so far (all threads)."""

    http_requests: int = 0
    completions: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    retries: Counter[str] = field(default_factory=Counter)  # reason -> retries
    failovers: int = 0
    format_switches: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "http_requests": self.http_requests,
            "completions": self.completions,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "retries": dict(sorted(self.retries.items())),
            "failovers": self.failovers,
            "format_switches": self.format_switches,
        }


def api_key(env_name: str | None) -> str:
    """The key from the environment variable ``env_name``; a placeholder when the server needs none."""
    if env_name is None:
        return "not-needed"  # the client insists on some key; local servers ignore it
    value = os.environ.get(env_name)
    if not value:
        raise MissingResourceError(
            f"the teacher's API key variable {env_name} is not set: export {env_name}=... (the recipe names the "
            "variable, never the key)"
        )
    register_secret_env(env_name)
    return value


def retry_after(headers: Any) -> float | None:
    """Seconds a Retry-After header asks for (a number or an HTTP date); None when absent or unreadable."""
    value = headers.get("retry-after") if headers is not None else None
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class _Endpoint:
    def __init__(self, url: str, key: str, timeout: float, mode: str, slots: int) -> None:
        self.url = url
        self.client = openai.OpenAI(base_url=url, api_key=key, max_retries=0, timeout=timeout)
        self.mode = "json_schema" if mode == "auto" else mode
        self.auto = mode == "auto"
        self.down = False
        self.slots = threading.Semaphore(slots)


class Teacher:
    """Chat completions against one or more OpenAI-compatible servers."""

    def __init__(
        self,
        urls: list[str],
        *,
        model: str,
        api_key_env: str | None,
        timeout: float,
        max_retries: int,
        backoff: float,
        max_backoff: float,
        response_format: str,
        max_concurrency: int,
    ) -> None:
        if not urls:
            raise ToolError("no teacher server to send requests to")
        key = api_key(api_key_env)
        self.model = model
        self.max_concurrency = max_concurrency
        self.max_retries, self.backoff, self.max_backoff = max_retries, backoff, max_backoff
        self.endpoints = [_Endpoint(u, key, timeout, response_format, max_concurrency) for u in urls]
        self.usage = Usage()
        self._lock = threading.Lock()
        self.sleep = time.sleep  # tests may replace it

    @property
    def slots(self) -> int:
        """Requests that may be in flight at once over all servers."""
        return self.max_concurrency * len(self.endpoints)

    def complete(
        self,
        messages: list[dict[str, str]],
        schema: dict[str, Any],
        *,
        temperature: float,
        seed: int,
        max_tokens: int,
        prefer: int = 0,
        schema_name: str = "reply",
    ) -> Completion:
        """One chat completion constrained to ``schema``, from the ``prefer``-th server or the next one up."""
        n = len(self.endpoints)
        order = [self.endpoints[(prefer + i) % n] for i in range(n)]
        errors: list[str] = []
        for i, endpoint in enumerate(order):
            if endpoint.down and any(not e.down for e in self.endpoints):
                continue
            if i and errors:
                with self._lock:
                    self.usage.failovers += 1
            try:
                with endpoint.slots:
                    return self._on(endpoint, messages, schema, schema_name, temperature, seed, max_tokens)
            except _EndpointFailedError as exc:
                errors.append(f"{endpoint.url}: {exc}")
                if not endpoint.down:
                    endpoint.down = True
                    log.warning("teacher %s is down (%s); %d other server(s) left", endpoint.url, exc, n - 1 - i)
        raise TeacherDownError(
            f"the teacher stayed down after {self.max_retries} retries on each server ({'; '.join(errors)}); "
            "replies received so far are kept in the cache: rerun when the server is back"
        )

    def _on(
        self,
        endpoint: _Endpoint,
        messages: list[dict[str, str]],
        schema: dict[str, Any],
        schema_name: str,
        temperature: float,
        seed: int,
        max_tokens: int,
    ) -> Completion:
        attempt = 0
        while True:
            fmt = response_format(endpoint.mode, schema, schema_name)
            with self._lock:
                self.usage.http_requests += 1
            wait: float | None = None
            try:
                params: dict[str, Any] = {
                    "model": self.model,
                    "messages": messages,
                    "temperature": temperature,
                    "seed": seed,
                    "max_tokens": max_tokens,
                    "response_format": fmt,
                }
                reply = endpoint.client.chat.completions.create(**params)
            except openai.APITimeoutError:
                reason = "timeout"
            except openai.APIConnectionError:
                reason = "connection"
            except openai.APIStatusError as exc:
                status = exc.status_code
                body = _body_text(exc)
                if (
                    status in (400, 500)
                    and endpoint.auto
                    and endpoint.mode == "json_schema"
                    and _refuses_format(status, body)
                ):
                    endpoint.mode = "json_object"
                    with self._lock:
                        self.usage.format_switches += 1
                    log.info(
                        "teacher %s refused the json_schema form (HTTP %d); using json_object", endpoint.url, status
                    )
                    continue
                if status in (401, 403):
                    raise ToolError(
                        f"the teacher {endpoint.url} refused the API key (HTTP {status}): check the variable the "
                        "recipe's synth.teacher.api_key_env names"
                    ) from None
                if status != 429 and status < 500:
                    return Completion("", None, 0, 0, refusal=f"http_{status}: {body[:200]}")
                reason = "http_429" if status == 429 else "http_5xx"
                wait = retry_after(exc.response.headers)
            else:
                return self._completion(reply)
            with self._lock:
                self.usage.retries[reason] += 1
            if attempt >= self.max_retries or endpoint.down:  # down: another request found it so
                raise _EndpointFailedError(f"{reason} after {attempt} retries")
            delay = self.backoff * 2**attempt if wait is None else wait
            delay = min(delay, self.max_backoff)
            if wait is None and delay > 0:
                delay *= 1 + random.random() * 0.1  # noqa: S311  (jitter, not cryptography)
            log.debug("teacher %s: %s, retry %d in %.2f s", endpoint.url, reason, attempt + 1, delay)
            self.sleep(delay)
            attempt += 1

    def _completion(self, reply: Any) -> Completion:
        choice = reply.choices[0] if reply.choices else None
        usage = reply.usage
        prompt = int(getattr(usage, "prompt_tokens", 0) or 0)
        completion = int(getattr(usage, "completion_tokens", 0) or 0)
        with self._lock:
            self.usage.completions += 1
            self.usage.prompt_tokens += prompt
            self.usage.completion_tokens += completion
        content = (choice.message.content if choice and choice.message else None) or ""
        return Completion(content, choice.finish_reason if choice else None, prompt, completion)

    def close(self) -> None:
        for endpoint in self.endpoints:
            endpoint.client.close()


class _EndpointFailedError(Exception):
    """One server failed a request after its retries."""


#: Length bounds that llama.cpp's schema-to-grammar converter unrolls into one rule per character:
#: a ``maxLength`` of a few thousand makes a grammar it refuses, and llama-cpp-python's server then
#: aborts. The json_object form leaves them out; every reply is still checked against the full schema.
UNROLLED_BOUNDS = ("minLength", "maxLength", "minItems", "maxItems")


def grammar_safe(schema: Any) -> Any:
    """``schema`` without the bounds llama.cpp's grammar would unroll (recursively)."""
    if isinstance(schema, dict):
        return {k: grammar_safe(v) for k, v in schema.items() if k not in UNROLLED_BOUNDS}
    if isinstance(schema, list):
        return [grammar_safe(v) for v in schema]
    return schema


def response_format(mode: str, schema: dict[str, Any], name: str) -> dict[str, Any]:
    """The ``response_format`` of a request in either form."""
    if mode == "json_object":
        return {"type": "json_object", "schema": grammar_safe(schema)}
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


def _body_text(exc: openai.APIStatusError) -> str:
    try:
        return str(exc.response.text)
    except Exception:  # noqa: BLE001  (a body that cannot be read says nothing more)
        return str(exc)


def _refuses_format(status: int, body: str) -> bool:
    """A 400, or a 500 that names the response format: the server does not take the OpenAI form."""
    return status == 400 or any(word in body for word in FORMAT_WORDS)
