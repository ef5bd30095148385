"""FHIR-level errors carrying OperationOutcome issues. Diagnostics never echo input values."""

from __future__ import annotations

from dataclasses import dataclass

from medvault.errors import MedvaultError


@dataclass(frozen=True)
class Issue:
    """One OperationOutcome.issue: `expression` is a FHIRPath-like location, never a value."""

    code: str
    diagnostics: str
    expression: str | None = None
    severity: str = "error"


class FhirError(MedvaultError):
    code = "invalid"


class InvalidResource(FhirError):
    """The input is not acceptable FHIR R4; `issues` says where."""

    def __init__(self, issues: list[Issue]) -> None:
        first = issues[0] if issues else Issue("invalid", "invalid resource")
        super().__init__(first.diagnostics, location=first.expression)
        self.issues = issues


class UnsupportedSearch(FhirError):
    """A search parameter, modifier or prefix this server does not implement."""

    code = "not-supported"
