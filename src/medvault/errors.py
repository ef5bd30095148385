"""Base error shared by every domain.

Messages must never contain PHI: they end up in logs, OperationOutcomes and CLI output.
"""

from __future__ import annotations


class MedvaultError(Exception):
    """Base class for all domain errors. `code` maps to FHIR issue codes at the faces."""

    code: str = "exception"

    def __init__(self, message: str, *, location: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.location = location


class ConfigError(MedvaultError):
    """The configuration is unusable (unsafe or inconsistent settings)."""

    code = "invalid"
