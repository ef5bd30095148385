"""SMART Health Link payloads (HL7 SMART Health Cards and Links v1.0.0): build and parse `shlink:/`.

A link is `shlink:/` + base64url (no padding) of the minified payload JSON, optionally prefixed by a
viewer URL ending in `#` (the fragment never reaches the viewer's server). Pure functions: no I/O.

Parsing is strict about what the spec defines (types, key length, flag order, sizes) and ignores what
the spec tells receivers to ignore (unknown properties, unknown flag letters). Error messages name the
field and the rule, never the value: a payload carries a decryption key.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import SplitResult, urlsplit

from medvault.emergency.errors import ShlPayloadError, ShlTooLarge

SHLINK_PREFIX = "shlink:/"
#: Largest link text we parse (viewer prefix included). A QR code holds at most 2,953 bytes in byte
#: mode, and a conforming payload (url ≤ 128, key 43, label ≤ 80) encodes to about 500 characters.
MAX_LINK_CHARS = 4096
#: Spec: the manifest URL "SHALL NOT exceed 128 characters".
MAX_URL_CHARS = 128
#: Spec: label is a "string no longer than 80 characters".
MAX_LABEL_CHARS = 80
KEY_BYTES = 32
KEY_CHARS = 43  # base64url of 32 bytes, unpadded
#: Flags defined by v1, in the order the spec concatenates them (alphabetical).
KNOWN_FLAGS = "LPU"
SUPPORTED_VERSION = 1
#: Epoch seconds at or above this (year 5138) are almost certainly milliseconds, as in the spec's odd
#: `shl-payload-1.json`; refusing them beats silently treating a link as valid for three millennia.
MAX_EXP = 10**11

_B64URL = re.compile(r"[A-Za-z0-9_-]*")
_FLAGS = re.compile(r"[A-Z]*")
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})


@dataclass(frozen=True)
class ShlPayload:
    """A decoded SMART Health Link payload. `flag` holds every letter seen, known or not."""

    url: str
    key: str = field(repr=False)  # a repr lands in logs and tracebacks; the key must not
    exp: int | None = None
    flag: str = ""
    label: str | None = None
    v: int | None = None

    @property
    def key_bytes(self) -> bytes:
        return decode_key(self.key)

    @property
    def passcode_required(self) -> bool:
        return "P" in self.flag

    @property
    def long_term(self) -> bool:
        return "L" in self.flag

    @property
    def direct_file(self) -> bool:
        """`U`: the url is the single encrypted file, fetched by GET instead of a manifest POST."""
        return "U" in self.flag

    @property
    def version(self) -> int:
        return SUPPORTED_VERSION if self.v is None else self.v


def new_key() -> bytes:
    """A fresh 32-byte file key (the spec: "SHALL generate a random key")."""
    return secrets.token_bytes(KEY_BYTES)


def encode_key(key: bytes) -> str:
    if len(key) != KEY_BYTES:
        raise ShlPayloadError(f"key must be {KEY_BYTES} bytes")
    return _b64url_encode(key)


def decode_key(text: str) -> bytes:
    """Strict: exactly 43 base64url characters that decode to 32 bytes and re-encode to themselves."""
    if len(text) != KEY_CHARS or not _B64URL.fullmatch(text):
        raise ShlPayloadError(f"key must be {KEY_CHARS} base64url characters (32 bytes)")
    raw = _b64url_decode(text, what="key")
    # 43 characters carry 258 bits; the last two must be zero or two texts name one key.
    if len(raw) != KEY_BYTES or _b64url_encode(raw) != text:
        raise ShlPayloadError(f"key must be {KEY_CHARS} base64url characters (32 bytes)")
    return raw


def build_payload(
    *,
    url: str,
    key: bytes,
    exp: int | None = None,
    flags: str = "",
    label: str | None = None,
    v: int | None = None,
) -> ShlPayload:
    """Validate the parts of a link we issue. `flags` may be given in any order; it is normalised.

    Only v1 flags may be issued: an unknown letter would be ignored by receivers, so it has no use.
    """
    if len(set(flags)) != len(flags) or any(f not in KNOWN_FLAGS for f in flags):
        raise ShlPayloadError(f"flags must be distinct letters among {KNOWN_FLAGS!r}")
    ordered = "".join(sorted(flags))
    payload = ShlPayload(url=url, key=encode_key(key), exp=exp, flag=ordered, label=label, v=v)
    _validate(payload)
    return payload


def encode_payload(payload: ShlPayload) -> str:
    """base64url (unpadded) of the minified JSON, as the spec's `JSON.stringify` example produces it.

    Key order follows the spec example (`url`, `flag`, `key`, `label`) with `exp` before `label` and `v`
    last; absent optional fields are omitted. Non-ASCII stays UTF-8, like `JSON.stringify`.
    """
    _validate(payload)
    obj: dict[str, Any] = {"url": payload.url}
    if payload.flag:
        obj["flag"] = payload.flag
    obj["key"] = payload.key
    if payload.exp is not None:
        obj["exp"] = payload.exp
    if payload.label is not None:
        obj["label"] = payload.label
    if payload.v is not None:
        obj["v"] = payload.v
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    return _b64url_encode(text.encode("utf-8"))


def to_shlink(payload: ShlPayload) -> str:
    """`shlink:/<payload>`."""
    return SHLINK_PREFIX + encode_payload(payload)


def to_viewer_link(payload: ShlPayload, *, viewer_url: str) -> str:
    """`<viewer_url>#shlink:/<payload>`: opens in any browser; the fragment is never sent to the viewer."""
    base = viewer_url.removesuffix("#")
    parts = check_url(base, what="viewer_url")
    if parts.fragment or "#" in base:
        raise ShlPayloadError("viewer_url must not have a fragment of its own")
    link = base + "#" + to_shlink(payload)
    if len(link) > MAX_LINK_CHARS:
        raise ShlTooLarge(f"link is longer than {MAX_LINK_CHARS} characters")
    return link


def parse_shlink(text: str) -> ShlPayload:
    """Parse a bare `shlink:/...` or a viewer-prefixed `https://viewer#shlink:/...` link."""
    if not isinstance(text, str):
        raise ShlPayloadError("link must be text")
    if len(text) > MAX_LINK_CHARS:
        raise ShlTooLarge(f"link is longer than {MAX_LINK_CHARS} characters")
    text = text.strip()
    if not text.startswith(SHLINK_PREFIX):
        marker = text.find("#" + SHLINK_PREFIX)
        if marker < 0:
            raise ShlPayloadError("link must start with 'shlink:/' or contain '#shlink:/' after a viewer URL")
        if "#" in text[:marker]:
            raise ShlPayloadError("viewer URL must end at the '#' that starts 'shlink:/'")
        check_url(text[:marker], what="viewer URL")
        text = text[marker + 1 :]
    encoded = text[len(SHLINK_PREFIX) :]
    if not encoded:
        raise ShlPayloadError("link has no payload after 'shlink:/'")
    return decode_payload(encoded)


def decode_payload(encoded: str) -> ShlPayload:
    """Decode the base64url part of a link into a validated payload."""
    if len(encoded) > MAX_LINK_CHARS:
        raise ShlTooLarge(f"payload is longer than {MAX_LINK_CHARS} characters")
    if not _B64URL.fullmatch(encoded) or len(encoded) % 4 == 1:
        raise ShlPayloadError("payload is not base64url (unpadded, alphabet A-Z a-z 0-9 - _)")
    raw = _b64url_decode(encoded, what="payload")
    try:
        obj = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicate_keys, parse_constant=_no_constant)
    except UnicodeDecodeError:
        raise ShlPayloadError("payload is not UTF-8 JSON") from None
    except json.JSONDecodeError as exc:
        raise ShlPayloadError(f"payload is not JSON (at character {exc.pos})") from None
    except RecursionError:
        raise ShlPayloadError("payload JSON is nested too deeply") from None
    if not isinstance(obj, dict):
        raise ShlPayloadError("payload must be a JSON object")
    return payload_from_json(obj)


def payload_from_json(obj: dict[str, Any]) -> ShlPayload:
    """Validate a decoded payload object. Unknown properties are ignored, as the spec requires."""
    url = obj.get("url")
    if not isinstance(url, str):
        raise ShlPayloadError("payload 'url' is required and must be a string")
    key = obj.get("key")
    if not isinstance(key, str):
        raise ShlPayloadError("payload 'key' is required and must be a string")
    exp = obj.get("exp")
    if exp is not None and (isinstance(exp, bool) or not isinstance(exp, int)):
        raise ShlPayloadError("payload 'exp' must be an integer number of epoch seconds")
    flag = obj.get("flag", "")
    if not isinstance(flag, str):
        raise ShlPayloadError("payload 'flag' must be a string")
    label = obj.get("label")
    if label is not None and not isinstance(label, str):
        raise ShlPayloadError("payload 'label' must be a string")
    v = obj.get("v")
    if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
        raise ShlPayloadError("payload 'v' must be an integer")
    payload = ShlPayload(url=url, key=key, exp=exp, flag=flag, label=label, v=v)
    _validate(payload)
    return payload


def _validate(payload: ShlPayload) -> None:
    if len(payload.url) > MAX_URL_CHARS:
        raise ShlPayloadError(f"payload 'url' is longer than {MAX_URL_CHARS} characters")
    check_url(payload.url, what="payload 'url'")
    decode_key(payload.key)
    if payload.exp is not None and not 0 <= payload.exp < MAX_EXP:
        raise ShlPayloadError("payload 'exp' must be epoch seconds (non-negative, below 10**11; not milliseconds)")
    _check_flags(payload.flag)
    if payload.label is not None:
        if any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 or 0xD800 <= ord(c) < 0xE000 for c in payload.label):
            raise ShlPayloadError("payload 'label' must not contain control characters or lone surrogates")
        # Counted in UTF-16 code units, as JavaScript readers count `label.length`: an emoji is 2.
        if len(payload.label.encode("utf-16-le")) // 2 > MAX_LABEL_CHARS:
            raise ShlPayloadError(f"payload 'label' is longer than {MAX_LABEL_CHARS} characters")
    if payload.v is not None and payload.v < 1:
        raise ShlPayloadError("payload 'v' must be 1 or more")


def _check_flags(flag: str) -> None:
    if not _FLAGS.fullmatch(flag):
        raise ShlPayloadError("payload 'flag' must be upper-case letters")
    if len(set(flag)) != len(flag) or list(flag) != sorted(flag):
        raise ShlPayloadError("payload 'flag' letters must be distinct and in alphabetical order")
    # Unknown letters are ignored (spec: "SHALL ignore flag values they don't recognize").
    if "P" in flag and "U" in flag:
        raise ShlPayloadError("payload 'flag' must not combine 'P' and 'U'")


def check_url(url: str, *, what: str) -> SplitResult:
    """https everywhere; http only for loopback hosts (tests, a local demo). Returns the split URL."""
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        raise ShlPayloadError(f"{what} must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        raise ShlPayloadError(f"{what} is not a URL") from None
    if parts.scheme == "http" and host in _LOOPBACK_HOSTS:
        return parts
    if parts.scheme != "https" or not host:
        raise ShlPayloadError(f"{what} must be an https URL (http only for loopback hosts)")
    return parts


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Two `key`s or two `url`s would let two parsers see two different links in one QR.
    out: dict[str, Any] = {}
    for name, value in pairs:
        if name in out:
            raise ShlPayloadError("payload JSON repeats a property name")
        out[name] = value
    return out


def _no_constant(name: str) -> Any:
    raise ShlPayloadError("payload JSON must not contain NaN or Infinity")


def _b64url_encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str, *, what: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise ShlPayloadError(f"{what} is not base64url") from None
