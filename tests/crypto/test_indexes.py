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
