"""Record service errors (mapped once to OperationOutcome / CLI lines by the faces)."""

from __future__ import annotations

from medvault.errors import MedvaultError


class RecordError(MedvaultError):
    code = "processing"


class NotFound(RecordError):
    code = "not-found"


class Gone(RecordError):
    code = "deleted"


class VersionConflict(RecordError):
    """If-Match named a version that is not the current one."""

    code = "conflict"


class PreconditionFailed(RecordError):
    """A conditional operation matched more than one resource."""

    code = "duplicate"


class BadRequest(RecordError):
    code = "invalid"
