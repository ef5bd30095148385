"""What the page and browser tests share: accounts made through the services (with a confirmed
authenticator where a test signs in with TOTP), the current one-time code, and the real app
served by uvicorn on 127.0.0.1 for Playwright."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from medvault.auth import accounts, totp
from medvault.auth.passwords import Hasher
from medvault.db import unit_of_work


def new_account(env: Any, *, login: str, password: str, role: str, **link: str) -> str:
    """An account (no second factor yet); its id."""
    with unit_of_work(env.factory) as session:
        return accounts.create_account(
            session=session,
            crypto=env.crypto,
            hasher=Hasher(),
            login=login,
            password=password,
            role=role,
            now=datetime.now(UTC),
            **link,
        )


def add_authenticator(env: Any, account_id: str) -> str:
    """Confirm an authenticator for the account; its TOTP secret. The confirming code is the
    previous step's, so a sign-in with the current step's code is not a replay."""
    now = datetime.now(UTC)
    with unit_of_work(env.factory) as session:
        secret, _uri = accounts.begin_totp(session=session, crypto=env.crypto, account_id=account_id)
    with unit_of_work(env.factory) as session:
        accounts.confirm_totp(
            session=session,
            crypto=env.crypto,
            account_id=account_id,
            code=totp.totp_code(secret=secret, step=totp.time_step(now) - 1),
            now=now,
        )
    return secret


def enrolled(env: Any, *, login: str, password: str, role: str, **link: str) -> tuple[str, str]:
    """(account id, TOTP secret) of a new account with a confirmed authenticator."""
    account_id = new_account(env, login=login, password=password, role=role, **link)
    return account_id, add_authenticator(env, account_id)


def now_code(secret: str) -> str:
    """The one-time code of the current step."""
    return totp.totp_code(secret=secret, step=totp.time_step(datetime.now(UTC)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def served(vault_env: Any) -> Iterator[str]:
    """The real app under uvicorn on 127.0.0.1; its base URL."""
    import uvicorn

    from medvault.api.app import create_app

    port = free_port()
    app = create_app(vault_env.settings)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    # uvicorn has no event to wait on; `started` flips once the socket listens.
    while not server.started:
        assert thread.is_alive(), "uvicorn stopped while starting"
        assert time.monotonic() < deadline, "uvicorn did not start within 30 s"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
