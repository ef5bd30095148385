"""Profile pictures count against the scraping guard (review finding L6): a budget of their own,
per account and per address, and one member read with their profile toward the alert."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import func, select

from medvault.db import unit_of_work
from medvault.store.models import CommunitySeen
from tests.web.community_support import Site, site


@pytest.fixture
def csite(vault_env: Any) -> Iterator[Site]:
    yield from site(vault_env, community_profile_views_per_hour_address=2, community_profile_views_per_hour=50)


def test_pictures_are_limited_per_address_like_profiles(csite: Site) -> None:
    handle = csite.people["author"].member_id
    answers = [csite.get(f"/community/members/{handle}/picture").status_code for _ in range(3)]
    assert answers == [404, 404, 429]  # no picture: still counted (probing counts)
    limited = csite.get("/community/members/0123456789abcdef0123/picture")
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) > 0


def test_a_picture_and_its_profile_are_one_distinct_read(vault_env: Any) -> None:
    for s in site(vault_env):
        handle = s.people["author"].member_id
        s.get(f"/community/members/{handle}", "member")
        s.get(f"/community/members/{handle}/picture", "member")
        with unit_of_work(vault_env.factory) as session:
            assert session.execute(select(func.count()).select_from(CommunitySeen)).scalar_one() == 1
