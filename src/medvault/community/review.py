"""Think before you share, in the publishing flow (issue 5 item 3): every text about to be published
goes through `disclosure.check`; findings stop the publication until the author confirms.

The faces show the findings: `highlight` cuts a text into plain and flagged pieces, which a page
renders as escaped text and `<mark>` spans (never as raw HTML), and JSON returns as offsets.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from medvault.community import disclosure
from medvault.community.errors import CommunityError

__all__ = ["FieldFindings", "NeedsConfirmation", "Piece", "highlight", "review"]


@dataclass(frozen=True)
class FieldFindings:
    """The findings in one field (`field`: "title", "body", or a profile field's name)."""

    field: str
    text: str
    findings: tuple[disclosure.Finding, ...]


class NeedsConfirmation(CommunityError):
    """The text may identify its author: nothing was published; publish again with confirmation."""

    code = "needs-confirmation"

    def __init__(self, found: list[FieldFindings]) -> None:
        super().__init__("this may identify you: review the highlighted parts, then publish anyway or edit")
        self.found = found


@dataclass(frozen=True)
class Piece:
    """A run of the text; `reason` is set when the run is a finding."""

    text: str
    reason: str | None = None
    kind: str | None = None


def review(texts: Mapping[str, str], *, confirm: bool) -> None:
    """Raise NeedsConfirmation when any text has findings and the author has not confirmed."""
    if confirm:
        return
    found = [
        FieldFindings(name, text, tuple(hits))
        for name, text in texts.items()
        if text and (hits := disclosure.check(text))
    ]
    if found:
        raise NeedsConfirmation(found)


def highlight(text: str, findings: tuple[disclosure.Finding, ...] | list[disclosure.Finding]) -> list[Piece]:
    """`text` cut at the findings (overlapping findings merge into the first one)."""
    pieces: list[Piece] = []
    at = 0
    for f in sorted(findings, key=lambda f: (f.start, -f.end)):
        start, end = max(f.start, at), min(f.end, len(text))
        if end <= start:
            continue
        if start > at:
            pieces.append(Piece(text[at:start]))
        pieces.append(Piece(text[start:end], f.message, f.kind))
        at = end
    if at < len(text):
        pieces.append(Piece(text[at:]))
    return pieces
