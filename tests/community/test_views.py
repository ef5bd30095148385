"""Scraping guard: per-account and per-address view limits, and the privacy officer's alert for an
account reading unusually many distinct profiles or posts. Both backends."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from medvault.audit import alerts
from medvault.community import views
from medvault.community.errors import RateLimited
from medvault.db import unit_of_work
from medvault.store.models import Alert, CommunitySeen
from tests.community.support import NOW

BUDGET = views.Budget(profile_account=3, profile_address=5, listing_account=4, listing_address=6, alert_reads=2)


def _view(
    env: Any, kind: str, *, account: str | None, address: str | None, item: str | None = None, now: Any = NOW
) -> Any:
    with unit_of_work(env.factory) as session:
        return views.count_view(
            session=session,
            crypto=env.crypto,
            budget=BUDGET,
            kind=kind,  # type: ignore[arg-type]
            account_id=account,
            address=address,
            item=item,
            now=now,
        )


def test_profile_views_are_limited_per_account_then_per_address(vault_env: Any) -> None:
    for n in range(3):
        _view(vault_env, "profile", account="acct-1", address="203.0.113.1", item=f"m{n}")
    with pytest.raises(RateLimited) as refused:
        _view(vault_env, "profile", account="acct-1", address="203.0.113.1", item="m9")
    assert 0 < refused.value.retry_after <= 3600
    # Another account from another address is not affected...
    _view(vault_env, "profile", account="acct-2", address="198.51.100.7", item="m1")
    # ...but the first address is nearly spent (3 counted + 1 refused and rolled back): visitors share it.
    _view(vault_env, "profile", account=None, address="203.0.113.1")
    _view(vault_env, "profile", account=None, address="203.0.113.1")
    with pytest.raises(RateLimited):
        _view(vault_env, "profile", account=None, address="203.0.113.1")
    # The next hour starts afresh.
    _view(vault_env, "profile", account="acct-1", address="203.0.113.1", item="m0", now=NOW + timedelta(hours=1))


def test_listing_pages_are_limited_per_address_for_visitors(vault_env: Any) -> None:
    for _ in range(6):
        _view(vault_env, "listing", account=None, address="192.0.2.9")
    with pytest.raises(RateLimited):
        _view(vault_env, "listing", account=None, address="192.0.2.9")


def test_reading_many_distinct_items_raises_one_alert_per_account_per_hour(vault_env: Any) -> None:
    big = views.Budget(
        profile_account=100, profile_address=100, listing_account=100, listing_address=100, alert_reads=2
    )
    raised = []
    for item in ("p1", "p1", "p2", "p3", "p4"):  # a repeat is not a new item
        with unit_of_work(vault_env.factory) as session:
            raised.append(
                views.count_view(
                    session=session,
                    crypto=vault_env.crypto,
                    budget=big,
                    kind="post",
                    account_id="reader-1",
                    address=None,
                    item=item,
                    now=NOW,
                )
            )
    assert [a is not None for a in raised] == [False, False, False, True, False]
    with unit_of_work(vault_env.factory) as session:
        (alert,) = alerts.list_alerts(session=session)
        assert alert.kind == "community-reading"
        assert alert.account_id == "reader-1"
        assert "p3" not in alert.detail
        # Neither the account nor the items are stored in the clear.
        rows = session.execute(select(CommunitySeen.subject, CommunitySeen.item)).all()
        assert len({item for _s, item in rows}) == 4
        assert all(len(item) >= 12 and b"p1" not in item for _s, item in rows)
        assert all(b"reader-1" not in subject for subject, _i in rows)
        views.prune(session=session, before=NOW + timedelta(hours=2))
        assert session.execute(select(CommunitySeen)).first() is None
        assert session.execute(select(Alert.id)).all() != []


def test_posts_shown_by_a_listing_count_toward_the_reading_alert_once_each(vault_env: Any) -> None:
    # Review finding M5: listings were never counted, so 12,000 posts an hour raised no alert.
    def listed(items: list[str]) -> Alert | None:
        with unit_of_work(vault_env.factory) as session:
            return views.count_listed(
                session=session, crypto=vault_env.crypto, budget=BUDGET, account_id="acct-1", items=items, now=NOW
            )

    assert listed(["p1", "p2"]) is None  # two distinct: at the threshold (alert_reads=2)
    assert listed(["p1", "p2"]) is None  # the same posts again are not new reads
    assert _view(vault_env, "post", account="acct-1", address=None, item="p2") is None  # opened after listed: once
    alert = listed(["p3"])
    assert alert is not None
    assert alert.kind == "community-reading"
    with unit_of_work(vault_env.factory) as session:
        assert len(session.execute(select(CommunitySeen)).scalars().all()) == 3
        assert (
            views.count_listed(
                session=session, crypto=vault_env.crypto, budget=BUDGET, account_id=None, items=["p9"], now=NOW
            )
            is None
        )  # signed out: no account to alert about
