"""A real SMART client: SMART's own Python client (`fhirclient`) through a full standalone patient
launch against the server on 127.0.0.1, then reading the patient's Observations with it.

The "browser" is a `requests` session that signs in as the patient and presses Allow. The session
cookie is Secure (`__Host-`), which a cookie jar keeps back over plain http even on loopback, so
the test carries it in a Cookie header itself."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import uvicorn
from fhirclient import client as smart_client
from fhirclient.models.observation import Observation

from medvault.web.pages import COOKIE
from tests.smart.support import PASSWORD, World, build_world

REDIRECT = "http://127.0.0.1:9/callback"  # loopback, never fetched: the test hands it to the client


@pytest.fixture
def served(vault_env: Any) -> Iterator[tuple[World, str]]:
    from medvault.api.app import create_app

    world = build_world(vault_env, redirect=REDIRECT)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(vault_env.settings), log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:  # uvicorn offers a flag, not an event: poll it, with a deadline
        assert thread.is_alive(), "the server did not start"
        assert time.monotonic() < deadline, "the server did not start within 30 s"
        time.sleep(0.02)
    try:
        yield world, f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def _hidden_fields(html: str) -> dict[str, str]:
    return dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', html))


def test_fhirclient_standalone_patient_launch(served: tuple[World, str]) -> None:
    import html as html_lib

    world, root = served
    settings = {
        "app_id": world.client_id,
        "api_base": f"{root}/fhir",
        "redirect_uri": REDIRECT,
        "scope": "patient/Observation.rs openid fhirUser offline_access",
    }
    app = smart_client.FHIRClient(settings=settings)
    authorize_url = app.authorize_url  # reads /fhir/metadata (public) for the OAuth endpoints
    assert authorize_url.startswith(f"{root}/oauth/authorize?")
    assert "code_challenge_method=S256" in authorize_url  # fhirclient 4.4 sends PKCE S256

    browser = requests.Session()
    signed = browser.post(
        f"{root}/login",
        data={"login": "pat@example.org", "password": PASSWORD, "code": ""},
        headers={"Origin": root},
        allow_redirects=False,
    )
    assert signed.status_code == 303, signed.text
    cookie = re.search(rf"{COOKIE}=([^;]+)", signed.headers["set-cookie"])
    assert cookie
    headers = {"Cookie": f"{COOKIE}={cookie.group(1)}"}
    page = browser.get(authorize_url, headers=headers, allow_redirects=False)
    assert page.status_code == 200, page.text
    assert "Growth Chart" in page.text
    form = {k: html_lib.unescape(v) for k, v in _hidden_fields(page.text).items()}
    form["decision"] = "approve"
    approved = browser.post(f"{root}/oauth/authorize", data=form, headers=headers, allow_redirects=False)
    assert approved.status_code == 303, approved.text
    callback = approved.headers["location"]
    assert callback.startswith(REDIRECT + "?code=")

    app.handle_callback(callback)
    assert app.ready
    assert app.patient_id == world.pid
    # perform_resources_iter: perform_resources() is deprecated in fhirclient 4.4 (same request).
    found = list(Observation.where({"patient": world.pid}).perform_resources_iter(app.server))
    assert sorted(o.id for o in found) == sorted(world.obs)
    assert sorted(o.code.text for o in found) == ["obs 0", "obs 1", "obs 2"]
    # And nothing of the other patient's, asked for directly.
    assert list(Observation.where({"patient": world.other}).perform_resources_iter(app.server)) == []
    # The refresh token works with the client's own reauthorize (rotation: a new one replaces it).
    old_refresh = app.server.auth.refresh_token
    app.reauthorize()
    assert app.server.auth.refresh_token not in (None, old_refresh)
    assert len(list(Observation.where({"patient": world.pid}).perform_resources_iter(app.server))) == 3
