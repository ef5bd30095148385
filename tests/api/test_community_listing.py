"""The community JSON listing (review finding M5): what the HTML listing shows (title and snippet),
the full body only from the single-post endpoint, and every listed post counted toward the
unusual-reading alert. Both backends."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import func, select

from medvault.db import unit_of_work
from medvault.store.models import Alert
from tests.web.community_support import Site, site


@pytest.fixture
def csite(vault_env: Any) -> Iterator[Site]:
    yield from site(vault_env, community_alert_reads_per_hour=3)


def _alerts(env: Any) -> int:
    with unit_of_work(env.factory) as session:
        return int(session.execute(select(func.count()).select_from(Alert)).scalar_one())


def _publish(s: Site, title: str, body: str) -> str:
    doc = {"type": "question", "title": title, "body": body, "audience": "members", "confirm": True}
    created = s.api("POST", "/community/api/posts", "author", json=doc)
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


def test_the_json_listing_gives_snippets_and_counts_what_it_lists(csite: Site) -> None:
    long = "x" * 500 + " Full-body-tail-777"
    ids = [_publish(csite, f"T{n}", long) for n in range(4)]
    assert _alerts(csite.env) == 0
    listing = csite.api("GET", "/community/api/posts", "member").json()
    assert {p["id"] for p in listing["posts"]} == set(ids)
    for post in listing["posts"]:
        assert "body" not in post
        assert "Full-body-tail-777" not in post["snippet"]
        assert post["snippet"].startswith("x" * 100)
        assert post["title"].startswith("T")
    assert _alerts(csite.env) == 1  # four distinct posts listed, past the threshold of three
    html = csite.get("/community", "member").text
    assert all(p["snippet"].rstrip("…")[:150] in html for p in listing["posts"])  # the same as the page
    one = csite.api("GET", f"/community/api/posts/{ids[0]}", "member").json()
    assert one["post"]["body"].endswith("Full-body-tail-777")


def test_the_html_listing_counts_what_it_lists(csite: Site) -> None:
    for n in range(4):
        _publish(csite, f"T{n}", "body")
    assert csite.get("/community", "member").status_code == 200
    assert _alerts(csite.env) == 1
