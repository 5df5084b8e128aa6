"""Deterministic instructions for sections: an intent from the content, a template from a stable hash.

The intent is the one whose keywords the section matches most (strong keywords 2 points, weak
ones 1, hits in the section's own heading triple), among the recipe's intents; with too little
signal (under 3 points, or under one point per 50 words) it is ``explain``. The topic is the
section's own heading, unless that heading is a label ("Do", "Don't", "References", "See also",
"Archive 2024-02": ``is_label``): then the nearest heading above it that is not one, else the
page title. Markdown escapes in headings and titles are resolved. The template is
picked by a BLAKE2 hash of (seed, heading, page title, index[, part]), never Python's salted
``hash()``, so the same recipe gives the same instructions in every process. Templates only name the section's
topic and ask for what the section is about, so the section text answers them.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import Counter
from dataclasses import dataclass

from harvest.memo import Memo
from harvest.sections import Section, lower_words, unescape_markdown

INTENTS = ("explain", "best_practices", "design", "compare", "risks", "compliance", "implementation", "troubleshooting")
MIN_SCORE = 3  # fewer keyword points: explain
WORDS_PER_POINT = 50  # and a long section needs one point per this many words (keyword density)
HEADING_WEIGHT = 3
GENERIC_HEADINGS = {
    "overview",
    "introduction",
    "summary",
    "background",
    "details",
    "notes",
    "about",
    "general",
    "description",
    "conclusion",
    "key concepts",
    "concepts",
    "how it works",
}

# headings that label a part of a section rather than name a topic (compared lowercased, without
# punctuation); and those that start so ("Archive 2024-02", "Archives")
LABEL_HEADINGS = {
    "do",
    "dos",
    "do s",
    "don t",
    "donts",
    "don ts",
    "do not",
    "dos and don ts",
    "do and don t",
    "references",
    "reference",
    "see also",
    "further reading",
    "related",
    "related topics",
    "related pages",
    "links",
    "external links",
    "resources",
    "sources",
    "bibliography",
    "footnotes",
    "next steps",
}
_LABEL_PREFIX = re.compile(r"^(?:archives?|posts? from|older posts|newer posts)\b")
_LABEL_WORDS = re.compile(r"[^\w]+")


def is_label(heading: str) -> bool:
    """A heading that labels rather than names a topic: "Do", "Don't", "See also", "Archive 2024"."""
    plain = _LABEL_WORDS.sub(" ", heading.lower().replace("\u2019", "'")).strip()
    return plain in LABEL_HEADINGS or bool(_LABEL_PREFIX.match(plain))


def section_topic(section: Section) -> str:
    """The section's topic: its own heading, or the nearest one above it that is not a label
    (``is_label``), or the page title; escapes resolved."""
    for heading in reversed(section.heading.split(" > ")):
        heading = " ".join(unescape_markdown(heading).split())
        if heading and not is_label(heading):
            return heading
    return " ".join(unescape_markdown(section.page_title).split())


# intent -> (strong keywords: 2 points a hit, weak keywords: 1 point); ties go to the earlier
# intent in this order. Matched on lowercased words (``\w+`` runs): "word" matches
# the word, "stem*" any word starting with it, "two words" the words in sequence (hyphens split
# words: "trade-off" is "trade off").
_KEYWORDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "troubleshooting": (
        (
            "error",
            "errors",
            "fail",
            "fails",
            "failed",
            "failing",
            "failure",
            "failures",
            "troubleshoot*",
            "debug*",
            "access denied",
            "diagnos*",
        ),
        ("resolv*", "issue", "issues", "symptom", "symptoms", "cannot"),
    ),
    "compliance": (
        (
            "nist",
            "cis",
            "complian*",
            "audit*",
            "pci",
            "hipaa",
            "soc 2",
            "soc2",
            "iso 27001",
            "gdpr",
            "fedramp",
            "regulat*",
        ),
        ("control", "controls", "benchmark", "benchmarks", "framework", "frameworks", "evidence"),
    ),
    "risks": (
        ("risk", "risks", "threat", "threats", "attack*", "vulnerab*", "exploit*", "exfiltrat*", "breach*"),
        ("exposure", "compromis*", "malicious", "adversar*"),
    ),
    "compare": (
        ("vs", "versus", "compar*", "difference", "differences", "trade off", "trade offs", "tradeoff*"),
        ("whereas", "alternative", "alternatives", "instead of", "unlike"),
    ),
    "implementation": (
        ("step", "steps", "how to", "install*", "set up"),
        ("configur*", "enabl*", "deploy*", "command", "commands"),
    ),
    "best_practices": (
        ("best practice", "best practices", "recommend*", "should"),
        ("avoid", "ensure", "must", "prefer", "never"),
    ),
    "design": (
        ("architect*", "design*", "topolog*", "landing zone", "landing zones", "hub and spoke"),
        ("pattern", "patterns", "segmentation", "multi account", "boundar*"),
    ),
}
_NOT_COMPLIANCE = " access control"  # "access control(s)" is not about compliance controls
_NUMBERED_LINE = re.compile(r"^[ \t]*\d{1,2}[.)][ \t]", re.M)  # a numbered list: implementation, strong
_CODE_FENCE = re.compile(r"^[ \t]*```", re.M)  # a code block: implementation, weak (per fence line)
_TOKEN = re.compile(r"[a-z0-9]+")


def _keyword_tables() -> tuple[
    dict[str, list[tuple[str, int]]], list[tuple[str, str, int]], list[tuple[str, str, int]]
]:
    words: dict[str, list[tuple[str, int]]] = {}
    stems: list[tuple[str, str, int]] = []
    phrases: list[tuple[str, str, int]] = []
    for intent, (strong, weak) in _KEYWORDS.items():
        for points, keywords in ((2, strong), (1, weak)):
            for kw in keywords:
                if " " in kw:
                    phrases.append((f" {kw} ", intent, points))
                elif kw.endswith("*"):
                    stems.append((kw[:-1], intent, points))
                else:
                    words.setdefault(kw, []).append((intent, points))
    return words, stems, phrases


_WORDS, _STEMS, _PHRASES = _keyword_tables()
_STEM_PREFIXES = tuple(stem for stem, _, _ in _STEMS)


WORD_POINTS_SIZE = 1 << 16  # words whose keyword hits are kept (cleared when full)


def _word_points(word: str) -> tuple[tuple[str, int], ...]:
    """A word's keyword hits ``(intent, points)`` (empty for most words)."""
    hits = list(_WORDS.get(word, ()))
    if word.startswith(_STEM_PREFIXES):
        hits += [(intent, points) for stem, intent, points in _STEMS if word.startswith(stem)]
    return tuple(hits)


_WORD_POINTS = Memo(_word_points, WORD_POINTS_SIZE)


# intent -> templates; {persona}, {topic}, {where} (" in the context of <page>" or "")
TEMPLATES: dict[str, list[str]] = {
    "explain": [
        "Explain {topic}{where}, as you would to {persona}.",
        "As {persona}, what do I need to know about {topic}{where}?",
        "Give {persona} a clear explanation of {topic}{where}.",
        "Describe {topic}{where} for {persona}.",
    ],
    "best_practices": [
        "As {persona}, which practices are recommended for {topic}{where}?",
        "Summarize the best practices for {topic}{where}, for {persona}.",
        "What should {persona} do to get {topic} right{where}?",
        "List the recommendations for {topic}{where} that {persona} should follow.",
    ],
    "design": [
        "As {persona}, what are the design considerations for {topic}{where}?",
        "Describe the architecture of {topic}{where} for {persona}.",
        "How should {persona} approach the design of {topic}{where}?",
    ],
    "compare": [
        "Compare the options described for {topic}{where}, for {persona}.",
        "As {persona}, how do the alternatives for {topic}{where} differ?",
        "What are the differences and trade-offs in {topic}{where}? Answer for {persona}.",
    ],
    "risks": [
        "As {persona}, what risks and threats relate to {topic}{where}?",
        "Which security risks should {persona} consider for {topic}{where}?",
        "Describe the threats involved in {topic}{where}, for {persona}.",
    ],
    "compliance": [
        "As {persona}, which controls and compliance requirements apply to {topic}{where}?",
        "How does {topic}{where} relate to security controls and compliance? Answer for {persona}.",
        "Summarize the compliance and audit aspects of {topic}{where} for {persona}.",
    ],
    "implementation": [
        "As {persona}, how do I implement {topic}{where}?",
        "Walk {persona} through the steps for {topic}{where}.",
        "What are the steps to set up {topic}{where}? Answer for {persona}.",
        "Show {persona} how to configure {topic}{where}.",
    ],
    "troubleshooting": [
        "As {persona}, how do I troubleshoot problems with {topic}{where}?",
        "What can go wrong with {topic}{where}, and how is it resolved? Answer for {persona}.",
        "How should {persona} diagnose and fix failures related to {topic}{where}?",
    ],
}


@dataclass(frozen=True)
class Instruction:
    """An instruction for one section, with the intent and the template it came from."""

    instruction: str
    intent: str
    template_id: str  # "<intent>/<n>"


def keyword_points(text: str) -> dict[str, int]:
    """Keyword points per intent in ``text``: 2 for a strong keyword, 1 for a weak one."""
    scores = dict.fromkeys(_KEYWORDS, 0)
    tokens = lower_words(text)
    counts = Counter(tokens)
    for word in filter(_WORD_POINTS.__getitem__, counts):  # the words with a hit, in C
        n = counts[word]
        for intent, points in _WORD_POINTS[word]:
            scores[intent] += points * n
    joined = f" {' '.join(tokens)} "
    for phrase, intent, points in _PHRASES:
        if phrase in joined:
            scores[intent] += points * joined.count(phrase)
    scores["compliance"] -= joined.count(_NOT_COMPLIANCE)  # weak "control(s)" counted above
    fences = len(_CODE_FENCE.findall(text)) if "```" in text else 0  # the regex needs one
    scores["implementation"] += 2 * len(_NUMBERED_LINE.findall(text)) + fences
    return scores


def intent_scores(section: Section) -> dict[str, int]:
    """Keyword points per intent; hits in the section's own heading count triple."""
    body, head = keyword_points(section.text), keyword_points(section.topic)
    return {intent: body[intent] + HEADING_WEIGHT * head[intent] for intent in _KEYWORDS}


def choose_intent(section: Section, intents: list[str]) -> str:
    """The allowed intent the section's keywords favour; ``explain`` (or the first allowed) otherwise."""
    if not intents:
        raise ValueError("instructions: the list of intents is empty")
    unknown = set(intents) - set(INTENTS)
    if unknown:
        raise ValueError(f"instructions: unknown intents {sorted(unknown)}; known: {', '.join(INTENTS)}")
    scores = intent_scores(section)
    needed = max(MIN_SCORE, len(section.text.split()) // WORDS_PER_POINT)
    ranked = sorted(
        (i for i in _KEYWORDS if i in intents and scores[i] >= needed), key=lambda i: -scores[i]
    )  # stable: ties keep _KEYWORDS order
    if ranked:
        return ranked[0]
    return "explain" if "explain" in intents else intents[0]


def stable_index(seed: int, *parts: object, modulo: int) -> int:
    """A process-independent choice in ``range(modulo)`` from the seed and the parts."""
    payload = "\x1f".join([str(seed), *map(str, parts)]).encode("utf-8")
    return int.from_bytes(hashlib.blake2b(payload, digest_size=8).digest(), "big") % modulo


def _plain(text: str) -> str:
    return " ".join(_TOKEN.findall(text.lower()))


def _topic_and_where(section: Section) -> tuple[str, str]:
    page = " ".join(unescape_markdown(section.page_title).split())
    topic = section_topic(section) or page or "this topic"
    if topic.lower() in GENERIC_HEADINGS and page:
        return f"the {topic.lower()} of {page}", ""
    if not page or _plain(page) in _plain(topic):
        return topic, ""
    return topic, f" in the context of {page}"


def make_instruction(section: Section, persona: str, intents: list[str], seed: int) -> Instruction:
    """The instruction for ``section``: intent from its content, template from a stable hash."""
    intent = choose_intent(section, intents)
    templates = TEMPLATES[intent]
    key: tuple[object, ...] = (section.heading, section.page_title, section.index)
    if section.part:
        key += (section.part,)
    n = stable_index(seed, *key, modulo=len(templates))
    topic, where = _topic_and_where(section)
    persona = " ".join(persona.split()) or "a practitioner"
    text = templates[n].format(persona=persona, topic=topic, where=where)
    return Instruction(instruction=text[0].upper() + text[1:], intent=intent, template_id=f"{intent}/{n}")


def _entropy_bits(counts: Counter[str]) -> float:
    total = sum(counts.values())
    if not total:
        return 0.0
    return max(0.0, -sum((c / total) * math.log2(c / total) for c in counts.values() if c))


def instruction_diversity(instructions: list[Instruction]) -> dict:
    """Distinct templates, counts per intent and template, and Shannon entropies in bits."""
    templates = Counter(i.template_id for i in instructions)
    intents = Counter(i.intent for i in instructions)
    return {
        "total": len(instructions),
        "distinct_templates": len(templates),
        "distinct_intents": len(intents),
        "intent_counts": dict(sorted(intents.items())),
        "template_counts": dict(sorted(templates.items())),
        "template_entropy_bits": round(_entropy_bits(templates), 4),
        "intent_entropy_bits": round(_entropy_bits(intents), 4),
        "max_template_entropy_bits": round(math.log2(sum(len(t) for t in TEMPLATES.values())), 4),
    }
