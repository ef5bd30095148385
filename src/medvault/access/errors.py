"""Access errors. Messages name the rule that was broken, never a patient, a record or a label value
seen in a record (they reach logs and OperationOutcomes)."""

from __future__ import annotations

from medvault.errors import MedvaultError


class AccessError(MedvaultError):
    """Base class of access errors. A *denied* access is not an error: `decide` returns a Decision."""

    code = "security"


class ConsentInvalid(AccessError):
    """A grant cannot be written as a Consent: an argument is outside what our Consent shape encodes."""

    code = "invalid"


class ClockInvalid(AccessError):
    """A time given to the access core is naive. Comparing naive and aware times would either raise
    deep inside a decision or, worse, silently compare wall clocks of different zones: refuse early."""

    code = "exception"
