"""SMART Health Links errors.

Messages say what is wrong with the *shape* of the input (which field, which limit) and never echo
its content: a payload holds a decryption key, a file holds PHI.
"""

from __future__ import annotations

from medvault.errors import MedvaultError


class ShlError(MedvaultError):
    """Base class of every SMART Health Links error."""

    code = "invalid"


class ShlPayloadError(ShlError):
    """A `shlink:/` text or payload is malformed (prefix, base64url, JSON or a field)."""


class ShlTooLarge(ShlError):
    """An input is bigger than its cap (link text, manifest, JWE, decompressed plaintext)."""

    code = "too-costly"


class ShlVersionUnsupported(ShlError):
    """The payload's `v` is newer than this reader supports (the spec says: do not proceed)."""

    code = "not-supported"


class JweError(ShlError):
    """A compact JWE is malformed, uses another algorithm, or fails to decrypt (wrong key, tampered)."""

    code = "security"


class JweTooLarge(JweError, ShlTooLarge):
    """A JWE, or the plaintext it inflates to, is bigger than its cap (zip bombs end here)."""

    code = "too-costly"


class ShlUnavailable(ShlError):
    """The link is expired, paused, revoked or spent (HTTP 404), or its `exp` has passed."""

    code = "not-found"


class ShlPasscodeRequired(ShlError):
    """The link has the `P` flag and no passcode was given."""

    code = "login"


class ShlPasscodeError(ShlError):
    """The server refused the passcode (HTTP 401). `remaining_attempts` is the server's count, if sent."""

    code = "security"

    def __init__(self, message: str, *, remaining_attempts: int | None) -> None:
        super().__init__(message)
        self.remaining_attempts = remaining_attempts


class ShlProtocolError(ShlError):
    """The server answered outside the protocol: unexpected status, bad manifest, mismatched types."""

    code = "exception"


class CardError(ShlError):
    """The emergency card cannot be made from this input (empty label, too many alerts, bad link)."""
