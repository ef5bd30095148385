""" "People near me" in a real browser (Chromium at /usr/bin/chromium) at phone width, keyboard
only: a patient turns the directory on and sees neighbours by band, without sideways scrolling."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.web.test_browser import CHROMIUM, PHONE, _free_port, _no_sideways_scroll
from tests.web.test_community_directory_pages import CITY, PASSWORD, POLICY, _account, neighbours

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Chromium at /usr/bin/chromium (bin/test)")
SHOTS = os.environ.get("MEDVAULT_SCREENSHOTS")  # a folder: keep screenshots to look at


@pytest.fixture
def near_site(vault_env: Any) -> Iterator[str]:
    import uvicorn

    from medvault.api.app import create_app

    neighbours(vault_env)  # the same 11 members as the page tests
    port = _free_port()
    app = create_app(vault_env.settings)
    app.state.community_directory_policy = POLICY
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:  # uvicorn has no event to wait on; `started` flips once it listens
        assert thread.is_alive(), "uvicorn stopped while starting"
        assert time.monotonic() < deadline, "uvicorn did not start within 30 s"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.mark.parametrize("backend", ["sqlite"])  # one backend: the storage legs run on both elsewhere
def test_keyboard_only_opt_in_at_phone_width(vault_env: Any, near_site: str) -> None:
    from playwright.sync_api import sync_playwright

    _account(vault_env, "walker@example.org", "patient")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = browser.new_context(viewport=PHONE).new_page()
            page.goto(f"{near_site}/login")
            page.get_by_label("Login name").fill("walker@example.org")
            page.get_by_label("Password").fill(PASSWORD)
            page.keyboard.press("Enter")
            page.wait_for_url(f"{near_site}/")
            page.goto(f"{near_site}/community/near")
            _no_sideways_scroll(page)
            if SHOTS:
                page.screenshot(path=f"{SHOTS}/near-opt-in.png", full_page=True)
            page.get_by_label("Country").focus()
            page.keyboard.press("Tab")
            assert page.evaluate("document.activeElement.name") == "postcode"
            page.keyboard.type(CITY[2])
            page.keyboard.press("Tab")
            page.keyboard.type("Walker")
            # The form posts, then redirects back to this same URL: wait for that load, not the URL.
            with page.expect_navigation(url=f"{near_site}/community/near"):
                page.keyboard.press("Enter")
            assert page.get_by_role("heading", name="Members near you").is_visible()
            assert page.locator("ul.cards li").count() == 5
            assert page.get_by_text("Neighbour", exact=False).first.is_visible()
            _no_sideways_scroll(page)
            outline = page.evaluate(
                "(() => { const a = document.querySelector('a[href*=\"page=2\"]'); a.focus();"
                " return getComputedStyle(a).outlineStyle; })()"
            )
            assert outline == "solid"  # keyboard focus is visible
            if SHOTS:
                page.screenshot(path=f"{SHOTS}/near-listed.png", full_page=True)
        finally:
            browser.close()
