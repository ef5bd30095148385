"""Module-scoped API environments: one data set per backend, shared by a module's read-only tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.api.support import client_for, fresh_settings


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def module_api(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A TestClient on a fresh vault of the parametrised backend, shared by one module (read-only use)."""
    with (
        fresh_settings(str(request.param), tmp_path_factory.mktemp("module") / "data") as settings,
        client_for(settings) as client,
    ):
        yield client
