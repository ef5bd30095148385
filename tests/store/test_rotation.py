"""`medvault keys rotate`: online (readers never fail), resumable, and the old KEK is not needed after."""

from __future__ import annotations

import random
import shutil
import threading
from typing import Any

import pytest
from sqlalchemy import func, select

from medvault.crypto.keys import KeyRing
from medvault.db import make_engine, make_sessionmaker, unit_of_work
from medvault.records import service
from medvault.records.guard import OPERATOR_CLI
from medvault.records.vault import Vault
from medvault.store.crypto_context import build_crypto
from medvault.store.models import DataKey
from medvault.store.rotation import rotate
from tests.helpers import open_vault


def _seed(env: Any, patients: int) -> list[tuple[str, str]]:
    keys: list[tuple[str, str]] = []
    with open_vault(env) as v:
        for i in range(patients):
            p = service.create(
                vault=v, resource={"resourceType": "Patient", "name": [{"family": f"Rot{i}"}], "gender": "other"}
            )
            o = service.create(
                vault=v,
                resource={
                    "resourceType": "Observation",
                    "status": "final",
                    "code": {"text": "hr"},
                    "subject": {"reference": f"Patient/{p.rid}"},
                },
            )
            keys += [("Patient", p.rid), ("Observation", o.rid)]
    return keys


def _read_all_fresh(env: Any, keys: list[tuple[str, str]]) -> int:
    """Read everything with a new crypto context (nothing cached: every data key is unwrapped)."""
    engine = make_engine(env.settings)
    factory = make_sessionmaker(engine)
    try:
        with factory() as s:
            crypto = build_crypto(env.settings, s)
        with unit_of_work(factory) as s:
            v = Vault(s, crypto, caller=OPERATOR_CLI)
            return sum(1 for t, r in keys if service.read(vault=v, rtype=t, rid=r)["id"] == r)
    finally:
        engine.dispose()


def test_rotation_under_concurrent_reads(vault_env: Any) -> None:
    keys = _seed(vault_env, 40)
    old = {p: KeyRing(vault_env.settings.keys_path).active_kid(p) for p in ("clinical", "identity")}
    done = threading.Event()
    reads = [0]
    failures: list[str] = []
    engine = make_engine(vault_env.settings)
    factory = make_sessionmaker(engine)

    def reader(seed: int) -> None:
        rng = random.Random(seed)
        while not done.is_set() or reads[0] < 50:
            rtype, rid = rng.choice(keys)
            try:
                with factory() as s:
                    crypto = build_crypto(vault_env.settings, s)  # no cache: unwraps from the table
                with unit_of_work(factory) as s:
                    service.read(vault=Vault(s, crypto, caller=OPERATOR_CLI), rtype=rtype, rid=rid)
                reads[0] += 1
            except Exception as exc:  # noqa: BLE001 - the test counts every kind of failure
                failures.append(f"{rtype}: {exc.__class__.__name__}: {exc}")

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    try:
        report = rotate(vault_env.settings, batch=4)
    finally:
        done.set()
        for t in threads:
            t.join(timeout=120)
        engine.dispose()
    assert failures == []
    assert reads[0] >= 50
    assert report.rewrapped == 80  # 40 clinical + 40 identity data keys
    ring = KeyRing(vault_env.settings.keys_path)
    for purpose, kid in old.items():
        assert ring.active_kid(purpose) != kid
        assert kid in report.retired
    # The old KEKs are gone from the live directory; destroy them entirely and read everything.
    shutil.rmtree(vault_env.settings.keys_path / "retired")
    assert _read_all_fresh(vault_env, keys) == len(keys)


def test_rotation_resumes_after_crash(vault_env: Any) -> None:
    keys = _seed(vault_env, 12)

    class Crash(Exception):
        pass

    def crash(done: int, total: int) -> None:
        raise Crash

    with pytest.raises(Crash):
        rotate(vault_env.settings, batch=3, on_progress=crash)
    ring = KeyRing(vault_env.settings.keys_path)
    with vault_env.factory() as s:
        pending = s.execute(
            select(func.count())
            .select_from(DataKey)
            .where(DataKey.kek_id != ring.active_kid("clinical"), DataKey.purpose == "clinical")
        ).scalar_one()
    assert pending > 0  # half-way: some data keys still under the old KEK, all still readable
    assert _read_all_fresh(vault_env, keys) == len(keys)
    report = rotate(vault_env.settings, batch=3)
    assert report.resumed
    with vault_env.factory() as s:
        kids = set(s.execute(select(DataKey.kek_id).distinct()).scalars())
    assert kids == {ring.active_kid("clinical"), ring.active_kid("identity")}
    shutil.rmtree(vault_env.settings.keys_path / "retired")
    assert _read_all_fresh(vault_env, keys) == len(keys)
