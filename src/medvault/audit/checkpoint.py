"""Signed checkpoints: `(origin, size, root, time)` in the C2SP tlog-checkpoint / signed-note format.

A checkpoint reads:

    <origin>
    <size, decimal>
    <base64 root>
    timestamp <YYYY-MM-DDTHH:MM:SS.ffffffZ>

    — <key name> <base64(key id || Ed25519 signature)>

The four body lines (each ending in a newline) are the signed message. The key id is the first
four bytes of `SHA-256(key name || "\\n" || 0x01 || public key)`, as in the C2SP signed-note spec
for Ed25519, so a renamed or substituted key shows up before any signature is checked.

Parsing is strict and canonical: exactly one text form per checkpoint, exactly one signature line
(witness cosignatures are not supported yet), and every failure is `CheckpointInvalid`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from medvault.audit.errors import CheckpointInvalid
from medvault.audit.merkle import HASH_SIZE

# C2SP signed-note: the signature line starts with an em dash and a space.
_SIGNATURE_MARK = "\u2014 "
# Signed-note algorithm byte for Ed25519, mixed into the key id.
_ED25519_ALGORITHM = b"\x01"
_KEY_ID_SIZE = 4
_SIGNATURE_SIZE = 64
_TIMESTAMP_PREFIX = "timestamp "
_TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
# A real checkpoint is a few hundred bytes; refusing big inputs bounds the work done on garbage.
_MAX_TEXT = 8192
# Sizes are stored as signed 64-bit integers in the database.
_MAX_SIZE = 2**63 - 1
_DECIMAL = re.compile(r"0|[1-9][0-9]*", re.ASCII)
_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}", re.ASCII)
_TIMESTAMP = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z", re.ASCII)


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A signed statement that the log `origin` had `size` entries with Merkle `root` at `timestamp`."""

    origin: str
    size: int
    root: bytes
    timestamp: datetime

    def __post_init__(self) -> None:
        # Validated at construction so that anything we can build we can also serialise and parse
        # back to an equal value.
        _check_line(self.origin, what="origin")
        if isinstance(self.size, bool) or not isinstance(self.size, int) or not 0 <= self.size <= _MAX_SIZE:
            raise CheckpointInvalid("checkpoint size must be an integer in 0..2^63-1")
        if not isinstance(self.root, bytes) or len(self.root) != HASH_SIZE:
            raise CheckpointInvalid(f"checkpoint root must be {HASH_SIZE} bytes")
        if not isinstance(self.timestamp, datetime) or self.timestamp.utcoffset() is None:
            raise CheckpointInvalid("checkpoint timestamp must be a timezone-aware datetime")
        try:
            utc = self.timestamp.astimezone(UTC)
        except (OverflowError, ValueError) as exc:
            raise CheckpointInvalid("checkpoint timestamp is out of range in UTC") from exc
        # Store UTC so equal instants compare and serialise identically.
        object.__setattr__(self, "timestamp", utc)

    def body(self) -> str:
        """The signed message: the four checkpoint lines, each ending in a newline."""
        root = base64.b64encode(self.root).decode("ascii")
        stamp = _format_timestamp(self.timestamp)
        return f"{self.origin}\n{self.size}\n{root}\n{_TIMESTAMP_PREFIX}{stamp}\n"


def _format_timestamp(value: datetime) -> str:
    # Not strftime: its %Y does not zero-pad years below 1000 on every platform.
    return (
        f"{value.year:04d}-{value.month:02d}-{value.day:02d}T"
        f"{value.hour:02d}:{value.minute:02d}:{value.second:02d}.{value.microsecond:06d}Z"
    )


def _check_line(value: object, *, what: str) -> None:
    # A newline or other control character would let one field spill into the next line.
    if not isinstance(value, str) or not value or not value.isprintable() or value != value.strip():
        raise CheckpointInvalid(f"checkpoint {what} must be a non-empty single line without surrounding spaces")


def _check_key_name(key_name: object) -> None:
    # C2SP signed-note: key names are non-empty and contain neither spaces nor "+".
    if (
        not isinstance(key_name, str)
        or not key_name
        or not key_name.isprintable()
        or any(c.isspace() or c == "+" for c in key_name)
    ):
        raise CheckpointInvalid("key name must be non-empty, printable, without spaces or '+'")


def key_id(*, key_name: str, public_key: Ed25519PublicKey) -> bytes:
    """Signed-note key id: first 4 bytes of SHA-256(name || 0x0A || 0x01 || raw public key)."""
    raw = public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    digest = hashlib.sha256(key_name.encode("utf-8") + b"\n" + _ED25519_ALGORITHM + raw).digest()
    return digest[:_KEY_ID_SIZE]


def sign_checkpoint(*, checkpoint: Checkpoint, private_key: Ed25519PrivateKey, key_name: str) -> str:
    """Serialise and sign `checkpoint`; the result is the text an operator stores off the server."""
    _check_key_name(key_name)
    body = checkpoint.body()
    signature = private_key.sign(body.encode("utf-8"))
    blob = key_id(key_name=key_name, public_key=private_key.public_key()) + signature
    return f"{body}\n{_SIGNATURE_MARK}{key_name} {base64.b64encode(blob).decode('ascii')}\n"


def _b64decode_canonical(text: str, *, what: str) -> bytes:
    # Only the canonical padded encoding is accepted, so that one value has one text form.
    if not _BASE64.fullmatch(text):
        raise CheckpointInvalid(f"checkpoint {what} is not base64")
    try:
        value = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise CheckpointInvalid(f"checkpoint {what} is not base64") from exc
    if base64.b64encode(value).decode("ascii") != text:
        raise CheckpointInvalid(f"checkpoint {what} is not canonical base64")
    return value


def _parse_body(body: str) -> Checkpoint:
    lines = body.split("\n")
    # `body` ends with a newline, so the split leaves one empty string after the last line.
    if len(lines) != 5 or lines[4] != "":
        raise CheckpointInvalid("checkpoint body must have exactly four lines: origin, size, root, timestamp")
    origin, size_text, root_text, stamp_line = lines[:4]
    if not _DECIMAL.fullmatch(size_text):
        raise CheckpointInvalid("checkpoint size is not a canonical decimal number")
    size = int(size_text)
    root = _b64decode_canonical(root_text, what="root")
    if not stamp_line.startswith(_TIMESTAMP_PREFIX):
        raise CheckpointInvalid("checkpoint timestamp line is missing")
    stamp = stamp_line[len(_TIMESTAMP_PREFIX) :]
    if not _TIMESTAMP.fullmatch(stamp):
        raise CheckpointInvalid("checkpoint timestamp is not YYYY-MM-DDTHH:MM:SS.ffffffZ")
    try:
        timestamp = datetime.strptime(stamp, _TIMESTAMP_FORMAT).replace(tzinfo=UTC)
    except ValueError as exc:
        raise CheckpointInvalid("checkpoint timestamp is not a valid date and time") from exc
    # The constructor rejects the rest (bad origin, size out of range, root length).
    checkpoint = Checkpoint(origin=origin, size=size, root=root, timestamp=timestamp)
    if checkpoint.body() != body:
        raise CheckpointInvalid("checkpoint text is not in canonical form")
    return checkpoint


def parse_and_verify(*, text: str, public_key: Ed25519PublicKey) -> Checkpoint:
    """Parse a signed checkpoint and check its signature against `public_key`.

    Every way the text can be wrong (truncated, edited, re-signed by another key, not a checkpoint
    at all) raises `CheckpointInvalid` and nothing else.
    """
    if not isinstance(text, str) or len(text) > _MAX_TEXT:
        raise CheckpointInvalid("checkpoint is not text of a plausible size")
    body, separator, signatures = text.partition("\n\n")
    if not separator:
        raise CheckpointInvalid("checkpoint has no signature block")
    body += "\n"
    try:
        message = body.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise CheckpointInvalid("checkpoint is not valid UTF-8 text") from exc
    if not signatures.endswith("\n") or signatures.count("\n") != 1:
        raise CheckpointInvalid("checkpoint must end with exactly one signature line")
    line = signatures[:-1]
    if not line.startswith(_SIGNATURE_MARK):
        raise CheckpointInvalid("checkpoint signature line must start with an em dash")
    parts = line[len(_SIGNATURE_MARK) :].split(" ")
    if len(parts) != 2:
        raise CheckpointInvalid("checkpoint signature line must be '— <key name> <signature>'")
    name, blob_text = parts
    _check_key_name(name)
    blob = _b64decode_canonical(blob_text, what="signature")
    if len(blob) != _KEY_ID_SIZE + _SIGNATURE_SIZE:
        raise CheckpointInvalid("checkpoint signature has the wrong length")
    # The key id binds the name to the key: a renamed line or another key fails here.
    if blob[:_KEY_ID_SIZE] != key_id(key_name=name, public_key=public_key):
        raise CheckpointInvalid("checkpoint is not signed by the expected key (key id mismatch)")
    # Authenticate before interpreting: the body is parsed only once the signature holds.
    try:
        public_key.verify(blob[_KEY_ID_SIZE:], message)
    except InvalidSignature as exc:
        raise CheckpointInvalid("checkpoint signature does not verify") from exc
    return _parse_body(body)
