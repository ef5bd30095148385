"""Crypto errors. Messages name key ids and files, never data."""

from __future__ import annotations

from medvault.errors import MedvaultError


class CryptoError(MedvaultError):
    code = "security"


class KeyMissing(CryptoError):
    """A key file the data needs is not in the key directory."""


class KeyMismatch(CryptoError):
    """A key file is present but is not the key the data was sealed with."""


class DecryptionFailed(CryptoError):
    """A ciphertext failed authentication: tampered, truncated, moved or sealed under another key."""
