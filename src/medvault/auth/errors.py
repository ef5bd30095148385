"""Auth errors. Messages name the rule that was broken, never the password, code or secret."""

from __future__ import annotations

from typing import Literal

from medvault.errors import MedvaultError

PasswordRule = Literal["not-text", "too-short", "too-long", "blocklisted", "context", "repetitive", "sequential"]
TotpReason = Literal["malformed", "mismatch", "replay"]


class AuthError(MedvaultError):
    """Base class of auth errors."""

    code = "security"


class PasswordRejected(AuthError):
    """A new password breaks a NIST SP 800-63B-4 rule; `rule` says which (for the UI and for tests)."""

    code = "invalid"

    def __init__(self, message: str, *, rule: PasswordRule) -> None:
        super().__init__(message, location="password")
        self.rule: PasswordRule = rule


class TotpRejected(AuthError):
    """A TOTP code was not accepted.

    `reason` is for logs and tests only: the faces must answer the same for every reason, so a
    guesser cannot tell a replayed valid code (a hint that it was right) from a wrong one.
    """

    code = "security"

    def __init__(self, *, reason: TotpReason) -> None:
        super().__init__("the one-time code was not accepted", location="code")
        self.reason: TotpReason = reason


class TotpSecretInvalid(AuthError):
    """A stored TOTP secret is not base32 or is shorter than 128 bits: stored data is damaged."""

    code = "exception"
