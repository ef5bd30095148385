"""Sealing what members write: one place that turns a member's text into a blob at rest and back.

Everything is sealed under the *author's* own data key (purpose "identity", owner
`Member.key_owner`), so deleting the account destroys that key and every copy of what they wrote
(backups included, once they expire) is unreadable. The associated data names the table, row, column
and revision: a blob copied into another row, column or revision fails authentication.
"""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy.orm import Session

from medvault.store.crypto_context import CryptoContext

__all__ = ["aad", "open_json", "open_raw", "seal_json", "seal_raw"]


def aad(table: str, row_id: str, column: str, revision: int = 0) -> bytes:
    return f"medvault:community:v1|{table}|{row_id}|{column}|{revision}".encode()


def seal_raw(*, session: Session, crypto: CryptoContext, owner: bytes, data: bytes, bound: bytes) -> bytes:
    _dk_id, key = crypto.data_key(session, purpose="identity", owner=owner)
    return crypto.sealer.seal(key, data, bound)


def open_raw(*, session: Session, crypto: CryptoContext, owner: bytes, blob: bytes, bound: bytes) -> bytes:
    _dk_id, key = crypto.data_key(session, purpose="identity", owner=owner)
    return crypto.sealer.open(key, blob, bound)


def seal_json(*, session: Session, crypto: CryptoContext, owner: bytes, value: Any, bound: bytes) -> bytes:
    return seal_raw(session=session, crypto=crypto, owner=owner, data=orjson.dumps(value), bound=bound)


def open_json(*, session: Session, crypto: CryptoContext, owner: bytes, blob: bytes, bound: bytes) -> Any:
    return orjson.loads(open_raw(session=session, crypto=crypto, owner=owner, blob=blob, bound=bound))
