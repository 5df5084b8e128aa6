"""The harvest's shortcuts give exactly what the plain computations give, and the library calls
that replaced copies of library internals behave as those libraries document.

Token counts (``harvest.tokens``) are the real Llama 3 tokenizer's, one text or a batch at a time;
dedup signatures are datasketch's ``MinHash.update_batch`` and survive storage; the shortcuts in
sections, gates and the record schema check equal the plain computations they replace.
"""

from __future__ import annotations

import random
from collections import Counter
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from harvest import gates
from harvest.dedup import SEED, Deduper, normalise_words, shingles
from harvest.gates import QualityGates
from harvest.sections import count_sentences, lower_words, prose_only, split_sentences, word_runs
from harvest.tokens import TokenCounter

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO / "recipes" / "corpus" / "cloudsec-mini"
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


def test_token_counts_equal_the_tokenizer_one_by_one_and_in_batches() -> None:
    texts = [p.read_text() for p in sorted(CORPUS.rglob("*.html"))[:6]]
    texts += [t[i : i + 700] for t in texts for i in range(0, len(t), 700)]  # chunk-sized pieces
    texts += MULTILINGUAL + _random_texts(300, seed=1) + ["", " ", "\n", "a", "<|eot_id|>"]
    expected = [_reference(text) for text in texts]
    one_by_one = TokenCounter(_tokenizer())
    assert [one_by_one(text) for text in texts] == expected
    assert [one_by_one(text) for text in texts] == expected  # and again, from the cache
    batched = TokenCounter(_tokenizer())
    assert batched.many(texts[:50]) == expected[:50]
    assert batched.many(texts) == expected  # some known, some new, repeats kept in order
    assert [batched(text) for text in texts] == expected


def test_other_tokenizers_are_counted_by_the_tokenizer() -> None:
    calls: list[str] = []

    def fake(text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
        calls.append(text)
        return {"input_ids": [0] * len(text.split())}

    counter = TokenCounter(fake)
    assert counter("one two three") == 3 and counter("one two three") == 3
    assert calls == ["one two three"]  # cached


# ============================================================================ dedup


def test_dedup_sketches_are_datasketch_update_batch_and_survive_storage() -> None:
    from datasketch import LeanMinHash, MinHash

    dd = Deduper(0.8, 256, 16, 8, 5)
    texts = ["", "one", "one two three", *(p.read_text()[:3000] for p in sorted(CORPUS.rglob("*.html"))[:20])]
    for i, text in enumerate(texts):
        reference = MinHash(num_perm=256, seed=SEED)
        reference.update_batch([" ".join(g).encode() for g in _word_grams(normalise_words(text), 5)])
        result = dd.check(f"k{i}", text)
        assert (result.sketch.hashvalues == reference.hashvalues).all()
        stored = LeanMinHash.deserialize(result.signature, byteorder="<")
        assert stored == LeanMinHash(reference) and stored.seed == SEED
        if result.kind == "unique":
            dd.add(f"k{i}", result)
    assert len(shingles(normalise_words("one two three"), 5)) == 1


def _word_grams(words: Any, k: int) -> list[tuple[str, ...]]:
    k = min(k, len(words))
    return [tuple(words[i : i + k]) for i in range(len(words) - k + 1)] if words else []


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


# ============================================================================ gates, records


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
