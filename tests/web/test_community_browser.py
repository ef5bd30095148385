"""Issue 5's browser acceptance, in a real Chromium (Playwright) at phone width against the real app
on 127.0.0.1: a member joins, writes a members-only post and is shown the disclosure warning for a
phone number before anything is published; after "publish anyway" the post is there for her; a
signed-out visitor sees neither the post nor its title (not in the listing, not at its URL, not in
the feed)."""

from __future__ import annotations

import os
from typing import Any

import pytest

from medvault.records import service
from tests.helpers import open_vault
from tests.web import support
from tests.web.support import new_account
from tests.web.test_browser import PHONE, _no_sideways_scroll

served = support.served  # the fixture
CHROMIUM = "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Chromium at /usr/bin/chromium (bin/test)")

LOGIN, PASSWORD = "wren@example.org", "a long and private passphrase"
TITLE = "Anyone else tired after the new dose"
PHONE_TEXT = "555-867-5309"


@pytest.mark.parametrize("backend", ["sqlite"])  # one backend: the storage legs run in the matrix on both
def test_member_sees_the_phone_warning_and_a_visitor_sees_nothing_of_the_post(vault_env: Any, served: str) -> None:
    from playwright.sync_api import sync_playwright

    base = served
    with open_vault(vault_env) as v:
        pid = service.create(vault=v, resource={"resourceType": "Patient", "gender": "female"}).rid
    new_account(vault_env, login=LOGIN, password=PASSWORD, role="patient", patient_id=pid)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            member = browser.new_context(viewport=PHONE).new_page()
            visitor = browser.new_context(viewport=PHONE).new_page()
            console_errors: list[str] = []
            for page in (member, visitor):
                page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)

            member.goto(f"{base}/login")
            member.get_by_label("Login name").fill(LOGIN)
            member.get_by_label("Password").fill(PASSWORD)
            member.get_by_role("button", name="Sign in").click()
            member.wait_for_url(f"{base}/")
            member.get_by_role("link", name="Community").first.click()
            member.wait_for_url(f"{base}/community")
            member.get_by_role("button", name="Join the community").click()
            member.get_by_role("link", name="Write a post").click()
            member.wait_for_url(f"{base}/community/write")
            _no_sideways_scroll(member)
            assert member.get_by_label("Members only").is_checked()  # the default audience
            member.get_by_label("Title").fill(TITLE)
            member.get_by_label("Text").fill(
                f"It knocks me out every afternoon. Happy to talk: call me on {PHONE_TEXT}"
            )
            member.get_by_role("button", name="Publish").click()

            # The preview: the number highlighted with its reason, nothing published yet.
            mark = member.locator("mark")
            assert mark.count() == 1
            assert mark.inner_text() == PHONE_TEXT
            assert "phone number" in member.locator(".reason").first.inner_text()
            assert member.get_by_role("alert").first.is_visible()
            _no_sideways_scroll(member)
            elsewhere = member.context.new_page()  # the same member in another tab
            elsewhere.goto(f"{base}/community")
            assert TITLE not in elsewhere.content()
            elsewhere.close()
            member.get_by_role("button", name="Publish anyway").click()
            member.wait_for_url(f"{base}/community/posts/*")
            post_url = member.url
            assert member.get_by_role("heading", name=TITLE).is_visible()
            assert "Members only" in member.content()
            _no_sideways_scroll(member)

            # A signed-out visitor: not in the listing, not at the URL, not in the feed.
            visitor.goto(f"{base}/community")
            assert TITLE not in visitor.content()
            assert "1 post" not in visitor.content()
            response = visitor.goto(post_url)
            assert response is not None
            assert response.status == 404
            assert TITLE not in visitor.content()
            assert TITLE not in visitor.title()
            assert "sign in" in visitor.content()
            feed = visitor.request.get(f"{base}/community/feed.xml")
            assert feed.ok
            assert TITLE not in feed.text()
            _no_sideways_scroll(visitor)
            assert [m for m in console_errors if "Content Security Policy" in m] == []
        finally:
            browser.close()
