"""RFC 6962 Merkle tree: hashes, roots, inclusion and consistency proofs, and a persistable frontier.

Everything here works on *leaf hashes* (32-byte `leaf_hash(...)` values), never on entry content:
the log stores leaf hashes next to sealed entries, so verification needs no decryption key.

Indexes count from zero and sizes are numbers of leaves, as in RFC 9162. Verifiers raise
`ProofInvalid` instead of returning a bool, so a caller cannot forget to look at the answer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

from medvault.audit.errors import AuditError, ProofInvalid

HASH_SIZE = 32
# RFC 6962 §2.1: the hash of an empty list is the hash of the empty string (no prefix).
EMPTY_ROOT = hashlib.sha256(b"").digest()
# Domain separation (RFC 6962 §2.1): a leaf can never be passed off as an interior node and vice
# versa, which is what stops second-preimage attacks on the tree shape.
_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"
# Serialised frontier: 8-byte big-endian size, then one hash per perfect subtree.
_SIZE_BYTES = 8

_sha256 = hashlib.sha256


def leaf_hash(data: bytes) -> bytes:
    """`SHA-256(0x00 || data)`: the hash of one log entry as a leaf."""
    return _sha256(_LEAF_PREFIX + data).digest()


def node_hash(*, left: bytes, right: bytes) -> bytes:
    """`SHA-256(0x01 || left || right)`: the hash of an interior node."""
    return _sha256(_NODE_PREFIX + left + right).digest()


def _split(n: int) -> int:
    """Largest power of two strictly less than `n` (n >= 2): RFC 6962's `k`, not the midpoint."""
    return 1 << ((n - 1).bit_length() - 1)


def mth(leaf_hashes: Sequence[bytes]) -> bytes:
    """Merkle Tree Hash by the literal recursive definition of RFC 6962 §2.1.

    This is the reference the fast paths (`root_of`, `Frontier`) are tested against; it copies
    slices and recurses, so use `root_of` for anything large.
    """
    n = len(leaf_hashes)
    if n == 0:
        return EMPTY_ROOT
    if n == 1:
        return leaf_hashes[0]
    k = _split(n)
    return node_hash(left=mth(leaf_hashes[:k]), right=mth(leaf_hashes[k:]))


class Frontier:
    """The roots of the perfect subtrees that make up a tree of `size` leaves ("compact range").

    A tree of size n is the concatenation of perfect subtrees whose sizes are the binary digits of
    n, largest (leftmost) first, so this holds at most log2(n) + 1 hashes. Appending a leaf merges
    the trailing equal-sized subtrees (like a binary counter's carries), and the root folds them
    right to left. Persist `subtrees` (or `to_bytes()`) next to the log to append in O(log n) and
    to know the current root without rereading every entry.
    """

    __slots__ = ("_hashes", "_size")

    def __init__(self) -> None:
        self._size = 0
        # Subtree roots left to right; their sizes follow from the bits of `_size`.
        self._hashes: list[bytes] = []

    @classmethod
    def from_subtrees(cls, subtrees: Iterable[tuple[int, bytes]]) -> Frontier:
        """Rebuild from persisted `(subtree size, subtree root)` pairs, largest first.

        The pairs are checked for the only shape a real frontier can have, so a damaged or edited
        stored state fails here instead of silently producing a wrong root later.
        """
        size = 0
        hashes: list[bytes] = []
        previous: int | None = None
        for width, digest in subtrees:
            if width <= 0 or width & (width - 1):
                raise AuditError(f"frontier state is malformed: subtree size {width} is not a power of two")
            if previous is not None and width >= previous:
                raise AuditError("frontier state is malformed: subtree sizes must strictly decrease")
            _require_hash(digest, what="frontier state is malformed: a subtree root", error=AuditError)
            previous = width
            size += width
            hashes.append(digest)
        frontier = cls()
        frontier._size = size
        frontier._hashes = hashes
        return frontier

    @classmethod
    def from_bytes(cls, data: bytes) -> Frontier:
        """Inverse of `to_bytes`."""
        if len(data) < _SIZE_BYTES:
            raise AuditError("frontier state is malformed: too short")
        size = int.from_bytes(data[:_SIZE_BYTES], "big")
        body = data[_SIZE_BYTES:]
        if len(body) != HASH_SIZE * size.bit_count():
            raise AuditError(f"frontier state is malformed: wrong length for size {size}")
        hashes = [body[i : i + HASH_SIZE] for i in range(0, len(body), HASH_SIZE)]
        return cls.from_subtrees(zip(_subtree_sizes(size), hashes, strict=True))

    @property
    def size(self) -> int:
        """Number of leaves appended so far."""
        return self._size

    @property
    def subtrees(self) -> list[tuple[int, bytes]]:
        """`(subtree size, subtree root)` pairs, largest first: the state to persist."""
        return list(zip(_subtree_sizes(self._size), self._hashes, strict=True))

    def to_bytes(self) -> bytes:
        """Compact encoding: 8-byte big-endian size followed by the subtree roots."""
        return self._size.to_bytes(_SIZE_BYTES, "big") + b"".join(self._hashes)

    def copy(self) -> Frontier:
        other = Frontier()
        other._size = self._size
        other._hashes = list(self._hashes)
        return other

    def append(self, leaf: bytes) -> None:
        """Append one leaf hash (O(log n) hashing in the worst case, O(1) on average)."""
        self.extend((leaf,))

    def extend(self, leaves: Iterable[bytes]) -> None:
        """Append leaf hashes in order; this is the hot loop of `audit verify`.

        Written for CPython speed (locals, no helper calls): each leaf costs one list push plus,
        on average, one node hash. A bad leaf or a failing iterator leaves the frontier at the
        last good size, never half-merged.
        """
        stack = self._hashes
        push = stack.append
        pop = stack.pop
        sha = _sha256
        prefix = _NODE_PREFIX
        n = self._size
        try:
            for leaf in leaves:
                # Checked before touching the stack: a wrong-typed or short value must not leave a
                # popped, unmerged subtree behind.
                if leaf.__class__ is not bytes or len(leaf) != HASH_SIZE:
                    raise AuditError(f"leaf {n} is not a {HASH_SIZE}-byte hash")
                n += 1
                # One merge per trailing zero bit of the new size: that many equal-sized subtrees
                # at the right edge now pair up.
                h = leaf
                m = n
                while not m & 1:
                    h = sha(prefix + pop() + h).digest()
                    m >>= 1
                push(h)
        finally:
            self._size = n

    def root(self) -> bytes:
        """Root of the tree of `size` leaves: the subtree roots folded right to left."""
        hashes = self._hashes
        if not hashes:
            return EMPTY_ROOT
        result = hashes[-1]
        for h in reversed(hashes[:-1]):
            result = _sha256(_NODE_PREFIX + h + result).digest()
        return result

    # Mutable like a list, so equality by value and no hash.
    __hash__ = None  # type: ignore[assignment]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Frontier):
            return NotImplemented
        return self._size == other._size and self._hashes == other._hashes

    def __repr__(self) -> str:
        return f"Frontier(size={self._size}, root={self.root().hex()})"


def _subtree_sizes(size: int) -> list[int]:
    """Powers of two in `size`, largest first: the widths of a frontier's subtrees."""
    return [1 << bit for bit in range(size.bit_length() - 1, -1, -1) if size >> bit & 1]


def root_of(leaf_hashes: Iterable[bytes]) -> tuple[int, bytes]:
    """Stream leaf hashes once and return `(size, root)`, holding O(log n) hashes in memory."""
    frontier = Frontier()
    frontier.extend(leaf_hashes)
    return frontier.size, frontier.root()


def _range_root(leaves: Sequence[bytes], start: int, end: int) -> bytes:
    """MTH of `leaves[start:end]`; every subtree root a proof needs is one such range."""
    return root_of(leaves[start:end])[1]


def inclusion_proof(*, leaves: Sequence[bytes], index: int, size: int) -> list[bytes]:
    """Audit path of leaf `index` in the tree of the first `size` leaves (RFC 6962 §2.1.1 PATH).

    The path is ordered from the leaf's sibling up to the child of the root. Costs O(size) hashing:
    every sibling subtree root is recomputed from `leaves`.
    """
    if not 0 <= size <= len(leaves):
        raise AuditError(f"no tree of size {size}: the log has {len(leaves)} entries")
    if not 0 <= index < size:
        raise AuditError(f"no leaf {index} in a tree of size {size}")
    path: list[bytes] = []
    start, end = 0, size
    # Walk down from the root, collecting the sibling of the side that holds the leaf; the RFC's
    # recursion emits them bottom-up, so reverse at the end.
    while end - start > 1:
        k = _split(end - start)
        if index < start + k:
            path.append(_range_root(leaves, start + k, end))
            end = start + k
        else:
            path.append(_range_root(leaves, start, start + k))
            start += k
    path.reverse()
    return path


def consistency_proof(*, leaves: Sequence[bytes], old_size: int, new_size: int) -> list[bytes]:
    """Proof that the first `old_size` leaves are a prefix of the first `new_size` (RFC 6962 §2.1.2).

    Empty when `old_size` is 0 or equals `new_size` (nothing to prove).
    """
    if not 0 <= new_size <= len(leaves):
        raise AuditError(f"no tree of size {new_size}: the log has {len(leaves)} entries")
    if not 0 <= old_size <= new_size:
        raise AuditError(f"no consistency proof from size {old_size} to size {new_size}")
    if old_size in (0, new_size):
        return []
    path: list[bytes] = []
    start, end, m = 0, new_size, old_size
    # `whole_old_tree` is the RFC's flag b: while we only ever went left, the subtree we stop at is
    # the whole old tree, whose root the verifier already has, so it is left out of the proof.
    whole_old_tree = True
    while m != end - start:
        k = _split(end - start)
        if m <= k:
            path.append(_range_root(leaves, start + k, end))
            end = start + k
        else:
            path.append(_range_root(leaves, start, start + k))
            start += k
            m -= k
            whole_old_tree = False
    if not whole_old_tree:
        path.append(_range_root(leaves, start, end))
    path.reverse()
    return path


def _require_hash(value: object, *, what: str, error: type[AuditError] = ProofInvalid) -> None:
    if not isinstance(value, bytes) or len(value) != HASH_SIZE:
        raise error(f"{what} is not a {HASH_SIZE}-byte hash")


def verify_inclusion(*, leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> None:
    """Check that `leaf_hash` is leaf `index` of the tree of `size` leaves with `root`.

    RFC 9162 §2.1.3.2. Raises `ProofInvalid`; returns None when the proof holds. `size` is only
    meaningful together with `root` (a signed checkpoint binds the two).
    """
    _require_hash(leaf_hash, what="leaf hash")
    _require_hash(root, what="root")
    for element in proof:
        _require_hash(element, what="proof element")
    if not 0 <= index < size:
        raise ProofInvalid(f"inclusion proof: no leaf {index} in a tree of size {size}")
    fn, sn = index, size - 1
    r = leaf_hash
    for p in proof:
        if sn == 0:
            raise ProofInvalid(f"inclusion proof for leaf {index} of {size} is too long")
        if fn & 1 or fn == sn:
            # We are a right child, or the last node of a level with no right sibling: the sibling
            # is on the left. Levels where the right edge has no sibling are skipped.
            r = _sha256(_NODE_PREFIX + p + r).digest()
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = _sha256(_NODE_PREFIX + r + p).digest()
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofInvalid(f"inclusion proof for leaf {index} of {size} is too short")
    if r != root:
        raise ProofInvalid(f"inclusion proof for leaf {index} of {size} does not lead to the root")


def verify_consistency(
    *, old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """Check that the tree of `old_size` leaves with `old_root` is a prefix of `new_size` / `new_root`.

    RFC 9162 §2.1.4.2. Raises `ProofInvalid`; returns None when the proof holds. For equal sizes
    the proof must be empty and the roots equal; from size 0 the proof must be empty and
    `old_root` must be the empty-tree root (stricter than the RFC, which leaves size 0 undefined).
    """
    _require_hash(old_root, what="old root")
    _require_hash(new_root, what="new root")
    for element in proof:
        _require_hash(element, what="proof element")
    if not 0 <= old_size <= new_size:
        raise ProofInvalid(f"consistency proof: size {old_size} cannot precede size {new_size}")
    if old_size == new_size:
        if proof:
            raise ProofInvalid("consistency proof between equal sizes must be empty")
        if old_root != new_root:
            raise ProofInvalid(f"two different roots for the same size {old_size}")
        return
    if old_size == 0:
        if proof:
            raise ProofInvalid("consistency proof from the empty tree must be empty")
        if old_root != EMPTY_ROOT:
            raise ProofInvalid("old root of size 0 is not the empty-tree root")
        return
    if not proof:
        raise ProofInvalid(f"consistency proof from {old_size} to {new_size} is empty")
    path = list(proof)
    # When the old tree is a perfect subtree on the left edge the prover omitted its root (the
    # verifier has it); put it back so both cases run the same loop.
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    # Skip the levels where the old tree's last node is a right child: its subtree is shared whole.
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofInvalid(f"consistency proof from {old_size} to {new_size} is too long")
        if fn & 1 or fn == sn:
            # Sibling on the left: part of both the old and the new tree.
            fr = _sha256(_NODE_PREFIX + c + fr).digest()
            sr = _sha256(_NODE_PREFIX + c + sr).digest()
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            # Sibling on the right: leaves appended after the old tree, in the new root only.
            sr = _sha256(_NODE_PREFIX + sr + c).digest()
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofInvalid(f"consistency proof from {old_size} to {new_size} is too short")
    if fr != old_root:
        raise ProofInvalid(f"consistency proof does not lead to the old root of size {old_size}")
    if sr != new_root:
        raise ProofInvalid(f"consistency proof does not lead to the new root of size {new_size}")
