"""SMART Health Link files: compact JWE with `alg: dir`, `enc: A256GCM`, optional `zip: DEF` (via joserfc).

Encryption always sets `cty` and lets joserfc draw a fresh random 96-bit IV (the spec: one key serves
every version of every file of a link, so an IV must never repeat). Decryption accepts a header without
`cty` (the spec's own 81 KB IPS vector has none, and carries an extra `kid`), allows no algorithm but
`dir`/`A256GCM`/`DEF`, and caps both the compact text and the inflated plaintext so a zip bomb or an
oversized file fails with `JweTooLarge` before it costs memory.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import zlib
from dataclasses import dataclass, field
from typing import Any

from joserfc import jwe
from joserfc.errors import ExceededSizeError, JoseError
from joserfc.jwa import JWEZipModel
from joserfc.jwe import JWERegistry
from joserfc.jwk import OctKey

from medvault.emergency.errors import JweError, JweTooLarge
from medvault.emergency.shl import KEY_BYTES

ALG = "dir"
ENC = "A256GCM"
ZIP = "DEF"
#: Content types the spec defines for SHL files.
CONTENT_TYPES = frozenset({"application/smart-health-card", "application/fhir+json", "application/smart-api-access"})
#: Default caps. The spec's IPS vector is 81 KB; a large Synthea patient's summary stays well under 1 MB.
MAX_JWE_CHARS = 8 * 1024 * 1024
MAX_PLAINTEXT_BYTES = 8 * 1024 * 1024
_MAX_HEADER_CHARS = 1024
_B64URL = re.compile(r"[A-Za-z0-9_-]*")


@dataclass(frozen=True)
class DecryptedFile:
    content_type: str | None  # the JWE `cty`, None when the sharer left it out
    plaintext: bytes = field(repr=False)  # PHI: kept out of reprs, logs and tracebacks
    compressed: bool = False

    def json(self) -> Any:
        try:
            return json.loads(self.plaintext)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            raise JweError("decrypted file is not JSON") from None


class _RawDeflate(JWEZipModel):
    """`zip: DEF` = raw DEFLATE (RFC 1951, no zlib header), with a hard cap on the inflated size.

    joserfc's own model guesses zlib-wrapped input from its first two bytes and caps at 250 KB; we want
    exactly the spec's raw format and our own limit.
    """

    name = ZIP
    description = "DEFLATE (raw, capped)"

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes

    def compress(self, s: bytes) -> bytes:
        c = zlib.compressobj(wbits=-zlib.MAX_WBITS)  # default level: summaries are built per request
        return c.compress(s) + c.flush()

    def decompress(self, s: bytes) -> bytes:
        d = zlib.decompressobj(wbits=-zlib.MAX_WBITS)
        try:
            out = d.decompress(s, self.max_bytes)
        except zlib.error:
            raise JweError("JWE plaintext is not raw DEFLATE data") from None
        # Output stopped at the cap with input or buffered output left: the stream inflates past it.
        if d.unconsumed_tail or (not d.eof and len(out) >= self.max_bytes):
            raise ExceededSizeError("inflated plaintext too large")
        if not d.eof or d.unused_data:
            raise JweError("JWE plaintext is not one complete raw DEFLATE stream")
        return out


class _ShlRegistry(JWERegistry):
    """A registry that knows only dir / A256GCM / DEF, with per-instance size limits."""

    def __init__(self, *, max_jwe_chars: int, max_plaintext_bytes: int) -> None:
        # strict_check_header off: tolerate extra non-critical headers (the spec vector's `kid`);
        # `crit` is still enforced by joserfc.
        super().__init__(algorithms=[ALG, ENC, ZIP], strict_check_header=False)
        self.max_ciphertext_length = max_jwe_chars
        base = JWERegistry.algorithms
        self.algorithms = {
            "alg": {ALG: base["alg"][ALG]},
            "enc": {ENC: base["enc"][ENC]},
            "zip": {ZIP: _RawDeflate(max_plaintext_bytes)},
        }


_ENCRYPT_REGISTRY = _ShlRegistry(max_jwe_chars=MAX_JWE_CHARS, max_plaintext_bytes=MAX_PLAINTEXT_BYTES)


def encrypt_file(*, plaintext: bytes, key: bytes, content_type: str, compress: bool = False) -> str:
    """Encrypt one SHL file. `content_type` becomes `cty`; `compress` adds `zip: DEF`."""
    if content_type not in CONTENT_TYPES:
        raise JweError(f"content type must be one of {sorted(CONTENT_TYPES)}")
    if len(plaintext) > MAX_PLAINTEXT_BYTES:
        raise JweTooLarge(f"file is larger than {MAX_PLAINTEXT_BYTES} bytes")
    header: dict[str, Any] = {"alg": ALG, "enc": ENC, "cty": content_type}
    if compress:
        header["zip"] = ZIP
    out = jwe.encrypt_compact(header, plaintext, _oct_key(key), registry=_ENCRYPT_REGISTRY)
    if len(out) > MAX_JWE_CHARS:
        raise JweTooLarge(f"encrypted file is longer than {MAX_JWE_CHARS} characters")
    return out


def decrypt_file(
    *,
    token: str | bytes,
    key: bytes,
    max_jwe_chars: int = MAX_JWE_CHARS,
    max_plaintext_bytes: int = MAX_PLAINTEXT_BYTES,
) -> DecryptedFile:
    """Decrypt one SHL file. Raises `JweTooLarge` over a cap, `JweError` for anything else wrong."""
    if len(token) > max_jwe_chars:
        raise JweTooLarge(f"JWE is longer than {max_jwe_chars} characters")
    if isinstance(token, bytes):
        try:
            token = token.decode("ascii")
        except UnicodeDecodeError:
            raise JweError("JWE is not ASCII text") from None
    token = token.strip()
    header = read_header(token)
    if header.get("alg") != ALG or header.get("enc") != ENC:
        raise JweError(f"JWE must use alg {ALG!r} and enc {ENC!r}")
    if "zip" in header and header["zip"] != ZIP:
        raise JweError(f"JWE zip must be {ZIP!r} when present")
    cty = header.get("cty")
    if cty is not None and not isinstance(cty, str):
        raise JweError("JWE cty must be a string")
    registry = _ShlRegistry(max_jwe_chars=max_jwe_chars, max_plaintext_bytes=max_plaintext_bytes)
    try:
        obj = jwe.decrypt_compact(token, _oct_key(key), registry=registry)
    except ExceededSizeError:
        raise JweTooLarge(f"JWE or its inflated plaintext exceeds the cap ({max_plaintext_bytes} bytes)") from None
    except (JoseError, ValueError, TypeError, binascii.Error):
        # Wrong key, tampered tag, bad base64 in a segment: joserfc's message may quote input, so
        # ours names only the class of failure.
        raise JweError("JWE failed to decrypt (wrong key, tampered or malformed)") from None
    plaintext = obj.plaintext
    if plaintext is None:
        raise JweError("JWE failed to decrypt (no plaintext)")
    if len(plaintext) > max_plaintext_bytes:
        raise JweTooLarge(f"JWE plaintext exceeds the cap ({max_plaintext_bytes} bytes)")
    return DecryptedFile(content_type=cty, plaintext=plaintext, compressed="zip" in header)


def read_header(token: str) -> dict[str, Any]:
    """The protected header of a compact JWE, checked for shape only (nothing is decrypted)."""
    parts = token.split(".")
    if len(parts) != 5:
        raise JweError("JWE must have 5 dot-separated parts (compact serialization)")
    for part in parts:
        if not _B64URL.fullmatch(part):
            raise JweError("JWE part is not base64url")
    if parts[1]:
        raise JweError("JWE with alg 'dir' must have an empty encrypted-key part")
    if len(parts[0]) > _MAX_HEADER_CHARS:
        raise JweTooLarge(f"JWE header is longer than {_MAX_HEADER_CHARS} characters")
    try:
        raw = base64.urlsafe_b64decode(parts[0] + "=" * (-len(parts[0]) % 4))
        header = json.loads(raw)
    except (binascii.Error, ValueError, RecursionError):
        raise JweError("JWE header is not base64url JSON") from None
    if not isinstance(header, dict):
        raise JweError("JWE header must be a JSON object")
    return header


def _oct_key(key: bytes) -> OctKey:
    if len(key) != KEY_BYTES:
        raise JweError(f"file key must be {KEY_BYTES} bytes")
    return OctKey.import_key(key)
