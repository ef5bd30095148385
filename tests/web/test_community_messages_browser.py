"""Acceptance in a real Chromium at phone width: member A messages member B (passing the contact-
details step once), B reports one message, a moderator signs in with TOTP and finds exactly that
message in the queue, alone: none of the other messages of the conversation."""

from __future__ import annotations

import os
from typing import Any

import pytest

from medvault.community import members
from medvault.db import unit_of_work
from medvault.records import service
from tests.helpers import open_vault
from tests.web.support import enrolled
from tests.web.test_browser import CHROMIUM, PHONE, _no_sideways_scroll, _sign_in, served  # noqa: F401

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Chromium at /usr/bin/chromium")
PASSWORD = "a long and private passphrase"
FIRST = "Did the new physio exercises help your knees?"
REPORTED = "Nobody wants you in this group, leave now"
PHONE_TEXT = "Call me on 0612 345 678 if you like"


def _account(env: Any, login: str, role: str, **link: str) -> tuple[str, str]:
    """(account id, TOTP secret): confirmed with the previous step's code, so the current is unused."""
    return enrolled(env, login=login, password=PASSWORD, role=role, **link)


@pytest.mark.parametrize("backend", ["sqlite"])  # the storage legs run on both backends elsewhere
def test_a_reported_message_reaches_the_moderator_queue_alone(vault_env: Any, served: str) -> None:  # noqa: F811
    from playwright.sync_api import sync_playwright

    env, base = vault_env, served
    with open_vault(env) as v:
        pids = [service.create(vault=v, resource={"resourceType": "Patient", "gender": "other"}).rid for _ in range(2)]
    a_id, a_secret = _account(env, "ann@example.org", "patient", patient_id=pids[0])
    b_id, b_secret = _account(env, "bob@example.org", "patient", patient_id=pids[1])
    _m_id, m_secret = _account(env, "mod@example.org", "moderator")

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        console_errors: list[str] = []
        try:
            ann, bob, mod = (browser.new_context(viewport=PHONE).new_page() for _ in range(3))
            for page in (ann, bob, mod):
                page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)

            _sign_in(bob, base, "bob@example.org", PASSWORD, b_secret)
            bob.get_by_role("link", name="Messages").click()
            bob.wait_for_url(f"{base}/community/messages")
            bob_handle = _handle(env, b_id)

            _sign_in(ann, base, "ann@example.org", PASSWORD, a_secret)
            ann.get_by_role("link", name="Messages").click()
            _no_sideways_scroll(ann)
            ann.get_by_label("Member handle").fill(bob_handle)
            ann.get_by_role("button", name="Open conversation").click()
            ann.wait_for_url(f"{base}/community/messages/*")
            for text in (FIRST, REPORTED):
                ann.get_by_label("Your message").fill(text)
                ann.get_by_role("button", name="Send", exact=True).click()
                ann.wait_for_load_state()
            ann.get_by_label("Your message").fill(PHONE_TEXT)
            ann.get_by_role("button", name="Send", exact=True).click()
            ann.get_by_text("Think before you share").wait_for()
            assert ann.locator("mark").count() == 1  # the phone number, highlighted
            _no_sideways_scroll(ann)
            ann.get_by_label("I know this member and want to send these details anyway").check()
            ann.get_by_role("button", name="Send anyway").click()
            ann.wait_for_load_state()
            assert ann.locator("ol.thread li").count() == 3

            bob.goto(f"{base}/community/messages")
            assert bob.get_by_text("3 unread").count() == 1
            bob.get_by_role("link", name=f"Member {_handle(env, a_id)}").click()
            bob.wait_for_url(f"{base}/community/messages/*")
            _no_sideways_scroll(bob)
            reported = bob.locator("ol.thread li").filter(has_text=REPORTED)
            reported.get_by_role("link", name="Report this message").click()
            bob.wait_for_url(f"{base}/community/report?*")
            bob.get_by_label("Harassment or abuse").check()
            bob.get_by_label("Note for the moderator (optional, up to 1000 characters)").fill("Second time this week")
            _no_sideways_scroll(bob)
            bob.get_by_role("button", name="Send report").click()
            bob.wait_for_url(f"{base}/community/messages?reported=1")

            _sign_in(mod, base, "mod@example.org", PASSWORD, m_secret)
            mod.get_by_role("link", name="Moderation").click()
            mod.wait_for_url(f"{base}/community/moderation")
            _no_sideways_scroll(mod)
            items = mod.locator("li.report-item")
            assert items.count() == 1
            assert items.locator("blockquote.snapshot").inner_text().strip() == REPORTED
            content = mod.content()
            assert FIRST not in content
            assert "0612" not in content
            assert "Second time this week" in content
            conversation = ann.url.split("#", 1)[0]
            refused = mod.goto(conversation)
            assert refused is not None
            assert refused.status == 404  # the moderator never opens the conversation
            assert REPORTED not in mod.content()
            assert [m for m in console_errors if "Content Security Policy" in m] == []
        finally:
            browser.close()


def _handle(env: Any, account_id: str) -> str:
    with unit_of_work(env.factory) as session:
        member = members.by_account(session=session, crypto=env.crypto, account_id=account_id)
    assert member is not None, "the account joined when it first opened its messages"
    return member.id
