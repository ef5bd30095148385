"""AES-GCM sealing: round trip, tamper and key errors fail loudly."""

from __future__ import annotations

import os
import zlib

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given
from hypothesis import strategies as st

from medvault.crypto.armor import armor
from medvault.crypto.envelope import SEALED, Sealer, new_data_key
from medvault.crypto.errors import DecryptionFailed

AAD = b"medvault:resource:v1|Observation|o1|1"


def test_round_trip_and_fresh_nonce() -> None:
    key = AESGCM(new_data_key())
    sealer = Sealer()
    a = sealer.seal(key, b'{"x":1}', AAD)
    b = sealer.seal(key, b'{"x":1}', AAD)
    assert a != b  # fresh nonce every time: equal records do not give equal ciphertexts
    assert sealer.open(key, a, AAD) == b'{"x":1}'


@given(st.binary(max_size=4096))
def test_round_trip_any_bytes(data: bytes) -> None:
    key = AESGCM(new_data_key())
    sealer = Sealer()
    assert sealer.open(key, sealer.seal(key, data, AAD), AAD) == data


@pytest.mark.parametrize("size", [0, 1, 4095, 4096, 4097, 200_000])
def test_round_trip_on_both_sides_of_the_small_record_compressor(size: int) -> None:
    # Small plaintexts use a small deflate state, large ones zlib's default: both must round trip
    # and still compress (JSON repeats itself).
    data = (b'{"resourceType":"Observation","status":"final"}' * (size // 47 + 1))[:size]
    key = AESGCM(new_data_key())
    sealer = Sealer()
    stored = sealer.seal(key, data, AAD)
    assert sealer.open(key, stored, AAD) == data
    if size >= 4095:
        assert len(stored) < size / 4


def test_blobs_sealed_with_the_default_compressor_still_open() -> None:
    """Blobs written before the small-record compressor (zlib.compress, 32 KiB window) open unchanged."""
    key = AESGCM(new_data_key())
    data = b'{"resourceType":"AuditEvent","action":"R"}' * 20
    nonce = os.urandom(12)
    old = armor(bytes([SEALED]) + nonce + key.encrypt(nonce, zlib.compress(data, 1), AAD))
    assert Sealer().open(key, old, AAD) == data


def test_wrong_aad_fails() -> None:
    key = AESGCM(new_data_key())
    blob = Sealer().seal(key, b"secret", AAD)
    with pytest.raises(DecryptionFailed):
        Sealer().open(key, blob, b"medvault:resource:v1|Observation|o2|1")


def test_wrong_key_fails() -> None:
    blob = Sealer().seal(AESGCM(new_data_key()), b"secret", AAD)
    with pytest.raises(DecryptionFailed):
        Sealer().open(AESGCM(new_data_key()), blob, AAD)


@pytest.mark.parametrize("cut", [0, 1, 5, 13, 28, 29, -1])
def test_truncated_fails(cut: int) -> None:
    key = AESGCM(new_data_key())
    blob = Sealer().seal(key, b"some clinical text " * 4, AAD)
    with pytest.raises(DecryptionFailed):
        Sealer().open(key, blob[:cut], AAD)


def test_flipped_bit_fails() -> None:
    key = AESGCM(new_data_key())
    blob = bytearray(Sealer().seal(key, b"secret", AAD))
    blob[20] ^= 0x01  # still in the armored alphabet: decodes, then fails authentication
    with pytest.raises(DecryptionFailed):
        Sealer().open(key, bytes(blob), AAD)


def test_plaintext_blob_refused_when_encryption_on() -> None:
    key = AESGCM(new_data_key())
    plain = Sealer(enabled=False).seal(key, b"secret", AAD)
    assert Sealer(enabled=False).open(key, plain, AAD) == b"secret"
    with pytest.raises(DecryptionFailed, match="unencrypted"):
        Sealer().open(key, plain, AAD)


def test_messages_carry_no_data() -> None:
    key = AESGCM(new_data_key())
    secret = os.urandom(8).hex()
    blob = Sealer().seal(key, secret.encode(), AAD)
    with pytest.raises(DecryptionFailed) as info:
        Sealer().open(AESGCM(new_data_key()), blob, AAD)
    assert secret not in str(info.value)


def test_stored_form_has_no_ascii() -> None:
    """Armored: no byte a scanner could read as a letter, digit or base64 text (crypto/armor.py)."""
    key = AESGCM(new_data_key())
    for _ in range(200):
        blob = Sealer().seal(key, os.urandom(300), AAD)
        assert all(0xA0 <= b <= 0xE0 for b in blob)
        assert all(c in "abcde" for c in blob.hex()[::2])  # pg_dump's hex: letter every other character
