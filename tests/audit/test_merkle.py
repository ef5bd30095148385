"""RFC 6962 Merkle tree: published vectors, cross-checks against pymerkle, tampering, properties.

pymerkle (an independent implementation) is used with `InmemoryTree(algorithm="sha256")`, whose
default "security" mode prefixes leaves with 0x00 and nodes with 0x01: RFC 6962 hashing. Its
inclusion paths are `[leaf hash] + RFC 6962 audit path`; its consistency paths use another
decomposition (they always descend to the first new leaf), so for consistency we compare roots and
check that each verifier accepts its own proof of the same statement.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from functools import cache

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pymerkle import InclusionProof, InmemoryTree, InvalidProof
from pymerkle import verify_consistency as pm_verify_consistency

from medvault.audit.errors import AuditError, ProofInvalid
from medvault.audit.merkle import (
    EMPTY_ROOT,
    Frontier,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    mth,
    node_hash,
    root_of,
    verify_consistency,
    verify_inclusion,
)

# --- RFC 6962 reference vectors (transparency-dev/merkle, proof/verify_test.go) -------------------

RFC_DATA = [
    b"",
    b"\x00",
    b"\x10",
    b"\x20\x21",
    b"\x30\x31",
    b"\x40\x41\x42\x43",
    b"\x50\x51\x52\x53\x54\x55\x56\x57",
    b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
]
RFC_LEAVES = [leaf_hash(d) for d in RFC_DATA]
RFC_ROOTS = [
    bytes.fromhex(h)
    for h in (
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    )
]
_H = bytes.fromhex
# (index counting from zero, size, audit path)
RFC_INCLUSION = [
    (0, 1, []),
    (
        0,
        8,
        [
            _H("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
            _H("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            _H("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
        ],
    ),
    (
        5,
        8,
        [
            _H("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
            _H("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
            _H("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
        ],
    ),
    (2, 3, [_H("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125")]),
    (
        1,
        5,
        [
            _H("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
            _H("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            _H("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
        ],
    ),
]
# (old size, new size, proof)
RFC_CONSISTENCY = [
    (1, 1, []),
    (
        1,
        8,
        [
            _H("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
            _H("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            _H("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
        ],
    ),
    (
        6,
        8,
        [
            _H("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
            _H("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
            _H("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
        ],
    ),
    (
        2,
        5,
        [
            _H("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            _H("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
        ],
    ),
    (
        6,
        7,
        [
            _H("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
            _H("b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f"),
            _H("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
        ],
    ),
]
SOME_HASH = _H("abacaba000000000000000000000000000000000000000000060061e00123456")

# --- generated trees ------------------------------------------------------------------------------

MAX_LEAVES = 3000
# Entries of varied length (including empty), so leaf hashing is exercised too.
DATA = [i.to_bytes(4, "big")[: i % 5] + bytes([i % 251]) * (i % 3) for i in range(MAX_LEAVES)]
LEAVES = [leaf_hash(d) for d in DATA]


@cache
def pm_tree() -> InmemoryTree:
    tree = InmemoryTree(algorithm="sha256")
    for d in DATA:
        tree.append_entry(d)
    return tree


@cache
def root(size: int) -> bytes:
    return root_of(LEAVES[:size])[1]


def flipped(proof: list[bytes], element: int, byte: int, mask: int = 0x01) -> list[bytes]:
    changed = bytearray(proof[element])
    changed[byte] ^= mask
    return [*proof[:element], bytes(changed), *proof[element + 1 :]]


def inclusion_rejected(*, leaf: bytes, index: int, size: int, proof: list[bytes], tree_root: bytes) -> bool:
    try:
        verify_inclusion(leaf_hash=leaf, index=index, size=size, proof=proof, root=tree_root)
    except ProofInvalid:
        return True
    return False


def consistency_rejected(*, old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: list[bytes]) -> bool:
    try:
        verify_consistency(old_size=old_size, new_size=new_size, old_root=old_root, new_root=new_root, proof=proof)
    except ProofInvalid:
        return True
    return False


# --- hashing and roots ----------------------------------------------------------------------------


def test_prefixes_and_empty_tree() -> None:
    assert RFC_ROOTS[0] == EMPTY_ROOT
    assert leaf_hash(b"") == RFC_ROOTS[1]
    assert node_hash(left=RFC_LEAVES[0], right=RFC_LEAVES[1]) == RFC_ROOTS[2]


def test_rfc6962_roots_for_every_size() -> None:
    for size in range(len(RFC_LEAVES) + 1):
        assert mth(RFC_LEAVES[:size]) == RFC_ROOTS[size], size
        assert root_of(RFC_LEAVES[:size]) == (size, RFC_ROOTS[size])


def test_split_is_largest_power_of_two_below_n_not_the_midpoint() -> None:
    # Size 6 splits 4+2 (a midpoint split would give 3+3 and another root).
    left, right = mth(RFC_LEAVES[:4]), mth(RFC_LEAVES[4:6])
    assert node_hash(left=left, right=right) == RFC_ROOTS[6]


@pytest.mark.parametrize(("index", "size", "expected"), RFC_INCLUSION)
def test_rfc6962_inclusion_vectors(index: int, size: int, expected: list[bytes]) -> None:
    assert inclusion_proof(leaves=RFC_LEAVES, index=index, size=size) == expected
    verify_inclusion(leaf_hash=RFC_LEAVES[index], index=index, size=size, proof=expected, root=RFC_ROOTS[size])


@pytest.mark.parametrize(("old_size", "new_size", "expected"), RFC_CONSISTENCY)
def test_rfc6962_consistency_vectors(old_size: int, new_size: int, expected: list[bytes]) -> None:
    assert consistency_proof(leaves=RFC_LEAVES, old_size=old_size, new_size=new_size) == expected
    verify_consistency(
        old_size=old_size,
        new_size=new_size,
        old_root=RFC_ROOTS[old_size],
        new_root=RFC_ROOTS[new_size],
        proof=expected,
    )


def test_pymerkle_hashes_leaves_like_rfc6962() -> None:
    tree = pm_tree()
    assert tree.get_size() == MAX_LEAVES
    assert [tree.get_leaf(i + 1) for i in range(50)] == LEAVES[:50]
    reference = InmemoryTree(algorithm="sha256")
    for d in RFC_DATA:
        reference.append_entry(d)
    assert [reference.get_root(n) for n in range(1, 9)] == RFC_ROOTS[1:]


def test_roots_match_pymerkle_and_reference_for_sizes_1_to_300() -> None:
    tree = pm_tree()
    for size in range(1, 301):
        assert root(size) == tree.get_root(size) == mth(LEAVES[:size]), size


def test_roots_match_pymerkle_for_random_large_sizes() -> None:
    rng = random.Random(6962)
    tree = pm_tree()
    for size in [*rng.sample(range(301, MAX_LEAVES + 1), 40), 512, 1024, 2048, 2049, MAX_LEAVES]:
        assert root(size) == tree.get_root(size), size


# --- frontier -------------------------------------------------------------------------------------


def test_frontier_equals_mth_for_all_sizes_0_to_300() -> None:
    frontier = Frontier()
    assert frontier.root() == EMPTY_ROOT
    for size in range(301):
        assert frontier.size == size
        assert frontier.root() == mth(LEAVES[:size]), size
        # Persisted and restored state (both encodings) gives the same tree and keeps growing right.
        restored = Frontier.from_subtrees(frontier.subtrees)
        assert restored == frontier
        assert Frontier.from_bytes(frontier.to_bytes()) == frontier
        assert len(frontier.subtrees) == size.bit_count()
        assert sum(width for width, _ in frontier.subtrees) == size
        restored.extend(LEAVES[size : size + 7])
        assert restored.root() == mth(LEAVES[: size + 7])
        frontier.append(LEAVES[size])


def test_frontier_extend_matches_appending_one_by_one_and_copy_is_independent() -> None:
    one_by_one = Frontier()
    for leaf in LEAVES[:1000]:
        one_by_one.append(leaf)
    bulk = Frontier()
    bulk.extend(iter(LEAVES[:1000]))
    assert bulk == one_by_one
    snapshot = bulk.copy()
    bulk.append(LEAVES[1000])
    assert snapshot.size == 1000
    assert snapshot.root() == root(1000)
    assert bulk.root() == root(1001)
    assert "size=1001" in repr(bulk)


@pytest.mark.parametrize(
    "subtrees",
    [
        [(3, SOME_HASH)],  # not a power of two
        [(0, SOME_HASH)],
        [(-2, SOME_HASH)],
        [(2, SOME_HASH), (4, SOME_HASH)],  # increasing
        [(2, SOME_HASH), (2, SOME_HASH)],  # repeated
        [(4, SOME_HASH[:31])],  # short hash
        [(4, "not bytes")],
    ],
)
def test_frontier_rejects_malformed_subtrees(subtrees: list[tuple[int, bytes]]) -> None:
    with pytest.raises(AuditError, match="frontier state is malformed"):
        Frontier.from_subtrees(subtrees)


def test_frontier_rejects_malformed_bytes() -> None:
    good = Frontier()
    good.extend(LEAVES[:5])
    data = good.to_bytes()
    for bad in (b"", data[:7], data[:-1], data + b"\x00", (7).to_bytes(8, "big") + data[8:]):
        with pytest.raises(AuditError, match="frontier state is malformed"):
            Frontier.from_bytes(bad)


def test_frontier_rejects_bad_leaves_and_keeps_last_good_state() -> None:
    frontier = Frontier()
    for bad in ([*LEAVES[:3], b"short"], [*LEAVES[:3], "x" * 32], [*LEAVES[:3], bytearray(LEAVES[3])]):
        frontier = Frontier()
        with pytest.raises(AuditError, match="leaf 3 is not a 32-byte hash"):
            frontier.extend(bad)  # type: ignore[arg-type]
        assert frontier.size == 3
        assert frontier.root() == root(3)
    frontier.append(LEAVES[3])
    assert frontier.root() == root(4)


def test_frontier_state_survives_a_failing_iterator() -> None:
    def entries() -> Iterator[bytes]:
        yield from LEAVES[:6]
        raise OSError("database went away")

    frontier = Frontier()
    with pytest.raises(OSError, match="database went away"):
        frontier.extend(entries())
    assert frontier.size == 6
    assert frontier.root() == root(6)


# --- inclusion ------------------------------------------------------------------------------------


def _indexes(size: int, rng: random.Random) -> list[int]:
    if size <= 24:
        return list(range(size))
    return sorted({0, 1, size // 2, size - 2, size - 1, *rng.sample(range(size), 3)})


def _check_inclusion_against_pymerkle(size: int, index: int) -> None:
    tree = pm_tree()
    ours = inclusion_proof(leaves=LEAVES, index=index, size=size)
    theirs = tree.prove_inclusion(index + 1, size)
    # pymerkle's path is the leaf hash followed by the RFC 6962 audit path.
    assert theirs.path == [LEAVES[index], *ours], (index, size)
    verify_inclusion(leaf_hash=LEAVES[index], index=index, size=size, proof=theirs.path[1:], root=tree.get_root(size))
    # pymerkle's verifier accepts our path for our root (its rule bits only encode left/right).
    as_pymerkle = InclusionProof("sha256", True, size, index + 1, theirs.rule, [LEAVES[index], *ours])
    as_pymerkle.verify(LEAVES[index], root(size), index=index + 1, size=size, algorithm="sha256")


def test_inclusion_proofs_match_pymerkle_for_sizes_1_to_300() -> None:
    rng = random.Random(1)
    for size in range(1, 301):
        for index in _indexes(size, rng):
            _check_inclusion_against_pymerkle(size, index)


def test_inclusion_proofs_match_pymerkle_for_random_large_sizes() -> None:
    rng = random.Random(2)
    for size in rng.sample(range(301, MAX_LEAVES + 1), 12):
        for index in rng.sample(range(size), 3):
            _check_inclusion_against_pymerkle(size, index)


def _corrupt_inclusion_probes(
    index: int, size: int, proof: list[bytes], tree_root: bytes, leaf: bytes
) -> list[tuple[str, int, int, list[bytes], bytes, bytes]]:
    """The probes of transparency-dev/merkle's verifier tests: (what, index, size, proof, root, leaf)."""
    probes = [
        ("index - 1", index - 1, size, proof, tree_root, leaf),
        ("index + 1", index + 1, size, proof, tree_root, leaf),
        ("index ^ 2", index ^ 2, size, proof, tree_root, leaf),
        ("size * 2", index, size * 2, proof, tree_root, leaf),
        ("size // 2", index, size // 2, proof, tree_root, leaf),
        ("wrong leaf", index, size, proof, tree_root, leaf_hash(b"WrongLeaf")),
        ("empty root", index, size, proof, EMPTY_ROOT, leaf),
        ("random root", index, size, proof, SOME_HASH, leaf),
        ("trailing garbage", index, size, [*proof, b""], tree_root, leaf),
        ("trailing root", index, size, [*proof, tree_root], tree_root, leaf),
        ("preceding garbage", index, size, [b"", *proof], tree_root, leaf),
        ("preceding root", index, size, [tree_root, *proof], tree_root, leaf),
    ]
    if proof:
        probes.append(("removed component", index, size, proof[:-1], tree_root, leaf))
    if len(proof) > 1:
        probes.append(("inserted component", index, size, [proof[0], SOME_HASH, *proof[1:]], tree_root, leaf))
    return probes


def test_rfc_inclusion_vectors_reject_every_corruption() -> None:
    for index, size, proof in RFC_INCLUSION:
        for what, i, n, p, r, leaf in _corrupt_inclusion_probes(index, size, proof, RFC_ROOTS[size], RFC_LEAVES[index]):
            assert inclusion_rejected(leaf=leaf, index=i, size=n, proof=p, tree_root=r), (index, size, what)


@pytest.mark.parametrize("size", [1, 2, 3, 5, 6, 7, 8, 9, 13, 31, 32, 33, 70])
def test_inclusion_tampering_is_rejected(size: int) -> None:
    tree_root = root(size)
    for index in range(size):
        leaf = LEAVES[index]
        proof = inclusion_proof(leaves=LEAVES, index=index, size=size)
        verify_inclusion(leaf_hash=leaf, index=index, size=size, proof=proof, root=tree_root)
        # Any flipped bit of any byte of any element.
        for element in range(len(proof)):
            for byte in range(32):
                bad = flipped(proof, element, byte, mask=1 << (byte % 8))
                assert inclusion_rejected(leaf=leaf, index=index, size=size, proof=bad, tree_root=tree_root)
        # Any other position, in range or not.
        for other in [-1, *range(size + 2)]:
            if other != index:
                assert inclusion_rejected(leaf=leaf, index=other, size=size, proof=proof, tree_root=tree_root)
        # Any other size, with the root of that size (a signed checkpoint binds the two).
        for other_size in range(max(1, index + 1), size + 40):
            if other_size != size:
                assert inclusion_rejected(
                    leaf=leaf, index=index, size=other_size, proof=proof, tree_root=root(other_size)
                )
        # A modified entry: another leaf's hash, or the same entry with one byte changed.
        changed = leaf_hash(DATA[index] + b"\x00")
        assert inclusion_rejected(leaf=changed, index=index, size=size, proof=proof, tree_root=tree_root)
        for other in range(size):
            if LEAVES[other] != leaf:
                assert inclusion_rejected(leaf=LEAVES[other], index=index, size=size, proof=proof, tree_root=tree_root)
        for what, i, n, p, r, lf in _corrupt_inclusion_probes(index, size, proof, tree_root, leaf):
            assert inclusion_rejected(leaf=lf, index=i, size=n, proof=p, tree_root=r), (index, size, what)


def test_inclusion_rejects_malformed_arguments() -> None:
    proof = inclusion_proof(leaves=LEAVES, index=3, size=10)
    good = {"leaf_hash": LEAVES[3], "index": 3, "size": 10, "proof": proof, "root": root(10)}
    verify_inclusion(**good)  # type: ignore[arg-type]
    for key, value in [
        ("leaf_hash", LEAVES[3][:31]),
        ("root", root(10) + b"\x00"),
        ("proof", [*proof[:-1], proof[-1][:16]]),
        ("proof", [*proof[:-1], "x" * 32]),
        ("size", 0),
        ("index", 10),
    ]:
        with pytest.raises(ProofInvalid):
            verify_inclusion(**{**good, key: value})  # type: ignore[arg-type]


def test_single_leaf_tree() -> None:
    leaf = leaf_hash(b"data")
    assert inclusion_proof(leaves=[leaf], index=0, size=1) == []
    verify_inclusion(leaf_hash=leaf, index=0, size=1, proof=[], root=leaf)
    assert inclusion_rejected(leaf=leaf, index=0, size=1, proof=[], tree_root=EMPTY_ROOT)
    assert inclusion_rejected(leaf=leaf, index=0, size=1, proof=[leaf], tree_root=leaf)


def test_proof_generation_refuses_impossible_requests() -> None:
    with pytest.raises(AuditError, match="no leaf 5 in a tree of size 5"):
        inclusion_proof(leaves=LEAVES, index=5, size=5)
    with pytest.raises(AuditError, match="no leaf -1"):
        inclusion_proof(leaves=LEAVES, index=-1, size=5)
    with pytest.raises(AuditError, match="the log has 3 entries"):
        inclusion_proof(leaves=LEAVES[:3], index=0, size=4)
    with pytest.raises(AuditError, match="no consistency proof from size 5 to size 4"):
        consistency_proof(leaves=LEAVES, old_size=5, new_size=4)
    with pytest.raises(AuditError, match="the log has 3 entries"):
        consistency_proof(leaves=LEAVES[:3], old_size=1, new_size=4)


# --- consistency ----------------------------------------------------------------------------------


def _check_consistency_against_pymerkle(old_size: int, new_size: int) -> None:
    tree = pm_tree()
    old_root, new_root = root(old_size), root(new_size)
    assert (old_root, new_root) == (tree.get_root(old_size), tree.get_root(new_size))
    ours = consistency_proof(leaves=LEAVES, old_size=old_size, new_size=new_size)
    verify_consistency(old_size=old_size, new_size=new_size, old_root=old_root, new_root=new_root, proof=ours)
    # pymerkle proves the same statement its own way; its verifier accepts it against our roots.
    theirs = tree.prove_consistency(old_size, new_size)
    pm_verify_consistency(old_root, new_root, theirs, prior_size=old_size, later_size=new_size, algorithm="sha256")
    if old_size != new_size:
        with pytest.raises(InvalidProof):
            pm_verify_consistency(SOME_HASH, new_root, theirs, prior_size=old_size, later_size=new_size)


def test_consistency_agrees_with_pymerkle_for_sizes_1_to_300() -> None:
    rng = random.Random(3)
    for new_size in range(1, 301):
        olds: Iterable[int] = (
            range(1, new_size + 1)
            if new_size <= 24
            else {1, new_size - 1, new_size, *rng.sample(range(1, new_size), 4)}
        )
        for old_size in olds:
            _check_consistency_against_pymerkle(old_size, new_size)


def test_consistency_agrees_with_pymerkle_for_random_large_sizes() -> None:
    rng = random.Random(4)
    for new_size in rng.sample(range(301, MAX_LEAVES + 1), 12):
        for old_size in [*rng.sample(range(1, new_size), 3), 256, 1]:
            _check_consistency_against_pymerkle(old_size, new_size)


def test_rfc_consistency_vectors_reject_every_corruption() -> None:
    for old_size, new_size, proof in RFC_CONSISTENCY:
        if not proof:
            continue
        root1, root2 = RFC_ROOTS[old_size], RFC_ROOTS[new_size]
        probes = [
            (old_size - 1, new_size, root1, root2, proof),
            (old_size + 1, new_size, root1, root2, proof),
            (old_size ^ 2, new_size, root1, root2, proof),
            (old_size, new_size * 2, root1, root2, proof),
            (old_size, new_size // 2, root1, root2, proof),
            (old_size, new_size, SOME_HASH, root2, proof),
            (old_size, new_size, root1, SOME_HASH, proof),
            (old_size, new_size, root2, root1, proof),
            (old_size, new_size, root1, root2, []),
            (old_size, new_size, root1, root2, [*proof, b""]),
            (old_size, new_size, root1, root2, [*proof, root1]),
            (old_size, new_size, root1, root2, [*proof, root2]),
            (old_size, new_size, root1, root2, [b"", *proof]),
            (old_size, new_size, root1, root2, [root1, *proof]),
            (old_size, new_size, root1, root2, [root2, *proof]),
            (old_size, new_size, root1, root2, [proof[0], *proof]),
            (old_size, new_size, root1, root2, proof[:-1]),
        ] + [(old_size, new_size, root1, root2, flipped(proof, i, 0, mask=16)) for i in range(len(proof))]
        for m, n, r1, r2, p in probes:
            assert consistency_rejected(old_size=m, new_size=n, old_root=r1, new_root=r2, proof=p), (m, n, old_size)


@pytest.mark.parametrize("new_size", [2, 3, 4, 5, 7, 8, 9, 16, 17, 31, 33, 45])
def test_consistency_tampering_is_rejected(new_size: int) -> None:
    new_root = root(new_size)
    for old_size in range(1, new_size):
        old_root = root(old_size)
        proof = consistency_proof(leaves=LEAVES, old_size=old_size, new_size=new_size)
        verify_consistency(old_size=old_size, new_size=new_size, old_root=old_root, new_root=new_root, proof=proof)
        for element in range(len(proof)):
            for byte in range(32):
                bad = flipped(proof, element, byte, mask=1 << (byte % 8))
                assert consistency_rejected(
                    old_size=old_size, new_size=new_size, old_root=old_root, new_root=new_root, proof=bad
                )
        # Other sizes, each with its own genuine root.
        for other_old in range(0, new_size + 1):
            if other_old != old_size:
                assert consistency_rejected(
                    old_size=other_old, new_size=new_size, old_root=root(other_old), new_root=new_root, proof=proof
                ), (other_old, old_size, new_size)
        for other_new in range(old_size, new_size + 20):
            if other_new != new_size:
                assert consistency_rejected(
                    old_size=old_size, new_size=other_new, old_root=old_root, new_root=root(other_new), proof=proof
                ), (old_size, other_new, new_size)
        # The old log had one entry edited (or the new log rewrote history): no proof links them.
        for edited in range(old_size):
            forged = list(LEAVES[:new_size])
            forged[edited] = leaf_hash(DATA[edited] + b"edited")
            forged_old_root = mth(forged[:old_size])
            assert consistency_rejected(
                old_size=old_size, new_size=new_size, old_root=forged_old_root, new_root=new_root, proof=proof
            )
            forged_proof = consistency_proof(leaves=forged, old_size=old_size, new_size=new_size)
            assert consistency_rejected(
                old_size=old_size, new_size=new_size, old_root=old_root, new_root=mth(forged), proof=forged_proof
            )


def test_split_view_same_size_other_content_is_caught() -> None:
    other = [leaf_hash(b"other " + d) for d in DATA[:20]]
    assert consistency_rejected(old_size=20, new_size=20, old_root=root(20), new_root=mth(other), proof=[])


def test_consistency_edge_cases() -> None:
    verify_consistency(old_size=0, new_size=0, old_root=EMPTY_ROOT, new_root=EMPTY_ROOT, proof=[])
    verify_consistency(old_size=0, new_size=7, old_root=EMPTY_ROOT, new_root=root(7), proof=[])
    verify_consistency(old_size=7, new_size=7, old_root=root(7), new_root=root(7), proof=[])
    assert consistency_proof(leaves=LEAVES, old_size=0, new_size=7) == []
    assert consistency_proof(leaves=LEAVES, old_size=7, new_size=7) == []
    # Size 0: the old root must be the empty-tree root and the proof empty.
    assert consistency_rejected(old_size=0, new_size=7, old_root=SOME_HASH, new_root=root(7), proof=[])
    assert consistency_rejected(old_size=0, new_size=7, old_root=EMPTY_ROOT, new_root=root(7), proof=[EMPTY_ROOT])
    # Equal sizes: equal roots and an empty proof.
    assert consistency_rejected(old_size=7, new_size=7, old_root=root(7), new_root=root(6), proof=[])
    assert consistency_rejected(old_size=7, new_size=7, old_root=root(7), new_root=root(7), proof=[root(7)])
    # Time travel and nonsense.
    assert consistency_rejected(old_size=8, new_size=7, old_root=root(8), new_root=root(7), proof=[])
    assert consistency_rejected(old_size=-1, new_size=7, old_root=EMPTY_ROOT, new_root=root(7), proof=[])
    assert consistency_rejected(old_size=1, new_size=2, old_root=root(1), new_root=root(2), proof=[])
    assert consistency_rejected(old_size=1, new_size=2, old_root=root(1)[:31], new_root=root(2), proof=[LEAVES[1]])
    assert consistency_rejected(old_size=1, new_size=2, old_root=root(1), new_root=root(2), proof=[b"\x00" * 33])


# --- properties -----------------------------------------------------------------------------------

_size = st.integers(min_value=1, max_value=MAX_LEAVES)


@settings(max_examples=60, deadline=None)
@given(data=st.data(), size=_size)
def test_property_inclusion(data: st.DataObject, size: int) -> None:
    index = data.draw(st.integers(min_value=0, max_value=size - 1), label="index")
    proof = inclusion_proof(leaves=LEAVES, index=index, size=size)
    verify_inclusion(leaf_hash=LEAVES[index], index=index, size=size, proof=proof, root=root(size))
    assert len(proof) <= size.bit_length()
    if proof:
        element = data.draw(st.integers(min_value=0, max_value=len(proof) - 1), label="element")
        byte = data.draw(st.integers(min_value=0, max_value=31), label="byte")
        mask = data.draw(st.integers(min_value=1, max_value=255), label="mask")
        bad = flipped(proof, element, byte, mask)
        assert inclusion_rejected(leaf=LEAVES[index], index=index, size=size, proof=bad, tree_root=root(size))
    other = data.draw(st.integers(min_value=0, max_value=size), label="other index")
    if other != index:
        assert inclusion_rejected(leaf=LEAVES[index], index=other, size=size, proof=proof, tree_root=root(size))


@settings(max_examples=60, deadline=None)
@given(data=st.data(), new_size=_size)
def test_property_consistency(data: st.DataObject, new_size: int) -> None:
    old_size = data.draw(st.integers(min_value=1, max_value=new_size), label="old size")
    proof = consistency_proof(leaves=LEAVES, old_size=old_size, new_size=new_size)
    old_root, new_root = root(old_size), root(new_size)
    verify_consistency(old_size=old_size, new_size=new_size, old_root=old_root, new_root=new_root, proof=proof)
    assert len(proof) <= 2 * new_size.bit_length()
    if proof:
        element = data.draw(st.integers(min_value=0, max_value=len(proof) - 1), label="element")
        byte = data.draw(st.integers(min_value=0, max_value=31), label="byte")
        mask = data.draw(st.integers(min_value=1, max_value=255), label="mask")
        bad = flipped(proof, element, byte, mask)
        assert consistency_rejected(
            old_size=old_size, new_size=new_size, old_root=old_root, new_root=new_root, proof=bad
        )
    # An edit anywhere in the old tree breaks the link to the genuine new root.
    edited = data.draw(st.integers(min_value=0, max_value=old_size - 1), label="edited entry")
    forged = list(LEAVES[:old_size])
    forged[edited] = leaf_hash(DATA[edited] + b"edited")
    assert consistency_rejected(
        old_size=old_size, new_size=new_size, old_root=root_of(forged)[1], new_root=new_root, proof=proof
    )


@settings(max_examples=40, deadline=None)
@given(sizes=st.lists(st.integers(min_value=0, max_value=200), min_size=1, max_size=6))
def test_property_frontier_resumed_in_chunks_equals_mth(sizes: list[int]) -> None:
    frontier = Frontier()
    total = 0
    for chunk in sizes:
        # Persist and restore between chunks, like `audit` does between transactions.
        frontier = Frontier.from_bytes(frontier.to_bytes())
        frontier.extend(LEAVES[total : total + chunk])
        total += chunk
    assert frontier.size == total
    assert frontier.root() == root(total)
