"""Think before you share (issue 5 item 3): find what in a text could identify its author.

Interface used by posts, replies, profiles and messages (and later the research issue for free
text). This first version knows only e-mail addresses and phone numbers; the full detector
(names, street addresses, postcodes, exact dates, employers and schools, narrowing combinations)
replaces the body of `check` without changing its signature.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

__all__ = ["Finding", "FindingKind", "check"]

FindingKind = Literal[
    "email",
    "phone",
    "street-address",
    "postcode",
    "person-name",
    "exact-date",
    "organisation",
    "combination",
]


@dataclass(frozen=True)
class Finding:
    """One span of `text[start:end]` that could identify the author, with a plain-words reason."""

    kind: FindingKind
    start: int
    end: int
    message: str


_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
_PHONE = re.compile(r"(?<!\w)(?:\+?\d{1,3}[\s.-]?)?(?:\(\d{2,4}\)[\s.-]?)?\d{3,4}[\s.-]?\d{3,4}(?!\w)")


def check(text: str) -> list[Finding]:
    """Findings in `text`, in order of position. Pure and offline: no I/O, no network."""
    found = [Finding("email", m.start(), m.end(), "This looks like an e-mail address.") for m in _EMAIL.finditer(text)]
    for m in _PHONE.finditer(text):
        if sum(c.isdigit() for c in m.group()) >= 7 and not any(f.start <= m.start() < f.end for f in found):
            found.append(Finding("phone", m.start(), m.end(), "This looks like a phone number."))
    return sorted(found, key=lambda f: f.start)
