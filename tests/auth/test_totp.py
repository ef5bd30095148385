"""TOTP (RFC 6238 Appendix B vectors, single use of each code) and recovery codes."""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import re
from datetime import UTC, datetime, timedelta, timezone
from urllib.parse import parse_qs, urlparse

import pyotp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medvault.auth.errors import AuthError, TotpRejected, TotpSecretInvalid
from medvault.auth.totp import (
    RECOVERY_ALPHABET,
    Algorithm,
    new_recovery_codes,
    new_secret,
    normalise_recovery_code,
    provisioning_uri,
    recovery_code_digest,
    time_step,
    totp_code,
    verify_totp,
)

# --- RFC 6238 Appendix B ---------------------------------------------------------------------------

SEEDS: dict[Algorithm, bytes] = {
    "sha1": b"12345678901234567890",
    "sha256": b"12345678901234567890123456789012",
    "sha512": b"1234567890123456789012345678901234567890123456789012345678901234",
}
SECRETS = {name: base64.b32encode(seed).decode("ascii") for name, seed in SEEDS.items()}
# (T in Unix seconds, 8-digit TOTP for SHA1, SHA256, SHA512), as printed in RFC 6238 Appendix B.
RFC6238_VECTORS = [
    (59, "94287082", "46119246", "90693936"),
    (1111111109, "07081804", "68084774", "25091201"),
    (1111111111, "14050471", "67062674", "99943326"),
    (1234567890, "89005924", "91819424", "93441116"),
    (2000000000, "69279037", "90698825", "38618901"),
    (20000000000, "65353130", "77737706", "47863826"),
]
SECRET = SECRETS["sha1"]
NOW = datetime(2025, 3, 14, 15, 9, 26, tzinfo=UTC)


def at(unix: int) -> datetime:
    return datetime.fromtimestamp(unix, UTC)


@pytest.mark.parametrize(("unix", "sha1", "sha256", "sha512"), RFC6238_VECTORS)
def test_rfc6238_vectors(unix: int, sha1: str, sha256: str, sha512: str) -> None:
    step = time_step(at(unix))
    assert step == unix // 30
    expectations: tuple[tuple[Algorithm, str], ...] = (("sha1", sha1), ("sha256", sha256), ("sha512", sha512))
    for algorithm, expected in expectations:
        assert totp_code(secret=SECRETS[algorithm], step=step, digits=8, algorithm=algorithm) == expected


@pytest.mark.parametrize(("unix", "sha1", "sha256", "sha512"), RFC6238_VECTORS)
def test_rfc6238_vectors_through_verify(unix: int, sha1: str, sha256: str, sha512: str) -> None:
    del sha256, sha512
    # Dynamic truncation is `mod 10**digits`, so the 6-digit code is the 8-digit one's last six.
    assert verify_totp(secret=SECRET, code=sha1[-6:], last_used_step=None, now=at(unix)) == unix // 30


def test_time_step_is_exact_at_boundaries_and_needs_an_aware_time() -> None:
    assert time_step(at(29)) == 0
    assert time_step(at(30)) == 1
    assert time_step(datetime(1970, 1, 1, 0, 0, 29, 999999, tzinfo=UTC)) == 0
    # The same instant in another zone is the same step.
    assert time_step(NOW.astimezone(timezone(timedelta(hours=-5)))) == time_step(NOW)
    with pytest.raises(ValueError, match="aware"):
        time_step(datetime(2025, 1, 1))
    with pytest.raises(ValueError, match="aware"):
        verify_totp(secret=SECRET, code="000000", last_used_step=None, now=datetime(2025, 1, 1))


# --- single use ------------------------------------------------------------------------------------


def code_at(step: int) -> str:
    return totp_code(secret=SECRET, step=step)


def rejection(*, code: str, last_used_step: int | None, now: datetime = NOW, valid_window: int = 1) -> str:
    with pytest.raises(TotpRejected) as caught:
        verify_totp(secret=SECRET, code=code, last_used_step=last_used_step, now=now, valid_window=valid_window)
    if code:
        assert code not in str(caught.value)
    return caught.value.reason


def test_a_replayed_code_is_refused() -> None:
    step = time_step(NOW)
    used = verify_totp(secret=SECRET, code=code_at(step), last_used_step=None, now=NOW)
    assert used == step
    assert rejection(code=code_at(step), last_used_step=used) == "replay"
    # Still refused 20 seconds later while the code is in the window.
    assert rejection(code=code_at(step), last_used_step=used, now=NOW + timedelta(seconds=20)) == "replay"


def test_an_older_code_of_the_window_is_refused_after_a_newer_one() -> None:
    step = time_step(NOW)
    used = verify_totp(secret=SECRET, code=code_at(step + 1), last_used_step=None, now=NOW)
    assert used == step + 1  # a phone clock slightly ahead
    assert rejection(code=code_at(step), last_used_step=used) == "replay"
    assert rejection(code=code_at(step - 1), last_used_step=used) == "replay"
    # The next step's code is fresh again.
    later = NOW + timedelta(seconds=30)
    assert verify_totp(secret=SECRET, code=code_at(step + 2), last_used_step=used, now=later) == step + 2


def test_pyotp_alone_would_accept_the_replay() -> None:
    # Why the last step is stored: pyotp's own check says yes to the same code twice.
    totp = pyotp.TOTP(SECRET)
    code = totp.at(NOW)
    assert totp.verify(code, for_time=NOW)
    assert totp.verify(code, for_time=NOW)


def test_window_and_mismatch() -> None:
    step = time_step(NOW)
    assert verify_totp(secret=SECRET, code=code_at(step - 1), last_used_step=None, now=NOW) == step - 1
    assert rejection(code=code_at(step - 2), last_used_step=None) == "mismatch"
    assert verify_totp(secret=SECRET, code=code_at(step - 2), last_used_step=None, now=NOW, valid_window=2) == step - 2
    assert rejection(code=code_at(step + 1), last_used_step=None, valid_window=0) == "mismatch"
    wrong = f"{(int(code_at(step)) + 1) % 1_000_000:06d}"
    assert rejection(code=wrong, last_used_step=None, valid_window=0) == "mismatch"
    for window in (-1, 11):
        with pytest.raises(ValueError, match="valid_window"):
            verify_totp(secret=SECRET, code=code_at(step), last_used_step=None, now=NOW, valid_window=window)


def test_spaces_are_ignored_and_anything_but_six_ascii_digits_is_malformed() -> None:
    step = time_step(NOW)
    code = code_at(step)
    assert verify_totp(secret=SECRET, code=f" {code[:3]} {code[3:]} ", last_used_step=None, now=NOW) == step
    fullwidth = "".join(chr(ord(ch) - ord("0") + 0xFF10) for ch in code)
    for bad in ("", "12345", "1234567", "12345a", fullwidth, code + "0"):
        assert rejection(code=bad, last_used_step=None) == "malformed"


def test_rejections_are_auth_errors_without_the_reason_in_the_message() -> None:
    with pytest.raises(TotpRejected) as caught:
        verify_totp(secret=SECRET, code="000000", last_used_step=None, now=at(59))
    assert isinstance(caught.value, AuthError)
    assert caught.value.message == "the one-time code was not accepted"


@given(step=st.integers(min_value=1, max_value=2**32), back=st.integers(min_value=0, max_value=3))
@settings(max_examples=100, deadline=None)
def test_no_step_at_or_before_the_last_used_one_is_ever_accepted(step: int, back: int) -> None:
    now = at(step * 30 + 7)
    last_used = step + 1 - back  # the window is step-1..step+1; last_used runs from step+1 down to step-2
    for candidate in (step - 1, step, step + 1):
        code = code_at(candidate)
        if candidate <= last_used:
            assert rejection(code=code, last_used_step=last_used, now=now) == "replay"
        else:
            assert verify_totp(secret=SECRET, code=code, last_used_step=last_used, now=now) == candidate


def test_secrets_and_provisioning_uri() -> None:
    secret = new_secret()
    assert re.fullmatch(r"[A-Z2-7]{32}", secret)
    assert len(base64.b32decode(secret)) == 20  # 160 bits, RFC 4226's recommendation
    assert new_secret() != secret
    uri = provisioning_uri(secret=secret, account_label="jane", issuer="MedVault")
    parsed = urlparse(uri)
    assert (parsed.scheme, parsed.netloc) == ("otpauth", "totp")
    query = parse_qs(parsed.query)
    assert query["secret"] == [secret]
    assert query["issuer"] == ["MedVault"]
    assert "jane" in parsed.path
    assert pyotp.parse_uri(uri).secret == secret


@pytest.mark.parametrize("secret", ["not base32!", "MFRGGZDF"])  # bad alphabet; 40 bits
def test_a_damaged_secret_is_reported(secret: str) -> None:
    with pytest.raises(TotpSecretInvalid):
        verify_totp(secret=secret, code="123456", last_used_step=None, now=NOW)


# --- recovery codes --------------------------------------------------------------------------------

KEY = hashlib.sha256(b"medvault test recovery key").digest()


def test_recovery_codes_are_distinct_unambiguous_and_high_entropy() -> None:
    codes = new_recovery_codes()
    assert len(codes) == 10
    assert len(set(codes)) == 10
    assert set(RECOVERY_ALPHABET).isdisjoint("01OI")
    assert len(set(RECOVERY_ALPHABET)) == 32
    group = f"[{RECOVERY_ALPHABET}]{{4}}"
    for code in codes:
        assert re.fullmatch(f"{group}-{group}-{group}-{group}", code)
    assert 16 * math.log2(len(RECOVERY_ALPHABET)) >= 60
    assert len(new_recovery_codes(count=3)) == 3
    with pytest.raises(ValueError, match="positive"):
        new_recovery_codes(count=0)


def test_recovery_code_digest_ignores_case_and_separators() -> None:
    code = new_recovery_codes(count=1)[0]
    digest = recovery_code_digest(key=KEY, code=code)
    assert len(digest) == 32
    assert normalise_recovery_code(f" {code.lower()} ") == code.replace("-", "")
    for typed in (code.lower(), code.replace("-", " "), code.replace("-", ""), code.replace("-", "\u2013")):
        assert recovery_code_digest(key=KEY, code=typed) == digest
    expected = hmac.new(KEY, code.replace("-", "").encode(), hashlib.sha256).digest()
    assert digest == expected


def test_recovery_code_digest_depends_on_code_and_key() -> None:
    first, second = new_recovery_codes(count=2)
    assert recovery_code_digest(key=KEY, code=first) != recovery_code_digest(key=KEY, code=second)
    other_key = hashlib.sha256(b"another key").digest()
    assert recovery_code_digest(key=KEY, code=first) != recovery_code_digest(key=other_key, code=first)
    with pytest.raises(ValueError, match="32 bytes"):
        recovery_code_digest(key=b"short", code=first)
