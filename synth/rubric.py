"""The judge's faithfulness rubric and its labelled calibration cases.

The rubric is data: a 1-5 scale, the violations that cap a score, and the pass mark. The judge's
prompt is rendered from it (with the cases marked ``example`` as worked examples), so instructions
and examples cannot drift apart; ``tests/test_synth_rubric.py`` fails when a case contradicts the
instructions (a violation without the cap it implies, a faithful label below the pass mark, a
"contradicts" quote not in its source, an "unsupported" phrase that the source does contain, ...).
Before any pair is judged, the judge scores every case and must agree with their labels
(``synth.judge.min_agreement``).
"""

from __future__ import annotations

import json
from typing import Any

PASS_SCORE = 4

SCALE = {
    5: "Every claim of the answer is stated in the source and the answer answers the question; for a question "
    "the source cannot answer, the answer says so and names what is missing, adding nothing.",
    4: "Every claim is supported by the source; the answer may leave out details or word things differently.",
    3: "Mostly supported, but one minor detail goes beyond what the source states.",
    2: "A central claim is not in the source, or the answer does not answer the question asked.",
    1: "The answer contradicts the source or accepts a premise the source contradicts.",
}

#: Violations: id -> (highest score a pair with it can get, what it is).
VIOLATIONS: dict[str, tuple[int, str]] = {
    "contradiction": (1, "the answer states the opposite of what the source says"),
    "false_premise_accepted": (1, "the question rests on a wrong assumption and the answer goes along with it"),
    "unsupported_claim": (2, "a central claim of the answer is not stated in the source"),
    "invented_answer": (2, "the source cannot answer the question, yet the answer gives facts as if it could"),
    "off_question": (2, "the answer does not answer the question that was asked"),
    "minor_addition": (3, "one minor detail of the answer is not in the source"),
}

_S3 = (
    "S3 Block Public Access provides settings at the account and bucket level. When enabled at the account "
    "level, the settings apply to all buckets in the account. Block Public Access settings override bucket "
    "policies and object ACLs that would otherwise allow public access."
)
_KMS = (
    "AWS KMS supports automatic key rotation for symmetric customer managed keys. When automatic rotation "
    "is enabled, AWS KMS generates new cryptographic material for the key every year. The key ID and ARN do "
    "not change, and older key material is retained so that data encrypted under it can still be decrypted."
)
_K8S = (
    "A NetworkPolicy selects pods by label. By default, pods are non-isolated: they accept traffic from any "
    "source. Once a NetworkPolicy selects a pod for ingress, the pod rejects any connection that no policy "
    "allows. Network policies are implemented by the network plugin; a cluster whose plugin does not support "
    "them silently ignores them."
)
_MFA = (
    "Enable multi-factor authentication for the root user and for every IAM user with console access. Do not "
    "create access keys for the root user. Use the root user only for the few tasks that require it, such as "
    "changing the account's support plan or closing the account."
)
_LOG = (
    "CloudTrail records management events by default for 90 days in the event history. To keep events longer, "
    "create a trail that delivers log files to an S3 bucket. Enable log file validation so that you can detect "
    "whether a log file was modified or deleted after CloudTrail delivered it."
)
_SECRETS = (
    "Store secrets in a secrets manager rather than in source code or environment files. Grant each workload "
    "read access only to the secrets it needs, and rotate secrets on a schedule and after any suspected exposure. "
    "Audit every access to a secret."
)


def _case(source: str, question: str, answer: str, score: int, violations: list[str], **extra: Any) -> dict[str, Any]:
    return {"source": source, "question": question, "answer": answer, "score": score, "violations": violations} | extra


CASES: list[dict[str, Any]] = [
    _case(
        _S3,
        "If I turn on Block Public Access for the whole account, does it cover every bucket?",
        "Yes. Enabled at the account level, the Block Public Access settings apply to all buckets in the account.",
        5,
        [],
        example=True,
    ),
    _case(
        _S3,
        "Can a bucket policy still make objects public once Block Public Access is on?",
        "No. Block Public Access settings override bucket policies and object ACLs that would allow public access.",
        5,
        [],
    ),
    _case(
        _S3,
        "Does a bucket policy take precedence over Block Public Access?",
        "Yes, a bucket policy that grants public access takes precedence over Block Public Access.",
        1,
        ["contradiction"],
        contradicts="Block Public Access settings override bucket policies and object ACLs",
        example=True,
    ),
    _case(
        _S3,
        "Where can Block Public Access be configured?",
        "At the account and the bucket level; it also costs $0.05 per bucket per month.",
        2,
        ["unsupported_claim"],
        unsupported=["costs $0.05 per bucket per month"],
    ),
    _case(
        _KMS,
        "How often does KMS rotate a customer managed key when automatic rotation is on?",
        "Every year AWS KMS generates new cryptographic material for the key; its key ID and ARN stay the same.",
        5,
        [],
    ),
    _case(
        _KMS,
        "After rotation, can I still decrypt data encrypted with the old key material?",
        "Yes. KMS retains the older key material, so data encrypted under it can still be decrypted.",
        5,
        [],
    ),
    _case(
        _KMS,
        "Since rotation changes the key ARN, which applications must I update after each rotation?",
        "Update every application that references the key ARN after each yearly rotation.",
        1,
        ["false_premise_accepted"],
        contradicts="The key ID and ARN do not change",
    ),
    _case(
        _KMS,
        "Since rotation changes the key ARN, which applications must I update after each rotation?",
        "None: rotation does not change the key ID or ARN, so applications keep working; only the key material is new.",
        5,
        [],
        kind="false_premise",
        example=True,
    ),
    _case(
        _KMS,
        "Does automatic rotation work for asymmetric KMS keys?",
        "The text only covers symmetric customer managed keys; it does not say whether asymmetric keys can be "
        "rotated automatically.",
        5,
        [],
        kind="cannot_answer",
        example=True,
    ),
    _case(
        _KMS,
        "Does automatic rotation work for asymmetric KMS keys?",
        "Yes, asymmetric keys rotate every two years.",
        2,
        ["invented_answer"],
        unsupported=["asymmetric keys rotate every two years"],
        kind="cannot_answer",
    ),
    _case(
        _K8S,
        "What happens to a pod's incoming traffic once an ingress NetworkPolicy selects it?",
        "The pod becomes isolated for ingress and rejects every connection that no network policy allows.",
        5,
        [],
    ),
    _case(
        _K8S,
        "Are pods isolated by default?",
        "No. By default pods are non-isolated and accept traffic from any source.",
        5,
        [],
    ),
    _case(
        _K8S,
        "Are pods isolated by default?",
        "Yes, Kubernetes isolates every pod until a policy allows traffic.",
        1,
        ["contradiction"],
        contradicts="By default, pods are non-isolated: they accept traffic from any source.",
    ),
    _case(
        _K8S,
        "Why might my network policies have no effect?",
        "Network policies are enforced by the network plugin; if the cluster's plugin does not support them, "
        "they are silently ignored, typically with Flannel.",
        3,
        ["minor_addition"],
        unsupported=["typically with Flannel"],
    ),
    _case(
        _K8S,
        "Why might my network policies have no effect?",
        "Pods select NetworkPolicies by label.",
        2,
        ["off_question"],
    ),
    _case(
        _MFA,
        "Should I create access keys for the root user?",
        "No. Do not create access keys for the root user; enable MFA on it and use it only for tasks that need it.",
        5,
        [],
    ),
    _case(
        _MFA,
        "Which tasks still need the root user?",
        "Only a few, such as changing the account's support plan or closing the account.",
        4,
        [],
    ),
    _case(
        _MFA,
        "Who needs MFA?",
        "The root user and every IAM user with console access; hardware keys are mandatory for them.",
        2,
        ["unsupported_claim"],
        unsupported=["hardware keys are mandatory"],
    ),
    _case(
        _LOG,
        "How long does CloudTrail keep management events without a trail?",
        "CloudTrail keeps management events in the event history for 90 days by default.",
        5,
        [],
    ),
    _case(
        _LOG,
        "How do I keep CloudTrail events for longer than the default?",
        "Create a trail that delivers the log files to an S3 bucket.",
        4,
        [],
    ),
    _case(
        _LOG,
        "How can I tell whether a delivered CloudTrail log file was tampered with?",
        "Enable log file validation; it detects whether a log file was modified or deleted after delivery.",
        5,
        [],
    ),
    _case(
        _LOG,
        "How long does CloudTrail keep management events without a trail?",
        "CloudTrail keeps them for 365 days in the event history.",
        1,
        ["contradiction"],
        contradicts="CloudTrail records management events by default for 90 days in the event history.",
    ),
    _case(
        _LOG,
        "How much does a CloudTrail trail cost per month?",
        "The text does not say what a trail costs; it only covers retention and log file validation.",
        5,
        [],
        kind="cannot_answer",
    ),
    _case(
        _SECRETS,
        "Where should an application's database password live?",
        "In a secrets manager, not in source code or environment files, readable only by the workloads that need it.",
        5,
        [],
    ),
    _case(
        _SECRETS,
        "When should secrets be rotated?",
        "On a schedule, and again after any suspected exposure.",
        5,
        [],
    ),
    _case(
        _SECRETS,
        "When should secrets be rotated?",
        "Every 30 days, as required by PCI DSS.",
        2,
        ["unsupported_claim"],
        unsupported=["every 30 days", "as required by PCI DSS"],
    ),
    _case(
        _SECRETS,
        "Since environment files are the safest place for secrets, how should I protect them?",
        "Keep the environment files out of version control and restrict their permissions.",
        1,
        ["false_premise_accepted"],
        contradicts="Store secrets in a secrets manager rather than in source code or environment files.",
    ),
]


def label(case: dict[str, Any]) -> bool:
    """A case's label: faithful (True) when its score reaches the pass mark."""
    return int(case["score"]) >= PASS_SCORE


def instructions() -> str:
    """The judge's instructions, rendered from the scale, the violations and the example cases."""
    lines = [
        "You judge whether an answer is faithful to a source text. Judge only against the source: your own "
        "knowledge does not count, whether or not it agrees.",
        "",
        "Score from 1 to 5:",
        *(f"{score}: {text}" for score, text in sorted(SCALE.items(), reverse=True)),
        "",
        "List every violation you find; each caps the score:",
        *(f"- {vid} (score at most {cap}): {text}" for vid, (cap, text) in VIOLATIONS.items()),
        "",
        f"A faithful answer has no violation and scores {PASS_SCORE} or more.",
        'Reply as JSON: {"score": <1-5>, "violations": [<ids>], "reason": "<one sentence>"}.',
        "",
        "Examples:",
    ]
    for case in (c for c in CASES if c.get("example")):
        lines += [
            f"Source: {case['source']}",
            f"Question: {case['question']}",
            f"Answer: {case['answer']}",
            f"Verdict: {json.dumps({'score': case['score'], 'violations': case['violations']})}",
            "",
        ]
    return "\n".join(lines).rstrip()


def reply_schema() -> dict[str, Any]:
    """The JSON schema of the judge's reply."""
    return {
        "type": "object",
        "properties": {
            "score": {"type": "integer", "minimum": 1, "maximum": 5},
            "violations": {"type": "array", "items": {"enum": sorted(VIOLATIONS)}},
            "reason": {"type": "string"},
        },
        "required": ["score", "violations"],
        "additionalProperties": False,
    }


def messages(source: str, question: str, answer: str) -> list[dict[str, str]]:
    """The judge's chat messages for one pair."""
    user = f"Source:\n<<<\n{source}\n>>>\n\nQuestion: {question}\n\nAnswer: {answer}\n\nVerdict as JSON:"
    return [{"role": "system", "content": instructions()}, {"role": "user", "content": user}]
