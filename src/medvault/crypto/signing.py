"""The access log's Ed25519 signing key, kept in the key directory next to the KEKs.

`audit-signing.key` (0600) holds the raw 32-byte private key, base64; `audit-signing.pub` the public
key, which is not secret: an operator copies it next to exported checkpoints to verify them.
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from medvault.crypto.errors import KeyMismatch, KeyMissing
from medvault.crypto.keys import _write_secret

PRIVATE_FILE = "audit-signing.key"
PUBLIC_FILE = "audit-signing.pub"


def ensure_signing_key(key_dir: Path) -> bool:
    """Make the signing key pair if it is missing; True when it was created. Never overwrites."""
    if (key_dir / PRIVATE_FILE).exists():
        return False
    private = Ed25519PrivateKey.generate()
    raw = private.private_bytes_raw()
    _write_secret(key_dir / PRIVATE_FILE, base64.b64encode(raw) + b"\n")
    _write_secret(key_dir / PUBLIC_FILE, public_text(private.public_key()).encode())
    return True


def public_text(public: Ed25519PublicKey) -> str:
    return base64.b64encode(public.public_bytes(Encoding.Raw, PublicFormat.Raw)).decode() + "\n"


def _read(path: Path, what: str) -> bytes:
    try:
        raw = base64.b64decode(path.read_bytes().strip(), validate=True)
    except FileNotFoundError:
        raise KeyMissing(f"{what} not found at {path}: run `medvault init`") from None
    except (binascii.Error, ValueError):
        raise KeyMismatch(f"{what} at {path} is not a base64 Ed25519 key") from None
    if len(raw) != 32:
        raise KeyMismatch(f"{what} at {path} is not a 32-byte Ed25519 key")
    return raw


def load_private(key_dir: Path) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(_read(key_dir / PRIVATE_FILE, "the audit signing key"))


def load_public(path: Path) -> Ed25519PublicKey:
    """A public key file, or a key directory (its `audit-signing.pub`)."""
    file = path / PUBLIC_FILE if path.is_dir() else path
    return Ed25519PublicKey.from_public_bytes(_read(file, "the audit public key"))
