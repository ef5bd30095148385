"""SMART on the command line: registering apps, operator tokens, and what init does with a token
file from before SMART."""

from __future__ import annotations

import re
import stat
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select

from medvault.db import unit_of_work
from medvault.smart import tokens
from medvault.store.models import OAuthClient
from tests.cli.test_cli import db_env, invoke


def _client(settings: Any) -> TestClient:
    from medvault.api.app import create_app

    return TestClient(create_app(settings), base_url="https://testserver")


def test_app_register_and_list(vault_env: Any) -> None:
    s = vault_env.settings
    env = db_env(s)
    public = invoke(
        "app",
        "register",
        "--name",
        "Chart",
        "--redirect-uri",
        "https://a.example/cb",
        "--data-dir",
        str(s.data_dir),
        env=env,
    )
    assert public.exit_code == 0, public.output
    assert "client_secret" not in public.output
    confidential = invoke(
        "app",
        "register",
        "--name",
        "Server app",
        "--redirect-uri",
        "https://b.example/cb",
        "--redirect-uri",
        "http://127.0.0.1:8080/cb",
        "--confidential",
        "--data-dir",
        str(s.data_dir),
        env=env,
    )
    assert confidential.exit_code == 0, confidential.output
    secret = re.search(r"client_secret: (\S+)", confidential.output)
    assert secret
    with unit_of_work(vault_env.factory) as session:
        rows = session.scalars(select(OAuthClient)).all()
        assert sorted(r.name for r in rows) == ["Chart", "Server app"]
        stored = b"".join((r.secret_hash or b"") + r.redirect_uris.encode() for r in rows)
        assert secret.group(1).encode() not in stored  # only its hash
    listed = invoke("app", "list", "--data-dir", str(s.data_dir), env=env)
    assert listed.exit_code == 0
    assert "Chart" in listed.output
    assert "confidential" in listed.output


def test_app_register_refuses_bad_redirects(vault_env: Any) -> None:
    s = vault_env.settings
    for uri in ("http://app.example/cb", "https://a.example/cb#frag", "not a url"):
        result = invoke(
            "app", "register", "--name", "X", "--redirect-uri", uri, "--data-dir", str(s.data_dir), env=db_env(s)
        )
        assert result.exit_code == 1, uri
        assert "redirect URI" in result.output
        assert "Traceback" not in result.output


def test_token_issue_system_replaces_and_is_written_privately(vault_env: Any) -> None:
    s = vault_env.settings
    first = s.token_path.read_text().strip()
    with _client(s) as client:
        assert client.get("/fhir/Patient", headers={"Authorization": f"Bearer {first}"}).status_code == 200
        refused = invoke("token", "issue", "--data-dir", str(s.data_dir), env=db_env(s))
        assert refused.exit_code == 1
        result = invoke("token", "issue", "--system", "--replace", "--data-dir", str(s.data_dir), env=db_env(s))
        assert result.exit_code == 0, result.output
        second = s.token_path.read_text().strip()
        assert second != first
        assert second in result.output
        assert stat.S_IMODE(s.token_path.stat().st_mode) == 0o600
        # Revoked at once: the server looks the token up on every request.
        assert client.get("/fhir/Patient", headers={"Authorization": f"Bearer {first}"}).status_code == 401
        assert client.get("/fhir/Patient", headers={"Authorization": f"Bearer {second}"}).status_code == 200


def test_init_replaces_a_token_file_from_before_smart(vault_env: Any, tmp_path: Path) -> None:
    """The old scheme compared the file's bare string; such a file is not a registered token."""
    s = vault_env.settings
    old = "an-operator-token-from-an-earlier-version-0123456789"
    s.token_path.write_text(old + "\n")
    with _client(s) as client:
        assert client.get("/fhir/Patient", headers={"Authorization": f"Bearer {old}"}).status_code == 401
    result = invoke("init", "--data-dir", str(s.data_dir), env=db_env(s))
    assert result.exit_code == 0, result.output
    assert "issued" in result.output
    new = s.token_path.read_text().strip()
    assert new != old
    with unit_of_work(vault_env.factory) as session:
        assert tokens.system_token_valid(session=session, token=new)
        assert not tokens.system_token_valid(session=session, token=old)
    again = invoke("init", "--data-dir", str(s.data_dir), env=db_env(s))
    assert "already there" in again.output
    assert s.token_path.read_text().strip() == new


def test_disabling_or_resetting_an_account_ends_its_app_tokens(vault_env: Any) -> None:
    # Disabling an account or resetting its second factor is how an operator answers a stolen
    # sign-in: the apps the thief approved must end too. They did not: a disabled account's tokens
    # only paused, and came back to life (30-day refresh tokens included) when it was re-enabled;
    # after reset-mfa they carried on.
    from urllib.parse import urlencode

    from tests.smart.support import FORM, bearer, build_world, launch

    s = vault_env.settings
    world = build_world(vault_env)
    scope = "patient/Observation.rs launch/patient offline_access"
    with _client(s) as client:
        for command in (("disable",), ("reset-mfa",)):
            client.cookies.clear()
            token = launch(client, world, scope)
            h = bearer(token["access_token"])
            assert client.get(f"/fhir/Observation/{world.obs[0]}", headers=h).status_code == 200
            for args in (command, ("enable",)) if command == ("disable",) else (command,):
                result = invoke("user", *args, "pat@example.org", "--data-dir", str(s.data_dir), env=db_env(s))
                assert result.exit_code == 0, result.output
            assert client.get(f"/fhir/Observation/{world.obs[0]}", headers=h).status_code == 401
            form = {
                "grant_type": "refresh_token",
                "refresh_token": token["refresh_token"],
                "client_id": world.client_id,
            }
            refreshed = client.post("/oauth/token", content=urlencode(form), headers=FORM)
            assert refreshed.status_code == 400, refreshed.text
            assert refreshed.json()["error"] == "invalid_grant"
