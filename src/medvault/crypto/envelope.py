"""AES-256-GCM sealing of records, with compression and associated data.

Blob format: 1 byte format tag, then for tag 0x01 a 12-byte random nonce and the AES-GCM output of
the zlib-compressed plaintext; stored armored (crypto/armor.py) so no random run reads as text.
The associated data names what the blob is (type, id, version), so a blob copied into another row
fails authentication instead of showing another patient's data.
Compressing before encrypting is safe here: nothing attacker-chosen shares a blob with a secret
under an observable length (no CRIME-style oracle at rest).
"""

from __future__ import annotations

import secrets
import zlib

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from medvault.crypto.armor import ArmorError, armor, unarmor
from medvault.crypto.errors import DecryptionFailed

SEALED = 0x01
PLAIN_BENCH_ONLY = 0x00
NONCE_BYTES = 12
_MIN_LEN = 1 + NONCE_BYTES + 16
# zlib.compress allocates ~256 KiB of deflate state per call (32 KiB window, memLevel 8); glibc
# serves that with mmap/munmap and fresh zeroed pages, which cost more than compressing a small
# record (~50-100 us for a 1 KiB AuditEvent on the reference VM). A plaintext that fits in a 4 KiB
# window compresses the same with ~20 KiB of state. The output is a standard zlib stream either
# way (its header names the window), so `open` and every stored blob are unaffected.
_SMALL = 1 << 12
_SMALL_WBITS = 12
_SMALL_MEMLEVEL = 4


def new_data_key() -> bytes:
    return AESGCM.generate_key(256)


class Sealer:
    """Seals and opens blobs. `enabled=False` exists only for benchmarks (Settings refuses it elsewhere)."""

    def __init__(self, *, enabled: bool = True, level: int = 1) -> None:
        self.enabled = enabled
        self.level = level

    def seal(self, key: AESGCM, plaintext: bytes, aad: bytes) -> bytes:
        if len(plaintext) <= _SMALL:
            deflate = zlib.compressobj(self.level, zlib.DEFLATED, _SMALL_WBITS, _SMALL_MEMLEVEL)
            packed = deflate.compress(plaintext) + deflate.flush()
        else:
            packed = zlib.compress(plaintext, self.level)
        if not self.enabled:
            return armor(bytes([PLAIN_BENCH_ONLY]) + packed)
        nonce = secrets.token_bytes(NONCE_BYTES)
        return armor(bytes([SEALED]) + nonce + key.encrypt(nonce, packed, aad))

    def open(self, key: AESGCM, stored: bytes, aad: bytes) -> bytes:
        try:
            blob = unarmor(stored)
        except ArmorError:
            raise DecryptionFailed("ciphertext is truncated or of an unknown format") from None
        if not blob:
            raise DecryptionFailed("empty ciphertext")
        if blob[0] == PLAIN_BENCH_ONLY:
            if self.enabled:
                raise DecryptionFailed("unencrypted blob refused: this store requires encryption")
            return zlib.decompress(blob[1:])
        if blob[0] != SEALED or len(blob) < _MIN_LEN:
            raise DecryptionFailed("ciphertext is truncated or of an unknown format")
        try:
            packed = key.decrypt(blob[1 : 1 + NONCE_BYTES], blob[1 + NONCE_BYTES :], aad)
        except InvalidTag:
            raise DecryptionFailed(
                "ciphertext failed authentication (tampered, truncated, moved to another row, or wrong key)"
            ) from None
        return zlib.decompress(packed)
