"""Signed checkpoints: round trip, the C2SP signed-note wire format, and strict rejection."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime, timedelta, timezone

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given, settings
from hypothesis import strategies as st

from medvault.audit.checkpoint import Checkpoint, key_id, parse_and_verify, sign_checkpoint
from medvault.audit.errors import AuditError, CheckpointInvalid
from medvault.audit.merkle import leaf_hash, root_of

KEY = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"medvault test audit key").digest())
PUBLIC = KEY.public_key()
OTHER_KEY = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"someone else").digest())
NAME = "medvault.example/audit"
ROOT = root_of(leaf_hash(bytes([i])) for i in range(10))[1]
WHEN = datetime(2025, 3, 14, 15, 9, 26, 535897, tzinfo=UTC)
CHECKPOINT = Checkpoint(origin="medvault.example/audit", size=10, root=ROOT, timestamp=WHEN)


def signed(checkpoint: Checkpoint = CHECKPOINT, key: Ed25519PrivateKey = KEY, name: str = NAME) -> str:
    return sign_checkpoint(checkpoint=checkpoint, private_key=key, key_name=name)


def sign_raw(body: str, key: Ed25519PrivateKey = KEY, name: str = NAME) -> str:
    """Sign arbitrary text as a note, to reach the body parser with validly signed bad bodies."""
    blob = key_id(key_name=name, public_key=key.public_key()) + key.sign(body.encode("utf-8"))
    return f"{body}\n\u2014 {name} {base64.b64encode(blob).decode()}\n"


def rejected(text: object, public_key: Ed25519PublicKey = PUBLIC) -> bool:
    try:
        parse_and_verify(text=text, public_key=public_key)  # type: ignore[arg-type]
    except CheckpointInvalid:
        return True
    return False


def test_round_trip_and_wire_format() -> None:
    text = signed()
    assert parse_and_verify(text=text, public_key=PUBLIC) == CHECKPOINT
    body, signature = text.split("\n\n")
    root_b64 = base64.b64encode(ROOT).decode()
    assert body == f"medvault.example/audit\n10\n{root_b64}\ntimestamp 2025-03-14T15:09:26.535897Z"
    assert signature.startswith(f"\u2014 {NAME} ")
    assert signature.endswith("\n")
    assert signature.count("\n") == 1
    blob = base64.b64decode(signature.split(" ")[2])
    assert len(blob) == 4 + 64
    # Ed25519 is deterministic: the same checkpoint and key always give the same text.
    assert signed() == text


@pytest.mark.parametrize(
    "checkpoint",
    [
        Checkpoint(origin="o", size=0, root=hashlib.sha256(b"").digest(), timestamp=WHEN),
        Checkpoint(origin="x" * 200, size=2**63 - 1, root=ROOT, timestamp=WHEN.replace(microsecond=0)),
        Checkpoint(origin="ünïcode — origin", size=1, root=ROOT, timestamp=datetime(5, 1, 2, tzinfo=UTC)),
        Checkpoint(origin="o", size=7, root=ROOT, timestamp=datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)),
    ],
)
def test_round_trip_extremes(checkpoint: Checkpoint) -> None:
    assert parse_and_verify(text=signed(checkpoint), public_key=PUBLIC) == checkpoint


def test_timestamps_are_normalised_to_utc() -> None:
    paris = timezone(timedelta(hours=1))
    local = Checkpoint(origin="o", size=1, root=ROOT, timestamp=datetime(2025, 1, 1, 13, 0, tzinfo=paris))
    assert local.timestamp.utcoffset() == timedelta(0)
    assert local.timestamp == datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
    parsed = parse_and_verify(text=signed(local), public_key=PUBLIC)
    assert parsed == local
    assert parsed.timestamp.tzinfo is UTC


def test_key_id_and_signature_layout_match_the_go_signed_note_vector() -> None:
    # golang.org/x/mod/sumdb/note's documented example: key "PeterNeumann+c74f20a3+...".
    skey = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
    vkey = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
    text = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
    signature = "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM="
    note = f"{text}\n\u2014 PeterNeumann {signature}\n"
    seed = base64.b64decode(skey.split("+", 4)[4])
    assert seed[0] == 1  # algorithm byte: Ed25519
    private = Ed25519PrivateKey.from_private_bytes(seed[1:])
    public_raw = base64.b64decode(vkey.split("+", 2)[2])
    assert public_raw[1:] == private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    assert key_id(key_name="PeterNeumann", public_key=private.public_key()) == bytes.fromhex("c74f20a3")
    # Our signature line for that text is byte-for-byte the published one.
    assert sign_raw(text, private, "PeterNeumann") == note


def test_wrong_public_key_is_rejected() -> None:
    with pytest.raises(CheckpointInvalid, match="not signed by the expected key"):
        parse_and_verify(text=signed(), public_key=OTHER_KEY.public_key())


def test_resigned_by_another_key_under_our_name_is_rejected() -> None:
    with pytest.raises(CheckpointInvalid, match="not signed by the expected key"):
        parse_and_verify(text=signed(key=OTHER_KEY), public_key=PUBLIC)


def test_renamed_key_is_rejected() -> None:
    text = signed().replace(f"\u2014 {NAME} ", "\u2014 medvault.example/other ")
    with pytest.raises(CheckpointInvalid, match="not signed by the expected key"):
        parse_and_verify(text=text, public_key=PUBLIC)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("\n10\n", "\n11\n"),  # size
        ("\n10\n", "\n9\n"),
        ("medvault.example/audit\n", "medvault.example/other\n"),  # origin
        ("2025-03-14T15:09:26.535897Z", "2025-03-14T15:09:26.535898Z"),  # timestamp
        ("timestamp 2025", "timestamp 2024"),
    ],
)
def test_modified_fields_are_rejected(old: str, new: str) -> None:
    text = signed()
    assert old in text
    with pytest.raises(CheckpointInvalid, match="signature does not verify"):
        parse_and_verify(text=text.replace(old, new, 1), public_key=PUBLIC)


def test_modified_root_is_rejected() -> None:
    other = base64.b64encode(bytes([ROOT[0] ^ 1]) + ROOT[1:]).decode()
    text = signed().replace(base64.b64encode(ROOT).decode(), other)
    with pytest.raises(CheckpointInvalid, match="signature does not verify"):
        parse_and_verify(text=text, public_key=PUBLIC)


def test_modified_signature_bytes_are_rejected() -> None:
    text = signed()
    body, line = text.split("\n\n")
    prefix, blob_b64 = line.rsplit(" ", 1)
    blob = base64.b64decode(blob_b64)
    for i in range(len(blob)):
        bad = bytearray(blob)
        bad[i] ^= 1 << (i % 8)
        assert rejected(f"{body}\n\n{prefix} {base64.b64encode(bytes(bad)).decode()}\n"), i


def test_every_single_character_edit_is_rejected() -> None:
    text = signed()
    for i in range(len(text)):
        assert rejected(text[:i] + text[i + 1 :]), f"deleted {i}"
        for c in ("a", "0", "\n", " ", "="):
            if text[i] != c:
                assert rejected(text[:i] + c + text[i + 1 :]), f"replaced {i} with {c!r}"
            assert rejected(text[:i] + c + text[i:]), f"inserted {c!r} at {i}"
    assert rejected(text + "\n")
    assert rejected(text.replace("\n", "\r\n"))


@pytest.mark.parametrize(
    "body",
    [
        "o\n007\n{root}\ntimestamp 2025-03-14T15:09:26.535897Z\n",  # leading zeros
        "o\n+7\n{root}\ntimestamp 2025-03-14T15:09:26.535897Z\n",
        "o\n\uff17\n{root}\ntimestamp 2025-03-14T15:09:26.535897Z\n",  # fullwidth digit
        "o\n-1\n{root}\ntimestamp 2025-03-14T15:09:26.535897Z\n",
        f"o\n{2**63}\n{{root}}\ntimestamp 2025-03-14T15:09:26.535897Z\n",
        "o\n7\n{root_unpadded}\ntimestamp 2025-03-14T15:09:26.535897Z\n",
        "o\n7\n{root_short}\ntimestamp 2025-03-14T15:09:26.535897Z\n",
        "o\n7\n{root_urlsafe}\ntimestamp 2025-03-14T15:09:26.535897Z\n",
        "o\n7\n{root}\ntimestamp 2025-03-14T15:09:26Z\n",  # no microseconds
        "o\n7\n{root}\ntimestamp 2025-03-14T15:09:26.535897+00:00\n",
        "o\n7\n{root}\ntimestamp 2025-02-30T15:09:26.535897Z\n",  # no such day
        "o\n7\n{root}\ntimestamp 2025-03-14 15:09:26.535897Z\n",
        "o\n7\n{root}\n2025-03-14T15:09:26.535897Z\n",  # no label
        "o\n7\n{root}\n",  # no timestamp line
        "o\n7\n{root}\ntimestamp 2025-03-14T15:09:26.535897Z\nextension\n",  # extra line
        " o\n7\n{root}\ntimestamp 2025-03-14T15:09:26.535897Z\n",  # padded origin
        "o\t\n7\n{root}\ntimestamp 2025-03-14T15:09:26.535897Z\n",
        "o\r\n7\n{root}\ntimestamp 2025-03-14T15:09:26.535897Z\n",
    ],
)
def test_validly_signed_but_non_canonical_bodies_are_rejected(body: str) -> None:
    root_b64 = base64.b64encode(ROOT).decode()
    filled = body.format(
        root=root_b64,
        root_unpadded=base64.b64encode(ROOT + b"\x00").decode().rstrip("="),
        root_short=base64.b64encode(ROOT[:31]).decode(),
        root_urlsafe=base64.urlsafe_b64encode(b"\xff" * 32).decode(),
    )
    with pytest.raises(CheckpointInvalid):
        parse_and_verify(text=sign_raw(filled), public_key=PUBLIC)


def test_two_signature_lines_are_rejected() -> None:
    text = signed()
    second = signed(key=OTHER_KEY, name="witness").split("\n\n")[1]
    assert rejected(text + second)
    assert rejected(text.replace("\n\n", "\n\n" + second))


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "\n",
        "\n\n",
        "\n\n\u2014 a b\n",
        "hello",
        "a\nb\nc\n\n\u2014 x AAAA\n",
        "a\nb\nc\n\n\u2014 x !!!!\n",
        "a\nb\nc\n\n- x AAAA\n",
        "\u2014 " * 5000,
        "x" * 100_000,
        "\ud800\n\n\u2014 a b\n",  # lone surrogate: not encodable as UTF-8
        b"bytes, not text",
        None,
        42,
    ],
)
def test_garbage_is_rejected(garbage: object) -> None:
    assert rejected(garbage)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=400))
def test_property_random_text_is_rejected(text: str) -> None:
    assert rejected(text)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_property_mutated_checkpoints_are_rejected(data: st.DataObject) -> None:
    text = signed()
    start = data.draw(st.integers(min_value=0, max_value=len(text)), label="start")
    end = data.draw(st.integers(min_value=start, max_value=len(text)), label="end")
    replacement = data.draw(st.text(max_size=8), label="replacement")
    mutated = text[:start] + replacement + text[end:]
    if mutated != text:
        assert rejected(mutated)


@pytest.mark.parametrize(
    "fields",
    [
        {"origin": ""},
        {"origin": "two\nlines"},
        {"origin": " padded"},
        {"origin": 7},
        {"size": -1},
        {"size": 2**63},
        {"size": True},
        {"size": "10"},
        {"root": ROOT[:31]},
        {"root": ROOT.hex()},
        {"timestamp": datetime(2025, 1, 1)},  # naive
        {"timestamp": "2025-01-01T00:00:00Z"},
        {"timestamp": datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=1)))},  # before year 1 in UTC
    ],
)
def test_invalid_checkpoints_cannot_be_built(fields: dict[str, object]) -> None:
    values: dict[str, object] = {"origin": "o", "size": 1, "root": ROOT, "timestamp": WHEN, **fields}
    with pytest.raises(CheckpointInvalid):
        Checkpoint(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["", "two words", "a+b", "tab\tname", "new\nline"])
def test_invalid_key_names_are_refused_when_signing(name: str) -> None:
    with pytest.raises(CheckpointInvalid, match="key name"):
        signed(name=name)


def test_checkpoint_errors_are_audit_errors() -> None:
    assert issubclass(CheckpointInvalid, AuditError)
    with pytest.raises(CheckpointInvalid) as caught:
        parse_and_verify(text="nope", public_key=PUBLIC)
    assert caught.value.code == "security"
    assert caught.value.message
