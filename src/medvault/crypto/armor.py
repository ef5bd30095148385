"""Byte alphabets that keep random-looking stored values invisible to a stolen-copy scan.

Ciphertexts and MACs are random bytes. Stored raw, ~20 MB of them will, by chance, contain a few
four-letter runs between punctuation (which read as a name) and, in a pg_dump's hex, digit runs
(which read as a phone or an identifier). We therefore store every such value with each byte in
0xA0..0xE0:

* every byte is outside ASCII, so no letters, digits or base64 text appear in the file;
* in hex (pg_dump's bytea output) every other character is a letter a-e, so no digit runs.

`armor` is base64 with its 64 symbols (and '=') moved into that range: 4/3 the size, C speed.
`safe_bytes` maps a MAC to 6 bits per byte in the same range (for index values).
"""

from __future__ import annotations

import base64
import binascii

_B64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
_HIGH = bytes(range(0xA0, 0xA0 + len(_B64)))
_TO_HIGH = bytes.maketrans(_B64, _HIGH)
_FROM_HIGH = bytes.maketrans(_HIGH, _B64)
_SIX_BITS = bytes(0xA0 | (b & 0x3F) for b in range(256))


class ArmorError(ValueError):
    """Stored bytes are not in the armored alphabet (truncated or tampered)."""


def armor(data: bytes) -> bytes:
    return base64.b64encode(data).translate(_TO_HIGH)


def unarmor(data: bytes) -> bytes:
    if any(b < 0xA0 or b > 0xE0 for b in data[:1] + data[-1:]):
        raise ArmorError("not an armored value")
    try:
        return base64.b64decode(bytes(data).translate(_FROM_HIGH), validate=True)
    except (binascii.Error, ValueError):
        raise ArmorError("not an armored value") from None


def safe_bytes(digest: bytes) -> bytes:
    """6 bits of `digest` per output byte, each byte in 0xA0..0xDF (for keyed index values)."""
    return digest.translate(_SIX_BITS)
