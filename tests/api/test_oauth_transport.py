"""OAuth endpoints over plain http to a non-loopback host: an OAuth error answer, never a 500
(found by the schemathesis run: Authlib refuses the transport before its own error handling)."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.mark.parametrize(
    ("path", "form"),
    [
        ("/oauth/token", {"grant_type": "authorization_code", "code": "x", "client_id": "y"}),
        ("/oauth/revoke", {"token": "x", "client_id": "y"}),
    ],
)
def test_plain_http_is_an_oauth_error(api: Any, path: str, form: dict[str, str]) -> None:
    r = api.post(path, data=form, headers={"Authorization": ""})  # base_url http://testserver
    assert r.status_code == 400
    assert r.json()["error"] == "insecure_transport"
