"""Second factor: TOTP (RFC 6238) with single use of each code, and one-time recovery codes.

TOTP is SHA-1, 6 digits, 30-second steps: the one configuration every authenticator app supports
(several ignore the `algorithm` and `digits` URI parameters). A code is accepted for the current step
and `valid_window` steps either side (clock drift), and only for a step *greater* than the last step
accepted for the account. pyotp alone would accept the same code again for as long as it is in the
window; RFC 6238 section 5.2 requires refusing a second use. The caller stores the returned step in
the same transaction as the login, so two concurrent logins cannot both use one code.

Times are timezone-aware datetimes passed in by the caller (an injected clock): a naive datetime
would be read as local time and shift every step by the UTC offset.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import unicodedata
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import pyotp

from medvault.auth.errors import TotpRejected, TotpSecretInvalid

PERIOD_SECONDS = 30
_PERIOD = timedelta(seconds=PERIOD_SECONDS)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
DIGITS = 6
# RFC 4226 section 4 recommends a 160-bit shared secret (and requires at least 128).
_SECRET_BYTES = 20
# A window this wide already accepts codes from ±5 minutes; anything larger is a configuration error.
_MAX_WINDOW = 10

Algorithm = Literal["sha1", "sha256", "sha512"]
_DIGESTS: dict[Algorithm, Callable[..., Any]] = {
    "sha1": hashlib.sha1,
    "sha256": hashlib.sha256,
    "sha512": hashlib.sha512,
}


def new_secret() -> str:
    """A fresh 160-bit TOTP secret, base32 without padding (as authenticator apps expect)."""
    return base64.b32encode(secrets.token_bytes(_SECRET_BYTES)).decode("ascii").rstrip("=")


def provisioning_uri(*, secret: str, account_label: str, issuer: str) -> str:
    """The `otpauth://totp/...` URI shown as a QR code when the factor is enrolled.

    `account_label` ends up on the user's phone and in any backup of it: use the login name, never
    anything clinical.
    """
    _otp(secret)  # validates the secret, raising TotpSecretInvalid as verification would
    return pyotp.TOTP(secret, digits=DIGITS, interval=PERIOD_SECONDS).provisioning_uri(
        name=account_label, issuer_name=issuer
    )


def time_step(now: datetime) -> int:
    """The RFC 6238 time step `floor(unix_time / 30)` of an aware datetime."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("TOTP needs a timezone-aware time")
    # timedelta arithmetic is exact (no float rounding at step boundaries, even in year 2603).
    return (now - _EPOCH) // _PERIOD


def totp_code(*, secret: str, step: int, digits: int = DIGITS, algorithm: Algorithm = "sha1") -> str:
    """The code for one time step. Exposed for the RFC 6238 vectors and for enrolment checks."""
    return _otp(secret, digits=digits, algorithm=algorithm).at(step)


def verify_totp(
    *,
    secret: str,
    code: str,
    last_used_step: int | None,
    now: datetime,
    valid_window: int = 1,
) -> int:
    """Accept `code` and return its time step (store it as the new `last_used_step`), or raise.

    Raises `TotpRejected` with reason "malformed" (not 6 digits), "mismatch" (no step in the window
    has this code) or "replay" (it matches, but only a step at or before `last_used_step`: the same
    code again, or an older code of the window after a newer one was used).
    """
    if not 0 <= valid_window <= _MAX_WINDOW:
        raise ValueError(f"valid_window must be between 0 and {_MAX_WINDOW}")
    current = time_step(now)
    # Apps show "123 456"; users paste it with the space.
    candidate = "".join(code.split())
    if len(candidate) != DIGITS or not (candidate.isascii() and candidate.isdigit()):
        raise TotpRejected(reason="malformed")
    otp = _otp(secret)
    # Every step of the window is computed and compared in constant time, so the answer's timing does
    # not say which step (if any) matched.
    matching = [
        step
        for step in range(max(current - valid_window, 0), current + valid_window + 1)
        if hmac.compare_digest(otp.at(step), candidate)
    ]
    if not matching:
        raise TotpRejected(reason="mismatch")
    fresh = [step for step in matching if last_used_step is None or step > last_used_step]
    if not fresh:
        raise TotpRejected(reason="replay")
    return max(fresh)


def _otp(secret: str, *, digits: int = DIGITS, algorithm: Algorithm = "sha1") -> pyotp.HOTP:
    # HOTP keyed by the time step we compute ourselves: pyotp's TOTP helpers accept naive datetimes
    # (read as local time), and the step is what the caller has to store anyway.
    try:
        return pyotp.HOTP(secret, digits=digits, digest=_DIGESTS[algorithm])
    except ValueError as exc:  # binascii.Error is a ValueError; so is pyotp's "secret too short"
        raise TotpSecretInvalid("stored TOTP secret is not valid base32 or is too short") from exc


# --- recovery codes ---------------------------------------------------------------------------------

# 32 symbols without the easily confused 0/O and 1/I: 5 bits per character.
RECOVERY_ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"
_GROUPS = 4
_GROUP_LENGTH = 4  # 16 characters x 5 bits = 80 bits per code
_MIN_KEY_BYTES = 32


def new_recovery_codes(*, count: int = 10) -> list[str]:
    """`count` distinct single-use codes like `7KQ2-MZ9D-XH4P-3TWA` (80 random bits each).

    Show them once; store only `recovery_code_digest` of each.
    """
    if count < 1:
        raise ValueError("count must be positive")
    codes: list[str] = []
    while len(codes) < count:
        raw = "".join(secrets.choice(RECOVERY_ALPHABET) for _ in range(_GROUPS * _GROUP_LENGTH))
        code = "-".join(raw[i : i + _GROUP_LENGTH] for i in range(0, len(raw), _GROUP_LENGTH))
        if code not in codes:  # a repeat is a 2**-80 event; checking keeps "distinct" a guarantee
            codes.append(code)
    return codes


def normalise_recovery_code(code: str) -> str:
    """Upper case, separators (spaces, dashes) removed: how the user types it must not matter."""
    text = unicodedata.normalize("NFKC", code).upper()
    return "".join(ch for ch in text if not (ch.isspace() or unicodedata.category(ch) == "Pd"))


def recovery_code_digest(*, key: bytes, code: str) -> bytes:
    """HMAC-SHA256 of the normalised code under a server-side key: what the store keeps and looks up.

    A fast keyed hash is enough here, unlike for passwords: each code carries 80 random bits, so no
    dictionary or brute-force search is feasible even at GPU speed, and Argon2's slowness would buy
    nothing. Determinism lets the store find a code by equality on an indexed digest instead of
    running a slow verify against every code of the account. The key (kept with the other keys, not
    in the database) means a stolen database alone cannot even test guesses.
    """
    if len(key) < _MIN_KEY_BYTES:
        raise ValueError(f"recovery-code key must be at least {_MIN_KEY_BYTES} bytes")
    return hmac.new(key, normalise_recovery_code(code).encode("utf-8"), hashlib.sha256).digest()
