"""A scripted OpenAI-compatible teacher on 127.0.0.1, for synth's tests and benchmark.

It answers ``POST /v1/chat/completions`` (and ``GET /v1/models``) like a real server: it reads the
chunk, question type and persona from synth's prompt and writes a pair grounded in the chunk, or
misbehaves as its script says (ungrounded quotes, invalid JSON, 429 with Retry-After, 500, a reply
slower than the client's timeout, ...). It counts requests, and can answer after a fixed latency with
``slots`` requests served at a time (the benchmark's capacity is slots / latency).
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from synth.prompts import QUESTION_TYPES  # noqa: E402

_CHUNK = re.compile(r"<<<\n(.*?)\n>>>", re.S)
_HEAD = re.compile(r"^Source \((.*?) > (.*?), (.*?)\):", re.M)
_PERSONA = re.compile(r"asked by (.*?); write it")
_SENTENCE = re.compile(r"[^.!?\n]{30,}[.!?]")
_WORDS = re.compile(r"[A-Za-z][A-Za-z0-9-]+")


@dataclass(frozen=True)
class Prompt:
    """What the scripted teacher reads from one request."""

    chunk: str
    title: str
    section: str
    kind: str
    persona: str
    retry: bool  # a follow-up asking again after an invalid reply
    judge: bool
    raw: dict[str, Any]

    @property
    def ident(self) -> str:
        """The same for the first try and the retries of one request."""
        return hashlib.sha256(f"{self.chunk}\0{self.kind}\0{self.persona}".encode()).hexdigest()


def read_prompt(body: dict[str, Any]) -> Prompt:
    messages = body.get("messages", [])
    user = next((m["content"] for m in messages if m.get("role") == "user"), "")
    system = messages[0]["content"] if messages else ""
    chunk = _CHUNK.search(user)
    head = _HEAD.search(user)
    persona = _PERSONA.search(user)
    kind = next((k for k, text in QUESTION_TYPES.items() if text in user), "factual")
    return Prompt(
        chunk=chunk.group(1) if chunk else user,
        title=head.group(1) if head else "",
        section=head.group(2) if head else "",
        kind=kind,
        persona=persona.group(1) if persona else "",
        retry=len(messages) > 2,
        judge="You judge whether an answer is faithful" in system,
        raw=body,
    )


def _sentences(text: str) -> list[str]:
    found = [s.strip() for s in _SENTENCE.findall(text)]
    return [s for s in found if len(s.split()) >= 6] or [" ".join(text.split()[:20])]


def good_pair(p: Prompt) -> dict[str, Any]:
    """A pair grounded in the chunk: one of its sentences, chosen by the request, quoted and restated."""
    sentences = _sentences(p.chunk)
    pick = int(p.ident[:8], 16) % len(sentences)
    sentence = sentences[pick]
    words = sentence.split()
    topic = " ".join(_WORDS.findall(sentence)[:6]).lower() or p.section
    heading = p.section.split(" > ")[-1]
    if p.kind == "cannot_answer":
        question = f"What does {heading} cost per month in each region, as {p.persona} would budget it?"
        answer = f"That is not covered: nothing is said about the cost of {heading}."
        return {"question": question, "answer": answer, "evidence": []}
    question = f"As {p.persona}, {p.kind.replace('_', ' ')}: regarding {heading}, what about {topic}?"
    if p.kind == "false_premise":
        question = f"Since {heading} never matters, why bother with {topic}?"
        answer = "No, that premise is wrong: " + " ".join(words[:22])
    else:
        answer = "In short, " + " ".join(words[:22])
    return {"question": question, "answer": answer, "evidence": [" ".join(words[: min(12, len(words))])]}


def verdict(p: Prompt) -> dict[str, Any]:
    """A judge that scores by the mechanical support of the answer (a stand-in good enough for tests)."""
    from synth.gates import support

    user = next(m["content"] for m in p.raw["messages"] if m["role"] == "user")
    source = _CHUNK.search(user)
    answer = user.rsplit("Answer: ", 1)[-1].rsplit("\n\nVerdict", 1)[0]
    share = support(answer, source.group(1) if source else "")
    return {"score": 5 if share >= 0.8 else 2, "violations": [] if share >= 0.8 else ["unsupported_claim"]}


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # a dict (the completion's content as JSON), a str (raw content), or an error body
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    finish_reason: str = "stop"


Script = Callable[[Prompt, "ScriptedTeacher"], Reply]


def good(p: Prompt, server: ScriptedTeacher) -> Reply:
    return Reply(body=verdict(p) if p.judge else good_pair(p))


class ScriptedTeacher:
    """The server; ``with ScriptedTeacher(script) as t: t.url``."""

    def __init__(
        self,
        script: Script = good,
        *,
        latency: float = 0.0,
        slots: int | None = None,
        api_key: str | None = None,
        model: str = "scripted-teacher",
    ) -> None:
        self.script, self.latency, self.api_key, self.model = script, latency, api_key, model
        self.slots = threading.Semaphore(slots) if slots else None
        self.lock = threading.Lock()
        self.requests = 0
        self.statuses: Counter[int] = Counter()
        self.seen: Counter[str] = Counter()  # request ident -> arrivals
        self.times: dict[str, list[float]] = {}  # request ident -> arrival times
        self.bodies: list[dict[str, Any]] = []
        self.headers_seen: list[dict[str, str]] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> ScriptedTeacher:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def arrival(self, p: Prompt) -> int:
        """How many times this request (first try or retry) has arrived, this one included."""
        name = p.ident + str(p.retry)
        with self.lock:
            self.seen[name] += 1
            self.times.setdefault(name, []).append(time.monotonic())
            return self.seen[name]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        teacher = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in (headers or {}).items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (its timeout)

            def do_GET(self) -> None:  # noqa: N802
                self._send(200, {"object": "list", "data": [{"id": teacher.model, "object": "model"}]})

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                with teacher.lock:
                    teacher.requests += 1
                    teacher.bodies.append(body)
                    teacher.headers_seen.append(dict(self.headers))
                if teacher.api_key is not None and self.headers.get("authorization") != f"Bearer {teacher.api_key}":
                    self._send(401, {"error": {"message": "bad key"}})
                    return
                prompt = read_prompt(body)
                if teacher.slots is not None:
                    with teacher.slots:
                        time.sleep(teacher.latency)
                        reply = teacher.script(prompt, teacher)
                else:
                    time.sleep(teacher.latency)
                    reply = teacher.script(prompt, teacher)
                if reply.delay:
                    time.sleep(reply.delay)
                with teacher.lock:
                    teacher.statuses[reply.status] += 1
                if reply.status != 200:
                    self._send(reply.status, reply.body or {"error": {"message": "scripted error"}}, reply.headers)
                    return
                content = reply.body if isinstance(reply.body, str) else json.dumps(reply.body)
                usage = {"prompt_tokens": len(json.dumps(body)) // 4, "completion_tokens": len(content) // 4}
                usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
                self._send(
                    200,
                    {
                        "id": "chatcmpl-scripted",
                        "object": "chat.completion",
                        "created": 0,
                        "model": body.get("model", teacher.model),
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": content},
                                "finish_reason": reply.finish_reason,
                            }
                        ],
                        "usage": usage,
                    },
                )

        return Handler


def main() -> None:
    """Serve until killed: ``python bench/scripted_teacher.py --latency 0.2 --slots 8`` prints its URL."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--slots", type=int, default=None)
    args = parser.parse_args()
    with ScriptedTeacher(good, latency=args.latency, slots=args.slots) as teacher:
        sys.stdout.write(teacher.url + "\n")
        sys.stdout.flush()
        teacher.thread.join()


if __name__ == "__main__":
    main()
