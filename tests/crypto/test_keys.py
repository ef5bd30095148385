"""Key files: permissions, wrapping, missing and wrong keys give one clear error."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest

from medvault.crypto.envelope import new_data_key
from medvault.crypto.errors import CryptoError, KeyMismatch, KeyMissing
from medvault.crypto.keys import KeyRing


def test_create_makes_private_files(tmp_path: Path) -> None:
    KeyRing.create(tmp_path / "keys")
    assert stat.S_IMODE(os.stat(tmp_path / "keys").st_mode) == 0o700
    files = list((tmp_path / "keys").iterdir())
    assert {f.name.split("-")[0] for f in files} >= {"kek", "active", "index.key"}
    for f in files:
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f.name


def test_create_refuses_to_overwrite(tmp_path: Path) -> None:
    KeyRing.create(tmp_path / "keys")
    with pytest.raises(CryptoError, match="refusing to overwrite"):
        KeyRing.create(tmp_path / "keys")


def test_wrap_unwrap_bound_to_owner(tmp_path: Path) -> None:
    ring = KeyRing.create(tmp_path / "keys")
    dk = new_data_key()
    kid, wrapped = ring.wrap(purpose="clinical", owner=b"a" * 16, data_key=dk)
    assert ring.unwrap(purpose="clinical", owner=b"a" * 16, kid=kid, wrapped=wrapped) == dk
    with pytest.raises(KeyMismatch):  # a wrapped key moved to another owner does not open
        ring.unwrap(purpose="clinical", owner=b"b" * 16, kid=kid, wrapped=wrapped)
    with pytest.raises(KeyMismatch):  # nor under another purpose
        ring.unwrap(purpose="identity", owner=b"a" * 16, kid=kid, wrapped=wrapped)


def test_identity_and_clinical_keks_differ(tmp_path: Path) -> None:
    ring = KeyRing.create(tmp_path / "keys")
    assert ring.active_kid("clinical") != ring.active_kid("identity")


def test_missing_kek_is_one_clear_error(tmp_path: Path) -> None:
    ring = KeyRing.create(tmp_path / "keys")
    kid, wrapped = ring.wrap(purpose="clinical", owner=b"a" * 16, data_key=new_data_key())
    (tmp_path / "keys" / f"kek-{kid}.key").unlink()
    fresh = KeyRing(tmp_path / "keys")
    with pytest.raises(KeyMissing, match=kid):
        fresh.unwrap(purpose="clinical", owner=b"a" * 16, kid=kid, wrapped=wrapped)


def test_wrong_kek_is_one_clear_error(tmp_path: Path) -> None:
    ring = KeyRing.create(tmp_path / "keys")
    kid, wrapped = ring.wrap(purpose="clinical", owner=b"a" * 16, data_key=new_data_key())
    (tmp_path / "keys" / f"kek-{kid}.key").write_bytes(base64.b64encode(os.urandom(32)))
    fresh = KeyRing(tmp_path / "keys")
    with pytest.raises(KeyMismatch, match="wrong key file"):
        fresh.unwrap(purpose="clinical", owner=b"a" * 16, kid=kid, wrapped=wrapped)


def test_corrupt_key_file(tmp_path: Path) -> None:
    ring = KeyRing.create(tmp_path / "keys")
    kid = ring.active_kid("clinical")
    (tmp_path / "keys" / f"kek-{kid}.key").write_text("not base64 !!")
    with pytest.raises(KeyMismatch, match="not a valid key file"):
        KeyRing(tmp_path / "keys").wrap(purpose="clinical", owner=b"a" * 16, data_key=new_data_key())


def test_index_keys_are_separate(tmp_path: Path) -> None:
    ring = KeyRing.create(tmp_path / "keys")
    labels = ["pseudonym", "identity-handle", "search-token", "blind-index"]
    assert len({ring.index_key(label) for label in labels}) == len(labels)
