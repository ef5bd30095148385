"""Access: the one decision point for clinical data, consent grants and sensitivity labels.

Pure core (no database, no I/O): `labels` says which sensitive categories a resource belongs to,
`consent` turns grants into FHIR Consents and back, `policy.decide` answers every access question.
The records services load the grants and the resource, ask `decide`, and audit the answer.
"""

from __future__ import annotations

from medvault.access.consent import Grant, consent_resource, grant_from_consent, revoked
from medvault.access.errors import AccessError, ClockInvalid, ConsentInvalid
from medvault.access.labels import SENSITIVE_TAGS, SensitiveTag, sensitive_labels
from medvault.access.policy import PATIENT_AUTHORED_TYPES, Action, Decision, decide

__all__ = [
    "PATIENT_AUTHORED_TYPES",
    "SENSITIVE_TAGS",
    "AccessError",
    "Action",
    "ClockInvalid",
    "ConsentInvalid",
    "Decision",
    "Grant",
    "SensitiveTag",
    "consent_resource",
    "decide",
    "grant_from_consent",
    "revoked",
    "sensitive_labels",
]
