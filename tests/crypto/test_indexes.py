"""Keyed indexes: deterministic per key, unlinkable across keys and purposes, truncation sized."""

from __future__ import annotations

import os
from collections import Counter

from medvault.crypto.indexes import Indexer, blind_bits_for, normalise


def make(bits: int = 10, key: bytes | None = None) -> Indexer:
    k = key or os.urandom(32)
    return Indexer(pseudonym_key=k + b"p", handle_key=k + b"h", token_key=k + b"t", blind_key=k + b"b", blind_bits=bits)


def test_pseudonym_and_handle_unlinkable() -> None:
    ix = make()
    assert ix.pseudonym("p1") == ix.pseudonym("p1")
    assert ix.pseudonym("p1") != ix.identity_handle("p1")
    assert make().pseudonym("p1") != ix.pseudonym("p1")  # another install's key: another value


def test_search_token_scoped_per_patient() -> None:
    ix = make()
    a = ix.search_token(b"patient-a", "Condition", "code", "c:44054006")
    b = ix.search_token(b"patient-b", "Condition", "code", "c:44054006")
    assert a != b  # the same diagnosis looks different in two records: no cross-patient frequency


def test_length_prefix_prevents_ambiguity() -> None:
    ix = make()
    assert ix.search_token(b"s", "ab", "c", "v") != ix.search_token(b"s", "a", "bc", "v")


def test_blind_buckets_are_shared() -> None:
    ix = make(bits=6)
    buckets = Counter(ix.blind_bucket("family", f"name{i}") for i in range(2000))
    assert max(buckets) < 2**6
    # 2000 values into 64 buckets: every bucket is shared by many values (no 1:1 confirmation)
    assert min(buckets.values()) >= 10


def test_blind_bucket_normalises() -> None:
    ix = make()
    assert ix.blind_bucket("family", "Muñoz") == ix.blind_bucket("family", "  MUNOZ ")
    assert normalise("Zoë  Ångström") == "zoe angstrom"


def test_blind_bits_sizing() -> None:
    assert blind_bits_for(10_000) == 10  # 10k entries / 8 per bucket -> 1,250 -> 2^10
    assert blind_bits_for(10) == 4  # floor
    assert blind_bits_for(10**12) == 24  # ceiling


def test_index_values_use_the_safe_alphabet() -> None:
    ix = make()
    for value in (ix.pseudonym("p"), ix.identity_handle("p"), ix.search_token(b"s", "T", "p", "v")):
        assert all(0xA0 <= b <= 0xDF for b in value)
    assert ix.content_id(b"{}").isalpha()


def _reference_mac(key: bytes, *parts: str | bytes) -> bytes:
    """The documented construction, spelled out with the standard library's one-shot HMAC."""
    import hashlib
    import hmac

    msg = b""
    for part in parts:
        raw = part.encode() if isinstance(part, str) else part
        msg += len(raw).to_bytes(4, "big") + raw
    return hmac.digest(key, msg, hashlib.sha256)


def test_values_match_the_reference_hmac() -> None:
    """The precomputed-pad HMAC gives exactly the values stored by earlier versions (existing
    databases stay searchable), for short, block-sized and over-long keys."""
    from medvault.crypto.armor import safe_bytes

    for k in (os.urandom(32), os.urandom(64), os.urandom(100), b""):
        keys = {"p": k + b"p", "h": k + b"h", "t": k + b"t", "b": k + b"b", "c": k + b"c"}
        ix = Indexer(
            pseudonym_key=keys["p"],
            handle_key=keys["h"],
            token_key=keys["t"],
            blind_key=keys["b"],
            blind_bits=12,
            content_key=keys["c"],
        )
        assert ix.pseudonym("p-1") == safe_bytes(_reference_mac(keys["p"], "patient", "p-1")[:16])
        assert ix.identity_handle("p-1") == safe_bytes(_reference_mac(keys["h"], "identity", "p-1")[:16])
        for scope, value in ((b"\xa1" * 16, "sc:http://loinc.org|8302-2"), (b"global", "é" * 40)):
            want = safe_bytes(_reference_mac(keys["t"], scope, "Observation", "code", value)[:12])
            assert ix.search_token(scope, "Observation", "code", value) == want
            assert ix.search_token(scope, "Observation", "code", value) == want  # cached prefix
        digest = _reference_mac(keys["b"], "family", "munoz")
        assert ix.blind_bucket("family", "Muñoz") == int.from_bytes(digest[:4], "big") >> (32 - 12)
        content = _reference_mac(keys["c"], "content", b"{}")[:20]
        assert ix.content_id(b"{}") == content.translate(bytes(ord("a") + b % 26 for b in range(256))).decode()
    # Without a content key of its own, the content key is derived from the token key.
    token_key = os.urandom(32)
    ix = Indexer(pseudonym_key=b"p", handle_key=b"h", token_key=token_key, blind_key=b"b", blind_bits=8)
    derived = _reference_mac(token_key, "content-id")
    content = _reference_mac(derived, "content", b"x")[:20]
    assert ix.content_id(b"x") == content.translate(bytes(ord("a") + b % 26 for b in range(256))).decode()
