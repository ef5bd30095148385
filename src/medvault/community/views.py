"""Scraping guard (issue 5 item 8): how much of the community one account or one address may read.

Every listing page, every profile view and every profile picture is counted per account (when signed in) and per client
address, in fixed one-hour windows (`limits.take`, in the request's own transaction); past a limit
the request is refused with `RateLimited` (the faces answer 429 with Retry-After). Separately, each
distinct profile or post an account reads in an hour is remembered as a keyed token; past
`alert_reads` distinct items the privacy officer gets one "community-reading" alert per account per
hour (audit/alerts.py), fixed text, naming the account only. Signed-out readers are limited per
address (an address is not a person, so no alert names it). The posts a listing returns count as
read (`count_listed`): a listing page shows their titles and openings, so paging through listings
is reading them, and one post listed and then opened counts once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy import delete, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from medvault.audit import alerts
from medvault.community import limits
from medvault.config import Settings
from medvault.store.crypto_context import CryptoContext
from medvault.store.models import Alert, CommunitySeen

__all__ = ["Budget", "count_listed", "count_view"]

HOUR = 3600
ViewKind = Literal["listing", "profile", "post", "picture"]


@dataclass(frozen=True)
class Budget:
    profile_account: int
    profile_address: int
    listing_account: int
    listing_address: int
    alert_reads: int

    @classmethod
    def from_settings(cls, settings: Settings) -> Budget:
        return cls(
            profile_account=settings.community_profile_views_per_hour,
            profile_address=settings.community_profile_views_per_hour_address,
            listing_account=settings.community_listing_pages_per_hour,
            listing_address=settings.community_listing_pages_per_hour_address,
            alert_reads=settings.community_alert_reads_per_hour,
        )


def _limits(budget: Budget, kind: ViewKind) -> tuple[limits.Limit, limits.Limit]:
    # A post page is a page of reading like a listing page: one budget for both. A profile picture
    # has a budget of its own as large as the profiles' (each profile page shows one), so that
    # fetching pictures alone is limited too and a profile visit is not counted twice.
    if kind == "picture":
        return (
            limits.Limit("picture-view-account", budget.profile_account, HOUR),
            limits.Limit("picture-view-address", budget.profile_address, HOUR),
        )
    if kind == "profile":
        return (
            limits.Limit("profile-view-account", budget.profile_account, HOUR),
            limits.Limit("profile-view-address", budget.profile_address, HOUR),
        )
    return (
        limits.Limit("listing-account", budget.listing_account, HOUR),
        limits.Limit("listing-address", budget.listing_address, HOUR),
    )


def _remember(session: Session, subject: bytes, hour: int, item: bytes) -> int:
    """Remember one distinct item read this hour; the number of distinct items so far."""
    row = {"subject": subject, "hour": hour, "item": item}
    module = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    session.execute(module.insert(CommunitySeen).values(**row).on_conflict_do_nothing())
    return int(
        session.execute(
            select(func.count())
            .select_from(CommunitySeen)
            .where(CommunitySeen.subject == subject, CommunitySeen.hour == hour)
        ).scalar_one()
    )


def count_view(
    *,
    session: Session,
    crypto: CryptoContext,
    budget: Budget,
    kind: ViewKind,
    account_id: str | None,
    address: str | None,
    item: str | None,
    now: datetime,
) -> Alert | None:
    """Count one view (raises RateLimited past a limit); for a profile or post (`item`: its id) read
    by an account, remember it and raise the reading alert past the threshold (returned)."""
    per_account, per_address = _limits(budget, kind)
    if address:
        limits.take(
            session=session,
            limit=per_address,
            subject=limits.subject_token(crypto, kind="address", value=address),
            now=now,
        )
    if account_id is None:
        return None
    subject = limits.subject_token(crypto, kind="account", value=account_id)
    limits.take(session=session, limit=per_account, subject=subject, now=now)
    if item is None or kind == "listing":
        return None
    # A member's picture and profile are one member read: one distinct item toward the alert.
    return _seen(session, crypto, budget, account_id, "profile" if kind == "picture" else kind, [item], now)


def count_listed(
    *,
    session: Session,
    crypto: CryptoContext,
    budget: Budget,
    account_id: str | None,
    items: list[str],
    now: datetime,
) -> Alert | None:
    """Remember the posts a listing showed an account (their titles and openings were read) toward
    the reading alert, as if each had been opened; the alert past the threshold (returned)."""
    if account_id is None or not items:
        return None
    return _seen(session, crypto, budget, account_id, "post", items, now)


def _seen(
    session: Session,
    crypto: CryptoContext,
    budget: Budget,
    account_id: str,
    kind: ViewKind,
    items: list[str],
    now: datetime,
) -> Alert | None:
    subject = limits.subject_token(crypto, kind="account", value=account_id)
    distinct = 0
    for item in items:
        token = crypto.indexer.search_token(b"community-seen", "CommunitySeen", kind, item)[:16]
        distinct = _remember(session, subject, alerts.hour_of(now), token)
    if distinct <= budget.alert_reads:
        return None
    return alerts.raise_hourly(session=session, kind="community-reading", account_id=account_id, now=now)


def prune(*, session: Session, before: datetime) -> None:
    """Drop remembered reads of hours that ended before `before`."""
    session.execute(delete(CommunitySeen).where(CommunitySeen.hour < alerts.hour_of(before)))
