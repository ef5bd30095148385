"""Keyed (HMAC-SHA256) values that let the database find rows without holding plaintext.

* pseudonym: links clinical rows of one patient without revealing who the patient is.
* search token: equality index on clinical fields, scoped to one patient so that the database shows
  no cross-patient frequencies (which code is the common one) — only repeats within one record.
* blind index: identity lookups, truncated to a few bits so every value is shared by several rows
  (an attacker who can compute candidate names still cannot confirm one row from the index alone).
"""

from __future__ import annotations

import hashlib
import hmac
import math
import unicodedata

from medvault.crypto.armor import safe_bytes

_LETTERS = bytes(ord("a") + b % 26 for b in range(256))
PSEUDONYM_BYTES = 16  # 96 bits (6 per stored byte, see crypto/armor.py)
TOKEN_BYTES = 12  # 72 bits


def normalise(text: str) -> str:
    """Case-, accent- and space-insensitive form used for exact lookups."""
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(stripped.casefold().split())


class Indexer:
    def __init__(
        self,
        *,
        pseudonym_key: bytes,
        handle_key: bytes,
        token_key: bytes,
        blind_key: bytes,
        blind_bits: int,
        content_key: bytes = b"",
    ) -> None:
        self._pseudonym_key = pseudonym_key
        self._handle_key = handle_key
        self._token_key = token_key
        self._blind_key = blind_key
        self.blind_bits = blind_bits
        self._content_key = content_key or self._mac(token_key, "content-id")

    @staticmethod
    def _mac(key: bytes, *parts: str | bytes) -> bytes:
        msg = bytearray()
        for part in parts:
            raw = part.encode() if isinstance(part, str) else part
            # Length-prefix every part so ("ab","c") and ("a","bc") never collide.
            msg += len(raw).to_bytes(4, "big")
            msg += raw
        return hmac.digest(key, bytes(msg), hashlib.sha256)  # one-shot OpenSSL HMAC-SHA256

    def pseudonym(self, patient_id: str) -> bytes:
        return safe_bytes(self._mac(self._pseudonym_key, "patient", patient_id)[:PSEUDONYM_BYTES])

    def identity_handle(self, patient_id: str) -> bytes:
        """Key of the identity vault row: unlinkable to the pseudonym without the index key."""
        return safe_bytes(self._mac(self._handle_key, "identity", patient_id)[:PSEUDONYM_BYTES])

    def search_token(self, scope: bytes, resource_type: str, param: str, value: str) -> bytes:
        return safe_bytes(self._mac(self._token_key, scope, resource_type, param, value)[:TOKEN_BYTES])

    def content_id(self, content: bytes) -> str:
        """A stable id for a source resource that has none (import is idempotent without it).
        Keyed: an unkeyed hash of content in a plaintext id column would let anyone confirm a guess."""
        # Letters only: ids are stored as text, and digit runs are what a stolen-copy scan looks for.
        return self._mac(self._content_key, "content", content)[:20].translate(_LETTERS).decode()

    def blind_bucket(self, param: str, value: str) -> int:
        digest = self._mac(self._blind_key, param, normalise(value))
        return int.from_bytes(digest[:4], "big") >> (32 - self.blind_bits)


def blind_bits_for(expected_entries: int, *, rows_per_value: int = 8) -> int:
    """Bits so that, at the planned size, each bucket holds about `rows_per_value` index entries.

    Fewer bits mean more false candidates to decrypt per lookup (cost) but more deniability per
    bucket (privacy); 8 rows per value keeps a lookup at a handful of AES-GCM opens.
    """
    bits = math.floor(math.log2(max(expected_entries, 2) / rows_per_value))
    return max(4, min(24, bits))
