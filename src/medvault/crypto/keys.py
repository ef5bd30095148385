"""Key-encryption keys (KEKs) and the index root key, kept in files outside the database.

Layout of the key directory (mode 0700, files 0600):

    kek-<purpose>-<stamp>-<rand>.key   32 random bytes, base64; one file per KEK ever made
    active-<purpose>                   the id of the KEK that wraps new data keys
    index.key                          root for HMAC keys (pseudonyms, blind and search indexes)
    retired/                           KEKs replaced by `medvault keys rotate`

Purposes are "clinical" and "identity": identity data keys are wrapped by a different KEK, so the
clinical KEK alone never opens a name or an address.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
import threading
from pathlib import Path
from typing import Literal

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from medvault.crypto.armor import ArmorError, armor, unarmor
from medvault.crypto.errors import CryptoError, KeyMismatch, KeyMissing

Purpose = Literal["clinical", "identity"]
PURPOSES: tuple[Purpose, ...] = ("clinical", "identity")
KEY_BYTES = 32
NONCE_BYTES = 12


def _write_secret(path: Path, data: bytes) -> None:
    """Create a file readable by the owner only, atomically (no window with wider permissions)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class KeyRing:
    """Reads KEKs lazily from the key directory and wraps/unwraps data keys with them."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._keks: dict[str, AESGCM] = {}
        self._active: dict[str, tuple[float, str]] = {}
        self._lock = threading.Lock()
        self._index_root: bytes | None = None

    # -- creation -------------------------------------------------------------------------
    @classmethod
    def create(cls, path: Path) -> KeyRing:
        """Make a fresh key directory; refuses to overwrite existing keys."""
        path.mkdir(parents=True, exist_ok=True)
        os.chmod(path, 0o700)
        if (path / "index.key").exists():
            raise CryptoError(f"key directory {path} already holds keys; refusing to overwrite them")
        ring = cls(path)
        for purpose in PURPOSES:
            kid = ring._new_kek(purpose)
            _write_secret(path / f"active-{purpose}", kid.encode())
        _write_secret(path / "index.key", base64.b64encode(secrets.token_bytes(KEY_BYTES)))
        return ring

    def exists(self) -> bool:
        return (self.path / "index.key").exists()

    def _new_kek(self, purpose: Purpose) -> str:
        # Letters only (no timestamp digits): key ids are stored in the database, and long digit
        # runs there are what a stolen-copy scan looks for (phone numbers, identifiers).
        suffix = "".join(secrets.choice("bcdfghjkmnpqrstvwxz") for _ in range(12))
        kid = f"{purpose[:3]}-{suffix}"
        _write_secret(self.path / f"kek-{kid}.key", base64.b64encode(AESGCM.generate_key(256)))
        return kid

    # -- loading --------------------------------------------------------------------------
    def _read_key_file(self, file: Path, what: str) -> bytes:
        try:
            raw = file.read_bytes()
        except FileNotFoundError:
            raise KeyMissing(f"{what} not found: {file.name} is missing from the key directory {self.path}") from None
        try:
            key = base64.b64decode(raw.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise KeyMismatch(f"{what} in {file.name} is not a valid key file") from None
        if len(key) != KEY_BYTES:
            raise KeyMismatch(f"{what} in {file.name} has the wrong length")
        return key

    def _kek(self, kid: str) -> AESGCM:
        with self._lock:
            cipher = self._keks.get(kid)
        if cipher is None:
            if "/" in kid or kid.startswith("."):
                raise KeyMismatch("malformed key id")
            file = self.path / f"kek-{kid}.key"
            cipher = AESGCM(self._read_key_file(file, f"key-encryption key {kid}"))
            with self._lock:
                self._keks[kid] = cipher
        return cipher

    def active_kid(self, purpose: Purpose) -> str:
        """The KEK id new data keys are wrapped with; re-read when rotation changes it."""
        file = self.path / f"active-{purpose}"
        try:
            mtime = file.stat().st_mtime
        except FileNotFoundError:
            raise KeyMissing(
                f"no active {purpose} key: {file.name} is missing from the key directory {self.path}"
            ) from None
        cached = self._active.get(purpose)
        if cached and cached[0] == mtime:
            return cached[1]
        kid = file.read_text().strip()
        self._active[purpose] = (mtime, kid)
        return kid

    def index_key(self, label: str) -> bytes:
        """An HMAC key for one purpose, derived from the index root (HKDF-SHA256)."""
        if self._index_root is None:
            self._index_root = self._read_key_file(self.path / "index.key", "index key")
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"medvault/" + label.encode()).derive(
            self._index_root
        )

    # -- wrapping -------------------------------------------------------------------------
    @staticmethod
    def _aad(purpose: str, owner: bytes, kid: str) -> bytes:
        return b"medvault:data-key:v1|" + purpose.encode() + b"|" + owner.hex().encode() + b"|" + kid.encode()

    def wrap(self, *, purpose: Purpose, owner: bytes, data_key: bytes, kid: str | None = None) -> tuple[str, bytes]:
        """Wrap a data key under the active (or given) KEK; returns (kek id, nonce+ciphertext)."""
        kid = kid or self.active_kid(purpose)
        nonce = secrets.token_bytes(NONCE_BYTES)
        return kid, armor(nonce + self._kek(kid).encrypt(nonce, data_key, self._aad(purpose, owner, kid)))

    def unwrap(self, *, purpose: Purpose, owner: bytes, kid: str, wrapped: bytes) -> bytes:
        try:
            raw = unarmor(wrapped)
            return self._kek(kid).decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], self._aad(purpose, owner, kid))
        except (InvalidTag, ArmorError):
            raise KeyMismatch(
                f"key-encryption key {kid} does not open its data keys: wrong key file or tampered key table"
            ) from None

    # -- rotation -------------------------------------------------------------------------
    def begin_rotation(self, purpose: Purpose) -> tuple[str, str]:
        """Make a new KEK and make it active. Returns (old kid, new kid). Idempotent across crashes:
        the caller re-wraps every data key whose kid differs from the active one."""
        old = self.active_kid(purpose)
        new = self._new_kek(purpose)
        _write_secret(self.path / f"active-{purpose}", new.encode())
        self._active.pop(purpose, None)
        return old, new

    def retire(self, kid: str) -> Path:
        """Move a KEK that no data key uses any more out of the live key directory."""
        retired = self.path / "retired"
        retired.mkdir(exist_ok=True, mode=0o700)
        src = self.path / f"kek-{kid}.key"
        dst = retired / src.name
        os.replace(src, dst)
        _fsync_dir(self.path)
        with self._lock:
            self._keks.pop(kid, None)
        return dst

    def kek_ids(self) -> list[str]:
        return sorted(p.name[4:-4] for p in self.path.glob("kek-*.key"))
