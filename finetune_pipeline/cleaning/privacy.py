"""Personal data: find emails, phone numbers, payment cards (Luhn-checked), US SSNs, IP addresses and
IBANs, and apply the per-type policy from `finetune.yaml` (`privacy`): redact with a typed placeholder,
drop the record, or keep. Reports count matches by type, never their values.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from dataclasses import dataclass

from finetune_pipeline.settings import PrivacySettings

_PATTERNS: dict[str, re.Pattern] = {
    "email": re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b"),
    "iban": re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b"),
    "credit_card": re.compile(r"\b(?:\d[ -]?){12,18}\d\b"),
    "us_ssn": re.compile(r"\b(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}\b"),
    "ip_address": re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b"),
    "phone": re.compile(r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)[ .-]?|\d{2,4}[ .-])\d{3,4}[ .-]?\d{3,4}\b"),
}
# Order matters: a card number must not be half-eaten by the phone pattern.
_ORDER = ("email", "iban", "credit_card", "us_ssn", "ip_address", "phone")


def luhn_valid(number: str) -> bool:
    digits = [int(c) for c in number if c.isdigit()]
    if not 13 <= len(digits) <= 19:
        return False
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2:
            d = d * 2 - 9 if d * 2 > 9 else d * 2
        total += d
    return total % 10 == 0


def _valid(kind: str, value: str) -> bool:
    if kind == "credit_card":
        return luhn_valid(value)
    if kind == "ip_address":
        try:
            ipaddress.ip_address(value)
            return True
        except ValueError:
            return False
    return True


@dataclass
class PiiResult:
    text: str
    counts: Counter
    drop_because: str | None  # the entity type whose policy is "drop", when one was found


def apply_pii_policy(text: str, policy: PrivacySettings) -> PiiResult:
    """Detect PII in `text` and redact/drop/keep per type. Placeholders look like `<EMAIL>`."""
    counts: Counter = Counter()
    drop_because = None
    for kind in _ORDER:
        action = getattr(policy, kind)

        def replace(match: re.Match) -> str:
            nonlocal drop_because
            value = match.group(0)
            if not _valid(kind, value):
                return value
            counts[kind] += 1
            if action == "drop" and drop_because is None:
                drop_because = kind
            return f"<{kind.upper()}>" if action == "redact" else value

        text = _PATTERNS[kind].sub(replace, text)
    return PiiResult(text=text, counts=counts, drop_because=drop_because)
