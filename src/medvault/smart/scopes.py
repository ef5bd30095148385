"""SMART v2 scopes: parsing, canonical text, and what a set of scopes permits.

Grammar (SMART App Launch 2.0, "Scopes for requesting FHIR resources"):
``<patient|user|system>/<ResourceType|*>.<c?r?u?d?s?>`` with the permission letters in that order
and none repeated. SMART v1 suffixes are accepted and mapped: ``.read`` = ``.rs``, ``.write`` =
``.cud``, ``.*`` = ``.cruds``. Scopes narrowed by a search query (``patient/Observation.rs?category=…``)
are refused rather than read as the unnarrowed scope: ignoring the query would grant more than asked.
Besides these: ``launch/patient``, ``openid``, ``fhirUser``, ``offline_access``; anything else is
an invalid scope (fail closed: an unknown word could be a permission we do not enforce).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal

from medvault.fhir.types import is_resource_type

Level = Literal["patient", "user", "system"]
LETTERS: Final = "cruds"
CONTEXT_SCOPES: Final[frozenset[str]] = frozenset({"launch/patient", "openid", "fhirUser", "offline_access"})
_V1 = {"read": "rs", "write": "cud", "*": "cruds"}
_RESOURCE = re.compile(r"^(patient|user|system)/([A-Za-z]{1,64}|\*)\.([a-z]{1,5}|read|write|\*)$")
MAX_SCOPES = 64
# Types a wildcard scope reads but never writes: a Consent decides who else may see the record,
# so an app the patient let "add and change your records" must not share the record (sensitive
# parts included, for longer than its own tokens live). Only a scope naming the type writes it.
NAMED_WRITES_ONLY: Final[frozenset[str]] = frozenset({"Consent"})


class InvalidScope(ValueError):
    """A scope string we do not grant (the OAuth2 `invalid_scope` error)."""


@dataclass(frozen=True, order=True)
class ResourceScope:
    level: Level
    rtype: str  # a resource type, or "*"
    perms: str  # a non-empty, ordered subset of "cruds"

    @property
    def text(self) -> str:
        return f"{self.level}/{self.rtype}.{self.perms}"

    def covers(self, rtype: str, letter: str) -> bool:
        if self.rtype == "*" and rtype in NAMED_WRITES_ONLY and letter in "cud":
            return False
        return self.rtype in ("*", rtype) and letter in self.perms


@dataclass(frozen=True)
class Scopes:
    resources: tuple[ResourceScope, ...] = ()
    context: frozenset[str] = frozenset()

    @property
    def launch_patient(self) -> bool:
        return "launch/patient" in self.context

    @property
    def openid(self) -> bool:
        return "openid" in self.context

    @property
    def fhir_user(self) -> bool:
        return "fhirUser" in self.context

    @property
    def offline(self) -> bool:
        return "offline_access" in self.context

    @property
    def levels(self) -> frozenset[str]:
        return frozenset(r.level for r in self.resources)

    @property
    def text(self) -> str:
        """Canonical v2 text: resource scopes first (sorted), then the context scopes (sorted)."""
        return " ".join([r.text for r in sorted(set(self.resources))] + sorted(self.context))


def _perms(raw: str) -> str:
    if raw in _V1:
        return _V1[raw]
    # v2: letters of "cruds", in that order, each at most once.
    positions = [LETTERS.find(c) for c in raw]
    if any(p < 0 for p in positions) or positions != sorted(set(positions)):
        raise InvalidScope("permissions must be letters of 'cruds', in that order")
    return raw


def parse_one(word: str) -> ResourceScope | str:
    """One scope word: a ResourceScope, or the name of a context scope."""
    if word in CONTEXT_SCOPES:
        return word
    match = _RESOURCE.match(word)
    if match is None:
        raise InvalidScope("unsupported scope")
    level, rtype, perms = match.groups()
    if rtype != "*" and not is_resource_type(rtype):
        raise InvalidScope("unknown resource type in scope")
    return ResourceScope(level, rtype, _perms(perms))  # type: ignore[arg-type]


def parse(text: str | None) -> Scopes:
    """A space-separated scope string (RFC 6749 3.3). Raises InvalidScope for any unknown word."""
    words = (text or "").split()
    if len(words) > MAX_SCOPES:
        raise InvalidScope("too many scopes")
    resources: list[ResourceScope] = []
    context: set[str] = set()
    for word in words:
        parsed = parse_one(word)
        if isinstance(parsed, ResourceScope):
            resources.append(parsed)
        else:
            context.add(parsed)
    return Scopes(tuple(sorted(set(resources))), frozenset(context))


def letter_for(action: str, interaction: str | None = None) -> str:
    """The permission letter an access needs: read r, search s, delete d; a write is c when it
    creates and u when it changes what is there."""
    if action == "read":
        return "r"
    if action == "search":
        return "s"
    if action == "delete":
        return "d"
    return "c" if interaction == "create" else "u"


Verdict = Literal["ok", "outside-scope", "outside-launch-patient"]


def permits(scopes: Scopes, *, rtype: str, letter: str, patient_id: str | None, launch_patient: str | None) -> Verdict:
    """May a token with `scopes` (launched for `launch_patient`) do `letter` on a `rtype` resource
    in `patient_id`'s compartment (None: no compartment)? Only narrows: the caller's own access
    rules still apply on top (a patient/ scope never widens what the account may do).

    A ``patient/`` scope reaches only the launch patient's compartment, and resources outside any
    compartment (directories such as Practitioner); ``user/`` and ``system/`` scopes reach whatever
    the account itself may reach."""
    only_patient = all(s.level == "patient" for s in scopes.resources)
    if only_patient and patient_id is not None and patient_id != launch_patient:
        # Judged before the type: a 403 for a type outside the scopes would tell the app that the
        # id exists in a compartment it was never given; there everything is missing.
        return "outside-launch-patient"
    matching = [s for s in scopes.resources if s.covers(rtype, letter)]
    if not matching:
        return "outside-scope"
    if any(s.level != "patient" for s in matching) or patient_id is None:
        return "ok"
    if launch_patient is not None and patient_id == launch_patient:
        return "ok"
    return "outside-launch-patient"


def type_permitted(scopes: Scopes, *, rtype: str, letter: str) -> bool:
    """Whether any scope covers this type and interaction at all (for a search: refuse it up front
    instead of answering an empty page that looks like 'no such records')."""
    return any(s.covers(rtype, letter) for s in scopes.resources)


# Plain words for the approval page: what a scope lets the app do, in the patient's terms.
_VERBS = {"c": "add", "r": "read", "u": "change", "d": "delete", "s": "search"}


def describe(scope: ResourceScope, *, own: bool) -> str:
    verbs = [_VERBS[c] for c in scope.perms]
    if "r" in scope.perms and "s" in scope.perms:
        verbs = [v for v in verbs if v != "search"]  # "read" says it: search finds what may be read
    what = "all records" if scope.rtype == "*" else f"{scope.rtype} records"
    whose = {"patient": "your" if own else "the chosen patient's", "user": "the", "system": "all"}[scope.level]
    if scope.level == "user":
        whose = "your" if own else "your patients'"
    verb_text = ", ".join(verbs[:-1]) + (" and " if len(verbs) > 1 else "") + verbs[-1]
    return f"{verb_text} {whose} {what}"


CONTEXT_WORDS: Final[dict[str, str]] = {
    "launch/patient": "know which patient's record it is working on",
    "openid": "know who you are (your sign-in identity)",
    "fhirUser": "know who you are (your sign-in identity)",
    "offline_access": "stay signed in (offline access) until you revoke it",
}
