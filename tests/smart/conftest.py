from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.smart.support import World, build_world, https_client


@pytest.fixture
def world(vault_env: Any) -> World:
    return build_world(vault_env)


@pytest.fixture
def client(world: World) -> Iterator[Any]:
    with https_client(world.env) as c:
        yield c
