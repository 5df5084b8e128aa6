"""The Ollama Modelfile: the GGUF, the Llama 3.1 chat format as a Go TEMPLATE, the system prompt, stops.

One prompt format end to end: the prompt Ollama builds from this Modelfile must be the
string the model was trained on, i.e. the Hugging Face chat template rendered by
:func:`bastion.chat_format.render_text` (date pinned by ``CHAT_TEMPLATE_KWARGS``). The tests render
:func:`ollama_template` with Go's ``text/template`` the way Ollama does and compare it, byte for
byte, with ``tokenizer.apply_chat_template(..., add_generation_prompt=True)``.

What the template reproduces, and the assumptions behind it:

- **BOS.** The HF string starts with ``<|begin_of_text|>``; the Ollama TEMPLATE does not. Ollama
  tokenises the rendered prompt with the GGUF's tokenizer, which adds BOS itself for Llama 3
  (``tokenizer.ggml.add_bos_token``), so a BOS in the template would give two. Ollama's own
  llama3.1 template leaves it out for the same reason. The template equals the HF string minus
  that leading ``<|begin_of_text|>``.
- **System message.** Llama 3.1's template always writes a system turn: the header, "Cutting
  Knowledge Date: December 2023", "Today Date: <date>", a blank line, then the system message,
  which is *empty* when the conversation has none (the turn is still there). The Go template does
  the same: it takes the system text from the first message when that message is a system message
  (the HF template's rule), else writes the turn with an empty message. Later system messages are
  ordinary turns, as in HF.
- **Modelfile SYSTEM.** With a ``.Messages`` template (Ollama >= 0.3), Ollama's server prepends the
  Modelfile's SYSTEM as a system message when the request's first message is not one, so it arrives
  in ``.Messages[0]``; the template reads ``.Messages`` only (``.System`` is the same text joined).
- **Generation prompt.** The template always ends with the assistant header, as
  ``add_generation_prompt=True`` does; a conversation that ends with an assistant message gets a new
  assistant turn (HF's behaviour), not Ollama's "continue this message" prefill.
- **Not reproducible in a Go template** (Ollama gives templates no ``trim``): the HF template strips
  whitespace around every message; Ollama passes content verbatim. Messages without surrounding
  whitespace (what Bastion trains on) render identically; padded ones differ by that whitespace.
  Ollama also merges consecutive messages of the same role with a blank line before rendering,
  which HF does not. Tool calls and tool results are out of scope (Bastion trains without tools).

:func:`render_modelfile` writes the file; :func:`parse_modelfile` is a port of Ollama's own
Modelfile parser (``parser/parser.go``), used to check that Ollama reads back exactly the SYSTEM
and TEMPLATE that were written: Ollama's Modelfile syntax has no escapes.
"""

from __future__ import annotations

import math
from typing import Any

from bastion.chat_format import CHAT_TEMPLATE_KWARGS
from bastion.errors import BadInputError

#: What Ollama must stop on for Llama 3.x (its own llama3 template stops on these): the turn delimiters
#: and the end of turn.
STOP_TOKENS: tuple[str, ...] = ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")

#: The token the HF template starts with and the Ollama template leaves out (the tokenizer adds it).
BOS = "<|begin_of_text|>"

_COMMANDS = {
    "from",
    "license",
    "template",
    "system",
    "adapter",
    "draft",
    "renderer",
    "parser",
    "parameter",
    "message",
    "requires",
}


def ollama_template(date_string: str = CHAT_TEMPLATE_KWARGS["date_string"]) -> str:
    """The Llama 3.1 chat format as an Ollama TEMPLATE (Go ``text/template``, ``.Messages`` based).

    Renders exactly the HF Llama 3.1 template's string with ``add_generation_prompt=True`` and the
    given ``date_string``, minus the leading ``<|begin_of_text|>`` (see the module docstring).
    """
    return (
        "<|start_header_id|>system<|end_header_id|>\n\n"
        "Cutting Knowledge Date: December 2023\n"
        f"Today Date: {date_string}\n\n"
        '{{ if .Messages }}{{ with index .Messages 0 }}{{ if eq .Role "system" }}{{ .Content }}'
        "{{ end }}{{ end }}{{ end }}<|eot_id|>\n"
        "{{- range $i, $m := .Messages }}\n"
        '{{- if or (ne $i 0) (ne $m.Role "system") }}'
        "<|start_header_id|>{{ $m.Role }}<|end_header_id|>\n\n"
        "{{ $m.Content }}<|eot_id|>\n"
        "{{- end }}\n"
        "{{- end }}<|start_header_id|>assistant<|end_header_id|>\n\n"
    )


def render_modelfile(gguf_name: str, system_prompt: str, num_ctx: int, temperature: float) -> str:
    """The Modelfile text for ``gguf_name`` (a file next to the Modelfile).

    The system prompt is stripped, as the HF template strips the system message. Ollama's Modelfile
    has no escape syntax: a prompt containing ``\"\"\"`` is written as is, which Ollama reads back
    correctly unless a line of the prompt *ends* with ``\"\"\"``; that, and characters Ollama's
    parser drops (control and invisible characters), raise :class:`BadInputError`.
    """
    if not gguf_name or any(c in gguf_name for c in '/\\"\n\r') or not gguf_name.isprintable():
        raise BadInputError(f"GGUF name {gguf_name!r} must be a plain file name next to the Modelfile")
    if isinstance(num_ctx, bool) or not isinstance(num_ctx, int) or num_ctx <= 0:
        raise BadInputError(f"num_ctx must be a positive integer, got {num_ctx!r}")
    if not isinstance(temperature, int | float) or not math.isfinite(temperature) or temperature < 0:
        raise BadInputError(f"temperature must be a finite number >= 0, got {temperature!r}")
    system = system_prompt.strip()
    template = ollama_template()
    lines = [
        "# Ollama Modelfile written by Bastion: the fine-tuned GGUF in the exact chat format it was trained on",
        "# (Llama 3.1 template, Bastion's system prompt, Llama 3 stop tokens).",
        "# Use it from this folder:",
        "#   ollama create NAME -f Modelfile",
        "#   ollama run NAME",
        f"FROM ./{gguf_name}",
        f'TEMPLATE """{template}"""',
    ]
    if system:
        lines.append(f'SYSTEM """{system}"""')
    lines += [f'PARAMETER stop "{stop}"' for stop in STOP_TOKENS]
    lines += [f"PARAMETER num_ctx {num_ctx}", f"PARAMETER temperature {float(temperature)!r}"]
    text = "\n".join(lines) + "\n"

    try:
        parsed = parse_modelfile(text)
        read_back = "" if parsed["SYSTEM"] is None else parsed["SYSTEM"]
        problem = None if read_back == system else f"it would read the system prompt as {read_back!r}"
    except ValueError as exc:
        problem = f"it would refuse the file ({exc})"
    if problem:
        raise BadInputError(
            f"the system prompt cannot be written in an Ollama Modelfile as is: {problem}. A Modelfile has no "
            'escapes; remove any line ending in \'"""\' and any control or invisible character (only '
            "printable text, spaces, tabs and newlines survive Ollama's parser)."
        )
    if parsed["TEMPLATE"] != template:  # pragma: no cover - the template is ours
        raise AssertionError("Ollama would not read back the TEMPLATE as written")
    return text


def _unquote(s: str) -> tuple[str, bool]:
    """Ollama's unquote: strip ``\"\"\"...\"\"\"`` or ``\"...\"``; ``ok`` is False while a quote is open."""
    if s[:3] == '"""':
        if len(s) >= 6 and s[-3:] == '"""':
            return s[3:-3], True
        return "", False
    if s[:1] == '"':
        if len(s) >= 2 and s[-1] == '"':
            return s[1:-1], True
        return "", False
    return s, True


def _next_state(r: str, state: str) -> tuple[str, str | None]:
    """Ollama's parseRuneForState: the next state and the rune to keep (None for Go's 0)."""
    space, newline = r in " \t", r in "\r\n"
    if state == "nil":
        if r == "#":
            return "comment", None
        if space or newline:
            return "nil", None
        return "name", r
    if state == "name":
        if r.isascii() and r.isalpha():
            return "name", r
        if space:
            return "value", None
        raise ValueError(f"invalid command character {r!r}")
    if state == "value":
        return ("nil", r) if space or newline else ("value", r)
    if state == "parameter":
        if r.isascii() and (r.isalnum() or r == "_"):
            return "parameter", r
        if space:
            return "value", None
        raise ValueError(f"unexpected {r!r} in a PARAMETER name")
    if state == "message":
        if r.isascii() and r.isalpha():
            return "message", r
        if space:
            return "value", None
        raise ValueError(f"unexpected {r!r} in a MESSAGE role")
    # comment
    return ("nil", None) if newline else ("comment", None)


def parse_modelfile(text: str) -> dict[str, Any]:
    """Read a Modelfile the way Ollama does (a port of ``parser.ParseFile``).

    Returns ``{"FROM": str, "TEMPLATE": str | None, "SYSTEM": str | None,
    "PARAMETER": [(name, value), ...], "MESSAGE": [...], "commands": [(name, args), ...]}``;
    a repeated TEMPLATE or SYSTEM keeps the last one, as Ollama does. Raises ValueError where
    Ollama would refuse the file.
    """
    commands: list[tuple[str, str]] = []
    state, buf, name, role = "nil", "", "", ""
    for r in text:
        nxt, keep = _next_state(r, state)
        if nxt != state:
            if state == "name":
                word = buf.lower()
                if word not in _COMMANDS:
                    raise ValueError(f"unknown Modelfile command {buf!r}")
                if word == "parameter":
                    nxt = "parameter"
                elif word == "message":
                    nxt, name = "message", word
                else:
                    name = "model" if word == "from" else word
            elif state == "parameter":
                name = buf
            elif state == "message":
                if buf not in ("system", "user", "assistant"):
                    raise ValueError(f"invalid MESSAGE role {buf!r}")
                role = buf
            elif state == "value":
                value, ok = _unquote(buf.strip())
                if not ok or r in " \t":
                    buf += r
                    continue
                if role:
                    value, role = f"{role}: {value}", ""
                commands.append((name, value))
            buf, state = "", nxt
        if keep is not None and keep.isprintable():
            buf += keep
    if state == "value":
        value, ok = _unquote(buf.strip())
        if not ok:
            raise ValueError("unexpected end of file inside a quoted value")
        commands.append((name, f"{role}: {value}" if role else value))
    elif state not in ("nil", "comment"):
        raise ValueError("unexpected end of file")
    if not any(n == "model" for n, _ in commands):
        raise ValueError("no FROM line")

    out: dict[str, Any] = {
        "FROM": None,
        "TEMPLATE": None,
        "SYSTEM": None,
        "PARAMETER": [],
        "MESSAGE": [],
        "commands": commands,
    }
    for n, args in commands:
        if n == "model":
            out["FROM"] = args
        elif n in ("template", "system"):
            out[n.upper()] = args
        elif n == "message":
            out["MESSAGE"].append(args)
        elif n not in _COMMANDS:
            out["PARAMETER"].append((n, args))
    return out
