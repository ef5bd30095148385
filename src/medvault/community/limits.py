"""Per-account and per-address rate limits for the community (issue 5 items 5 and 8).

A fixed window per (bucket, subject): one upsert that returns the new count, so concurrent requests
cannot both slip under the limit (the row lock serialises them on PostgreSQL; SQLite has one
writer). The subject is a keyed token, so the table holds no account id or client address.
Counts are taken in the caller's transaction: a request that fails and rolls back is not counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from medvault.community.errors import RateLimited
from medvault.store.models import CommunityRate

if TYPE_CHECKING:
    from medvault.store.crypto_context import CryptoContext

__all__ = ["Limit", "prune", "subject_token", "take"]


@dataclass(frozen=True)
class Limit:
    """At most `count` hits per `seconds`-long window in `bucket` (a short fixed name)."""

    bucket: str
    count: int
    seconds: int

    def __post_init__(self) -> None:
        if not self.bucket or len(self.bucket) > 32 or self.count < 1 or self.seconds < 1:
            raise ValueError("a limit needs a bucket name of 1-32 characters and positive count and seconds")


def subject_token(crypto: CryptoContext, *, kind: str, value: str) -> bytes:
    """A keyed 16-byte token of an account id (`kind="account"`) or client address (`"address"`)."""
    return crypto.indexer.search_token(b"community-rate", "CommunityRate", kind, value)[:16]


def _window(limit: Limit, now: datetime) -> int:
    if now.tzinfo is None:
        raise ValueError("rate limits need an aware datetime")
    return int(now.timestamp()) // limit.seconds


def take(*, session: Session, limit: Limit, subject: bytes, now: datetime, hits: int = 1) -> int:
    """Count `hits` against `subject` in the current window and return the new count; raise
    `RateLimited` (with seconds until the window ends) once the count goes over the limit."""
    window = _window(limit, now)
    values: dict[str, Any] = {"bucket": limit.bucket, "subject": subject, "window": window, "count": hits}
    dialect = session.get_bind().dialect.name
    module: Any = postgresql if dialect == "postgresql" else sqlite
    stmt = (
        module.insert(CommunityRate)
        .values(**values)
        .on_conflict_do_update(
            index_elements=["bucket", "subject", "window"],
            set_={"count": CommunityRate.count + hits},
        )
        .returning(CommunityRate.count)
    )
    count = int(session.execute(stmt).scalar_one())
    if count > limit.count:
        retry_after = (window + 1) * limit.seconds - int(now.timestamp())
        raise RateLimited("too many requests; try again later", retry_after=max(1, retry_after))
    return count


def prune(*, session: Session, limit: Limit, before: datetime) -> int:
    """Delete the limit's counters of windows that ended before `before`."""
    stale = _window(limit, before)
    result: Any = session.execute(
        delete(CommunityRate).where(CommunityRate.bucket == limit.bucket, CommunityRate.window < stale)
    )
    return int(result.rowcount or 0)
