"""Audit log errors. Messages name sizes, indexes and reasons, never entry content (which is PHI)."""

from __future__ import annotations

from medvault.errors import MedvaultError


class AuditError(MedvaultError):
    """Base class of audit log errors; also raised for requests no proof can answer."""

    code = "exception"


class ProofInvalid(AuditError):
    """An inclusion or consistency proof does not prove the statement it was checked against."""

    code = "security"


class CheckpointInvalid(AuditError):
    """A checkpoint is malformed, was modified, or is not signed by the expected key."""

    code = "security"
