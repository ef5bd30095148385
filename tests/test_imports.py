"""Every face imports on its own in a fresh interpreter: an import cycle between page modules once
stopped the server from starting while the test suite, importing in another order, passed."""

from __future__ import annotations

import subprocess
import sys

import pytest

FACES = (
    "medvault.api.app",
    "medvault.api.community",
    "medvault.api.community_messages",
    "medvault.api.shl_routes",
    "medvault.web.pages",
    "medvault.web.community_common",
    "medvault.web.community_pages",
    "medvault.web.community_message_pages",
    "medvault.web.community_directory_pages",
    "medvault.cli.main",
)


@pytest.mark.parametrize("module", FACES)
def test_imports_alone(module: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
