"""The Ollama Modelfile renders the exact prompt the model was trained on (one prompt format end to end).

The TEMPLATE is executed by Go's ``text/template`` through ``tests/go/render_template.go``, which
does what Ollama's server does before rendering (Modelfile SYSTEM prepended, same-role messages
merged), and compared byte for byte with the HF Llama 3.1 chat template of the tiny model (the
real Llama 3.1 tokenizer and template) minus the leading BOS, which Ollama's tokenizer adds itself.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from bastion.chat_format import CHAT_TEMPLATE_KWARGS, prompt_messages, record_messages, render_text
from bastion.errors import BadInputError
from bastion.recipe import load_recipe
from export.modelfile import BOS, STOP_TOKENS, ollama_template, parse_modelfile, render_modelfile

os.environ["HF_HUB_OFFLINE"] = "1"

GO_DIR = Path(__file__).resolve().parent / "go"
SYSTEM = "You are a Cloud Security Architect. Answer precisely."
Messages = list[dict[str, str]]


@pytest.fixture(scope="session")
def render_go(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Build tests/go/render_template.go once per session (offline, stdlib only); return a renderer."""
    go = shutil.which("go")
    if go is None:
        pytest.fail(
            "Go is not installed: the Ollama TEMPLATE is checked with Go's text/template, as Ollama "
            "runs it. Run scripts/setup.sh (it installs Debian's golang-go) and rerun.",
            pytrace=False,
        )
    work = tmp_path_factory.mktemp("go")
    binary = work / "render_template"
    env = {
        **os.environ,
        "GOCACHE": str(work / "cache"),
        "GOPATH": str(work / "gopath"),
        "GOFLAGS": "-mod=mod",
        "GOPROXY": "off",
        "GOTOOLCHAIN": "local",
        "GOWORK": "off",
        "CGO_ENABLED": "0",
    }
    built = subprocess.run(
        [go, "build", "-o", str(binary), "."], cwd=GO_DIR, env=env, capture_output=True, text=True, timeout=300
    )
    assert built.returncode == 0, f"go build failed:\n{built.stdout}{built.stderr}"

    def render(messages: Messages, system: str = "", template: str | None = None) -> str:
        payload = {
            "template": ollama_template() if template is None else template,
            "system": system,
            "messages": messages,
        }
        done = subprocess.run(
            [str(binary)], input=json.dumps(payload), capture_output=True, text=True, encoding="utf-8", timeout=30
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    return render


@pytest.fixture(scope="session")
def tokenizer() -> Any:
    from transformers import AutoTokenizer

    from bastion.tiny_model import tiny_model_dir

    return AutoTokenizer.from_pretrained(tiny_model_dir())


def hf_prompt(tokenizer: Any, messages: Messages) -> str:
    """The HF template's prompt, BOS removed (Ollama's tokenizer adds BOS; the TEMPLATE must not)."""
    text: str = tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True, date_string="26 Jul 2024"
    )
    assert text.startswith(BOS) and not text[len(BOS) :].startswith(BOS)
    return text[len(BOS) :]


def sys_(content: str) -> dict[str, str]:
    return {"role": "system", "content": content}


def user(content: str) -> dict[str, str]:
    return {"role": "user", "content": content}


def bot(content: str) -> dict[str, str]:
    return {"role": "assistant", "content": content}


TRICKY = (
    'Quotes "double" \'single\' """triple""", back\\slash, tab\tand\nnew\n\nlines, '
    "unicode é ß 中文 🛡️, template syntax {{ .System }} {{ end }} {{- and }} }}, "
    "html <b>&amp;</b>, and a literal <|eot_id|> token text"
)

CASES: dict[str, Messages] = {
    "system+user": [sys_(SYSTEM), user("How do I rotate IAM access keys?")],
    "multi-turn": [
        sys_(SYSTEM),
        user("What is an SCP?"),
        bot("A service control policy."),
        user("And how does it differ from an IAM policy?"),
    ],
    "user-only": [user("Hello")],
    "no-system-multi-turn": [user("Hi"), bot("Hello! How can I help?"), user("Explain KMS.")],
    "tricky-content": [sys_(TRICKY), user(TRICKY), bot(TRICKY), user(TRICKY)],
    "empty-system-message": [sys_(""), user("Hello")],
    "later-system-message": [user("Hi"), bot("Hello."), sys_("Be brief."), user("Explain VPCs.")],
    "ends-with-assistant": [sys_(SYSTEM), user("Hi"), bot("Hello.")],
}


def test_no_system_message_still_writes_the_system_turn(tokenizer: Any) -> None:
    """What the Llama 3.1 template does without a system message: the turn with the dates, empty text."""
    assert hf_prompt(tokenizer, [user("Hello")]) == (
        "<|start_header_id|>system<|end_header_id|>\n\n"
        "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )


@pytest.mark.parametrize("name", sorted(CASES))
def test_go_template_equals_hf_template(name: str, render_go: Any, tokenizer: Any) -> None:
    messages = CASES[name]
    assert render_go(messages) == hf_prompt(tokenizer, messages)


def test_modelfile_system_reaches_the_prompt_like_a_system_message(render_go: Any, tokenizer: Any) -> None:
    """`ollama run` with SYSTEM set: Ollama prepends SYSTEM as a system message (case a of the design)."""
    assert render_go([user("Hello")], system=SYSTEM) == hf_prompt(tokenizer, prompt_messages(SYSTEM, "Hello"))
    multi = CASES["no-system-multi-turn"]
    assert render_go(multi, system=SYSTEM) == hf_prompt(tokenizer, [sys_(SYSTEM), *multi])


def test_request_system_message_replaces_modelfile_system(render_go: Any, tokenizer: Any) -> None:
    messages = [sys_("Answer in French."), user("Hello")]
    assert render_go(messages, system=SYSTEM) == hf_prompt(tokenizer, messages)


def test_training_text_is_the_served_prompt_plus_the_answer(render_go: Any, tokenizer: Any) -> None:
    """The trainer's text for a record starts with exactly the prompt Ollama sends for its question."""
    record = {"instruction": "How do I enable S3 Block Public Access?", "input": "", "output": "Use the console."}
    trained = render_text(tokenizer, record_messages(record, SYSTEM))
    served = render_go([user(record["instruction"])], system=SYSTEM)
    assert trained == BOS + served + "Use the console.<|eot_id|>"


def test_padded_content_is_stripped_by_hf_only(render_go: Any, tokenizer: Any) -> None:
    """Known limit: HF strips each message, Ollama cannot (no trim in its templates). Stripped input matches."""
    padded = [sys_(f"  {SYSTEM}\n"), user("\n Hello \n")]
    stripped = [sys_(SYSTEM), user("Hello")]
    assert hf_prompt(tokenizer, padded) == hf_prompt(tokenizer, stripped) == render_go(stripped)
    assert render_go(padded) != render_go(stripped)


def test_template_date_follows_the_training_date() -> None:
    assert CHAT_TEMPLATE_KWARGS == {"date_string": "26 Jul 2024"}
    assert "Today Date: 26 Jul 2024\n\n" in ollama_template()
    assert BOS not in ollama_template()


# --- the Modelfile -------------------------------------------------------------------------------

PROMPT_WITH_QUOTES = 'You are a "Cloud Security Architect".\nQuote policies like """this""" when needed.\nBe exact.'


def test_render_modelfile_fields() -> None:
    text = render_modelfile("bastion-Q4_K_M.gguf", PROMPT_WITH_QUOTES, 8192, 0.7)
    parsed = parse_modelfile(text)
    assert parsed["FROM"] == "./bastion-Q4_K_M.gguf"
    assert parsed["TEMPLATE"] == ollama_template()
    assert parsed["SYSTEM"] == PROMPT_WITH_QUOTES
    assert (
        [v for k, v in parsed["PARAMETER"] if k == "stop"]
        == list(STOP_TOKENS)
        == ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
    )
    assert dict(parsed["PARAMETER"])["num_ctx"] == "8192"
    assert float(dict(parsed["PARAMETER"])["temperature"]) == 0.7
    assert "ollama create NAME -f Modelfile" in text
    assert all(line.startswith("#") for line in text.splitlines()[:4])


def test_modelfile_end_to_end_with_the_flagship_prompt(render_go: Any, tokenizer: Any) -> None:
    """Template and SYSTEM as Ollama reads them from the file, rendered by Go, equal the training format."""
    system_prompt = load_recipe("llama31-8b.yaml").system_prompt
    parsed = parse_modelfile(render_modelfile("model.gguf", system_prompt, 4096, 0.2))
    question = 'Is "{{ .Prompt }}" safe in an IAM policy?\nExplain.'
    got = render_go([user(question)], system=parsed["SYSTEM"], template=parsed["TEMPLATE"])
    assert got == hf_prompt(tokenizer, prompt_messages(system_prompt, question))


def test_system_prompt_is_stripped_and_empty_prompt_omitted(render_go: Any, tokenizer: Any) -> None:
    assert parse_modelfile(render_modelfile("m.gguf", f"\n  {SYSTEM}  \n", 2048, 0.0))["SYSTEM"] == SYSTEM
    parsed = parse_modelfile(render_modelfile("m.gguf", "", 2048, 1))
    assert parsed["SYSTEM"] is None
    assert dict(parsed["PARAMETER"])["temperature"] == "1.0"
    assert render_go([user("Hi")], system=parsed["SYSTEM"] or "") == hf_prompt(tokenizer, [user("Hi")])


@pytest.mark.parametrize(
    "prompt", ['A line ending in triple quotes """\nsecond line', "bell \x07 character", "no\u00a0break space"]
)
def test_prompts_ollama_cannot_read_back_are_refused(prompt: str) -> None:
    with pytest.raises(BadInputError, match="cannot be written in an Ollama Modelfile"):
        render_modelfile("m.gguf", prompt, 2048, 0.7)


@pytest.mark.parametrize(
    "args",
    [
        ("dir/m.gguf", 2048, 0.7),
        ("", 2048, 0.7),
        ('m".gguf', 2048, 0.7),
        ("m.gguf", 0, 0.7),
        ("m.gguf", 2048, -1.0),
        ("m.gguf", 2048, float("nan")),
    ],
)
def test_bad_arguments_are_refused(args: tuple[str, int, float]) -> None:
    name, num_ctx, temperature = args
    with pytest.raises(BadInputError):
        render_modelfile(name, SYSTEM, num_ctx, temperature)


def test_parse_modelfile_follows_ollama() -> None:
    """Cases from Ollama's parser: case-insensitive commands, comments, quoted and multi-line values."""
    parsed = parse_modelfile(
        '# c\nfrom llama3.1\nSYSTEM """a\n"""\nparameter stop "<|eot_id|>"\n'
        "PARAMETER num_ctx 4096\nMESSAGE user hi there\n"
    )
    assert parsed["FROM"] == "llama3.1"
    assert parsed["SYSTEM"] == "a\n"
    assert parsed["PARAMETER"] == [("stop", "<|eot_id|>"), ("num_ctx", "4096")]
    assert parsed["MESSAGE"] == ["user: hi there"]
    with pytest.raises(ValueError, match="no FROM"):
        parse_modelfile("SYSTEM hi\n")
    with pytest.raises(ValueError, match="end of file"):
        parse_modelfile('FROM x\nSYSTEM """never closed\n')
