"""Long-lived crypto state for one process: key ring, sealer, indexer and unwrapped data keys."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import delete, event, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from medvault.config import Settings
from medvault.crypto.envelope import Sealer, new_data_key
from medvault.crypto.errors import KeyMismatch, KeyMissing
from medvault.crypto.indexes import Indexer
from medvault.crypto.keys import KeyRing, Purpose
from medvault.store.models import DataKey, Meta

CACHE_SIZE = 8192
SHARED_OWNER = b"\x00" * 16  # data key for resources outside any patient's compartment


@dataclass
class CryptoContext:
    keyring: KeyRing
    sealer: Sealer
    indexer: Indexer
    _by_owner: OrderedDict[tuple[str, bytes], tuple[int, AESGCM]] = field(default_factory=OrderedDict)
    _by_id: OrderedDict[int, AESGCM] = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _remember(self, purpose: str, owner: bytes, dk_id: int, key: AESGCM) -> None:
        with self._lock:
            self._by_owner[(purpose, owner)] = (dk_id, key)
            self._by_id[dk_id] = key
            while len(self._by_owner) > CACHE_SIZE:
                self._by_owner.popitem(last=False)
            while len(self._by_id) > CACHE_SIZE:
                self._by_id.popitem(last=False)

    def data_key(self, session: Session, *, purpose: Purpose, owner: bytes) -> tuple[int, AESGCM]:
        """The data key of one owner (patient pseudonym, identity handle, or shared), made on first use."""
        with self._lock:
            hit = self._by_owner.get((purpose, owner))
        if hit:
            return hit
        fresh = self._pending(session).get((purpose, owner))
        if fresh:
            return fresh  # made earlier in this (uncommitted) transaction
        # Core statements, not ORM objects: a patient's first resources make two keys, and the ORM
        # unit of work was most of that cost during import.
        found = session.execute(
            select(DataKey.id, DataKey.kek_id, DataKey.wrapped).where(
                DataKey.purpose == purpose, DataKey.owner == owner
            )
        ).first()
        if found is None:
            raw = new_data_key()
            kid, wrapped = self.keyring.wrap(purpose=purpose, owner=owner, data_key=raw)
            dk_id = secrets.randbits(62) or 1
            try:
                with session.begin_nested():
                    session.execute(
                        insert(DataKey).values(id=dk_id, purpose=purpose, owner=owner, kek_id=kid, wrapped=wrapped)
                    )
                    active = self.keyring.active_kid(purpose)
                    if active != kid:
                        # A rotation switched KEKs while we wrapped: use the new one, so the rotation
                        # never has to keep (or retire too early) a KEK for a key made meanwhile.
                        kid, wrapped = self.keyring.wrap(purpose=purpose, owner=owner, data_key=raw, kid=active)
                        session.execute(update(DataKey).where(DataKey.id == dk_id).values(kek_id=kid, wrapped=wrapped))
            except IntegrityError:  # another writer made it first: use theirs
                dk_id, kid, wrapped = session.execute(
                    select(DataKey.id, DataKey.kek_id, DataKey.wrapped).where(
                        DataKey.purpose == purpose, DataKey.owner == owner
                    )
                ).one()
                raw = self.keyring.unwrap(purpose=purpose, owner=owner, kid=kid, wrapped=wrapped)
        else:
            dk_id, kid, wrapped = found
            raw = self.keyring.unwrap(purpose=purpose, owner=owner, kid=kid, wrapped=wrapped)
        key = AESGCM(raw)
        # Cached only once the transaction commits: a key row that is rolled back (a failed
        # transaction or batch entry) must never be used again.
        self._pending(session)[(purpose, owner)] = (dk_id, key)
        return dk_id, key

    def _pending(self, session: Session) -> dict[tuple[str, bytes], tuple[int, AESGCM]]:
        pending: dict[tuple[str, bytes], tuple[int, AESGCM]] | None = session.info.get("medvault_new_keys")
        if pending is None:
            pending = session.info["medvault_new_keys"] = {}

            def committed(s: Session) -> None:
                if s.get_nested_transaction() is not None:
                    return  # a savepoint was released (SQLAlchemy fires after_commit for it too)
                for (p, o), (dk_id, k) in pending.items():
                    self._remember(p, o, dk_id, k)
                pending.clear()

            def rolled_back(_s: Session, _previous: object) -> None:
                # Any rollback, savepoints included (a batch entry): forget every new key; ones
                # whose rows survived are simply read back from the table on next use.
                pending.clear()

            event.listen(session, "after_commit", committed)
            event.listen(session, "after_soft_rollback", rolled_back)
        return pending

    def destroy_data_key(self, session: Session, *, purpose: Purpose, owner: bytes) -> bool:
        """Crypto-shred: delete one owner's data key row and forget it in this process, so that
        everything sealed under it is unreadable for good (backups aside, which expire). True when
        a key existed. Takes effect for other processes once their caches miss (CACHE_SIZE)."""
        found = session.execute(
            select(DataKey.id).where(DataKey.purpose == purpose, DataKey.owner == owner)
        ).scalar_one_or_none()
        self._pending(session).pop((purpose, owner), None)
        with self._lock:
            hit = self._by_owner.pop((purpose, owner), None)
            if hit is not None:
                self._by_id.pop(hit[0], None)
            if found is not None:
                self._by_id.pop(found, None)
        if found is None:
            return False
        session.execute(delete(DataKey).where(DataKey.id == found))
        return True

    def data_key_by_id(self, session: Session, dk_id: int) -> AESGCM:
        with self._lock:
            hit = self._by_id.get(dk_id)
        if hit:
            return hit
        for fresh_id, fresh_key in self._pending(session).values():
            if fresh_id == dk_id:
                return fresh_key
        row = session.get(DataKey, dk_id)
        if row is None:
            # Crypto-shredded (or the key table was tampered with): the data is gone for good.
            raise KeyMissing("the data key for this record no longer exists")
        raw = self.keyring.unwrap(
            purpose=row.purpose,  # type: ignore[arg-type]
            owner=row.owner,
            kid=row.kek_id,
            wrapped=row.wrapped,
        )
        key = AESGCM(raw)
        self._pending(session)[(row.purpose, row.owner)] = (row.id, key)
        return key


def index_key_check(keyring: KeyRing) -> str:
    """A short MAC that tells whether index.key is the one the database was initialised with."""
    return hmac.new(keyring.index_key("check"), b"medvault index key check", hashlib.sha256).hexdigest()[:16]


ENCRYPTION_REQUIRED = "required"
ENCRYPTION_BENCHMARK_PLAINTEXT = "disabled-for-benchmark"


def read_meta(session: Session, key: str) -> str | None:
    row = session.get(Meta, key)
    return row.value if row else None


def build_crypto(settings: Settings, session: Session) -> CryptoContext:
    keyring = KeyRing(settings.keys_path)
    if not keyring.exists():
        raise KeyMissing(
            f"no keys in {settings.keys_path}: run `medvault init` first, or set MEDVAULT_KEY_DIR to the key directory"
        )
    bits = read_meta(session, "blind_index_bits")
    if bits is None:
        raise KeyMissing("the database is not initialised: run `medvault init`")
    check = read_meta(session, "index_key_check")
    if check is not None and check != index_key_check(keyring):
        # Without this, a wrong index.key would make every search silently return nothing.
        raise KeyMismatch(f"index.key in {settings.keys_path} does not belong to this database")
    indexer = Indexer(
        pseudonym_key=keyring.index_key("pseudonym"),
        handle_key=keyring.index_key("identity-handle"),
        token_key=keyring.index_key("search-token"),
        blind_key=keyring.index_key("blind-index"),
        blind_bits=int(bits),
        content_key=keyring.index_key("content-id"),
    )
    # The store remembers at init whether it is encrypted. Without this, a stray benchmark switch
    # on a production data dir would silently write plaintext next to ciphertext. Stores made
    # before the marker existed are encrypted ones.
    mode = read_meta(session, "encryption") or ENCRYPTION_REQUIRED
    if mode == ENCRYPTION_REQUIRED and settings.unsafe_disable_encryption:
        raise KeyMismatch("this store requires encryption: unset MEDVAULT_UNSAFE_DISABLE_ENCRYPTION")
    if mode != ENCRYPTION_REQUIRED and not settings.unsafe_disable_encryption:
        raise KeyMismatch("this is a plaintext benchmark store; it cannot be opened as a vault")
    sealer = Sealer(enabled=not settings.unsafe_disable_encryption)
    return CryptoContext(keyring=keyring, sealer=sealer, indexer=indexer)
