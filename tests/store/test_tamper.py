"""A stolen-and-edited database fails loudly: swapped, truncated or moved ciphertexts and wrong or
missing keys each raise a clear error instead of returning another patient's data."""

from __future__ import annotations

import base64
import os
from typing import Any

import pytest
from sqlalchemy import delete, select, update

from medvault.crypto.errors import CryptoError, DecryptionFailed, KeyMismatch, KeyMissing
from medvault.records import service
from medvault.store.crypto_context import build_crypto
from medvault.store.models import DataKey, IdentityVersion, ResourceVersion
from tests.helpers import open_vault


def _seed(env: Any) -> dict[str, str]:
    ids: dict[str, str] = {}
    with open_vault(env) as v:
        for who in ("a", "b"):
            p = service.create(vault=v, resource={"resourceType": "Patient", "name": [{"family": f"Fam{who}"}]})
            ids[f"p{who}"] = p.rid
            o = service.create(
                vault=v,
                resource={
                    "resourceType": "Observation",
                    "status": "final",
                    "code": {"text": f"obs {who}"},
                    "subject": {"reference": f"Patient/{p.rid}"},
                },
            )
            ids[f"o{who}"] = o.rid
    return ids


def _blob(env: Any, rtype: str, rid: str) -> bytes:
    with env.factory() as s:
        return bytes(
            s.execute(
                select(ResourceVersion.blob).where(ResourceVersion.rtype == rtype, ResourceVersion.rid == rid)
            ).scalar_one()
        )


def _set_blob(env: Any, rtype: str, rid: str, blob: bytes) -> None:
    with env.factory() as s:
        s.execute(
            update(ResourceVersion).where(ResourceVersion.rtype == rtype, ResourceVersion.rid == rid).values(blob=blob)
        )
        s.commit()


def _read(env: Any, rtype: str, rid: str) -> dict[str, Any]:
    with open_vault(env) as v:
        return service.read(vault=v, rtype=rtype, rid=rid)


def test_swapped_ciphertexts_fail(vault_env: Any) -> None:
    ids = _seed(vault_env)
    a, b = _blob(vault_env, "Observation", ids["oa"]), _blob(vault_env, "Observation", ids["ob"])
    _set_blob(vault_env, "Observation", ids["oa"], b)
    _set_blob(vault_env, "Observation", ids["ob"], a)
    for key in ("oa", "ob"):
        with pytest.raises(DecryptionFailed):
            _read(vault_env, "Observation", ids[key])


def test_ciphertext_moved_within_one_patient_fails(vault_env: Any) -> None:
    """Same data key, different row: the associated data (type, id, version) still catches it."""
    ids = _seed(vault_env)
    with open_vault(vault_env) as v:
        other = service.create(
            vault=v,
            resource={
                "resourceType": "Observation",
                "status": "final",
                "code": {"text": "x"},
                "subject": {"reference": f"Patient/{ids['pa']}"},
            },
        )
    _set_blob(vault_env, "Observation", other.rid, _blob(vault_env, "Observation", ids["oa"]))
    with pytest.raises(DecryptionFailed):
        _read(vault_env, "Observation", other.rid)


def test_truncated_ciphertext_fails(vault_env: Any) -> None:
    ids = _seed(vault_env)
    blob = _blob(vault_env, "Observation", ids["oa"])
    _set_blob(vault_env, "Observation", ids["oa"], blob[: len(blob) // 2])
    with pytest.raises(DecryptionFailed):
        _read(vault_env, "Observation", ids["oa"])


def test_swapped_identity_fails(vault_env: Any) -> None:
    ids = _seed(vault_env)
    with vault_env.factory() as s:
        rows = s.execute(select(IdentityVersion)).scalars().all()
        assert len(rows) == 2
        a, b = bytes(rows[0].blob), bytes(rows[1].blob)
        rows[0].blob, rows[1].blob = b, a
        s.commit()
    for key in ("pa", "pb"):
        with pytest.raises(DecryptionFailed):
            _read(vault_env, "Patient", ids[key])


def test_swapped_wrapped_data_keys_fail(vault_env: Any) -> None:
    ids = _seed(vault_env)
    with vault_env.factory() as s:
        rows = s.execute(select(DataKey).where(DataKey.purpose == "clinical").order_by(DataKey.id)).scalars().all()
        a, b = bytes(rows[0].wrapped), bytes(rows[1].wrapped)
        rows[0].wrapped, rows[1].wrapped = b, a
        s.commit()
        crypto = build_crypto(vault_env.settings, s)  # fresh process: nothing cached
    vault_env.crypto = crypto
    with pytest.raises(KeyMismatch):
        _read(vault_env, "Observation", ids["oa"])


def _kek_file(env: Any) -> Any:
    keys = env.settings.keys_path
    kid = (keys / "active-clinical").read_text().strip()
    return keys / f"kek-{kid}.key"


def test_missing_key_fails_clearly(vault_env: Any) -> None:
    ids = _seed(vault_env)
    _kek_file(vault_env).unlink()
    with vault_env.factory() as s:
        vault_env.crypto = build_crypto(vault_env.settings, s)
    with pytest.raises(KeyMissing, match="missing from the key directory"):
        _read(vault_env, "Observation", ids["oa"])


def test_wrong_key_fails_clearly(vault_env: Any) -> None:
    ids = _seed(vault_env)
    _kek_file(vault_env).write_bytes(base64.b64encode(os.urandom(32)))
    with vault_env.factory() as s:
        vault_env.crypto = build_crypto(vault_env.settings, s)
    with pytest.raises(KeyMismatch):
        _read(vault_env, "Observation", ids["oa"])


def test_no_key_dir_at_all(vault_env: Any) -> None:
    for f in vault_env.settings.keys_path.iterdir():
        f.unlink()
    with vault_env.factory() as s, pytest.raises(KeyMissing, match="medvault init"):
        build_crypto(vault_env.settings, s)


def test_api_reports_integrity_failure_without_data(api: Any, settings: Any) -> None:
    """Over HTTP a tampered record is an OperationOutcome, never another patient's data."""
    from medvault.db import make_engine, make_sessionmaker

    r1 = api.post("/fhir/Patient", json={"resourceType": "Patient", "name": [{"family": "Alpha"}]})
    r2 = api.post("/fhir/Patient", json={"resourceType": "Patient", "name": [{"family": "Beta"}]})
    id1, id2 = r1.json()["id"], r2.json()["id"]
    engine = make_engine(settings)
    factory = make_sessionmaker(engine)
    with factory() as s:
        rows = {
            r.rid: r for r in s.execute(select(ResourceVersion).where(ResourceVersion.rtype == "Patient")).scalars()
        }
        rows[id1].blob, rows[id2].blob = rows[id2].blob, rows[id1].blob
        s.commit()
    engine.dispose()
    r = api.get(f"/fhir/Patient/{id1}")
    assert r.status_code == 500
    body = r.json()
    assert body["resourceType"] == "OperationOutcome"
    assert "Beta" not in r.text
    assert "authentication" in body["issue"][0]["diagnostics"]


def test_crypto_errors_are_domain_errors() -> None:
    assert issubclass(DecryptionFailed, CryptoError)


def test_row_moved_to_another_patient_is_refused(vault_env: Any) -> None:
    """Pointing B's observation at A's pseudonym (so it would show in A's searches) is detected."""
    from medvault.store.models import Resource

    ids = _seed(vault_env)
    with vault_env.factory() as s:
        link_a = s.execute(select(Resource.patient_link).where(Resource.rid == ids["pa"])).scalar_one()
        s.execute(update(Resource).where(Resource.rid == ids["ob"]).values(patient_link=link_a))
        s.commit()
    with open_vault(vault_env) as v, pytest.raises(DecryptionFailed, match="patient link"):
        service.search(vault=v, rtype="Observation", params=[("patient", ids["pa"])])
    with pytest.raises(DecryptionFailed, match="patient link"):
        _read(vault_env, "Observation", ids["ob"])


def test_deleted_identity_row_is_refused(vault_env: Any) -> None:
    from sqlalchemy import delete

    ids = _seed(vault_env)
    with vault_env.factory() as s:
        s.execute(delete(IdentityVersion))
        s.commit()
    with pytest.raises(DecryptionFailed, match="identity part"):
        _read(vault_env, "Patient", ids["pa"])


def test_foreign_index_key_is_refused(vault_env: Any) -> None:
    _seed(vault_env)
    (vault_env.settings.keys_path / "index.key").write_bytes(base64.b64encode(os.urandom(32)))
    with vault_env.factory() as s, pytest.raises(KeyMismatch, match=r"index\.key"):
        build_crypto(vault_env.settings, s)


def test_encrypted_store_refuses_the_benchmark_plaintext_switch(vault_env: Any) -> None:
    """The store records at init that it is encrypted; the benchmark-only switch cannot open it."""
    unsafe = vault_env.settings.model_copy(update={"unsafe_disable_encryption": True, "environment": "benchmark"})
    with vault_env.factory() as session, pytest.raises(KeyMismatch, match="requires encryption"):
        build_crypto(unsafe, session)


def test_plaintext_benchmark_store_cannot_be_opened_as_a_vault(tmp_path: Any) -> None:
    from medvault.config import load_settings
    from medvault.db import make_engine, make_sessionmaker
    from medvault.store.setup import initialise

    plain = load_settings(data_dir=tmp_path / "bench", environment="benchmark", unsafe_disable_encryption=True)
    initialise(plain)
    vault = load_settings(data_dir=tmp_path / "bench", environment="development")
    engine = make_engine(vault)
    try:
        with make_sessionmaker(engine)() as session:
            assert build_crypto(plain, session).sealer is not None
            with pytest.raises(KeyMismatch, match="plaintext benchmark store"):
                build_crypto(vault, session)
    finally:
        engine.dispose()


def test_init_never_turns_an_existing_store_into_a_plaintext_one(vault_env: Any) -> None:
    """A store from before the marker existed (no row) holds ciphertext: a benchmark-mode init
    must record it as encrypted, not as a plaintext store."""
    from medvault.db import unit_of_work
    from medvault.store.models import Meta
    from medvault.store.setup import initialise

    with unit_of_work(vault_env.factory) as session:
        session.execute(delete(Meta).where(Meta.key == "encryption"))
    unsafe = vault_env.settings.model_copy(update={"unsafe_disable_encryption": True, "environment": "benchmark"})
    initialise(unsafe)
    with vault_env.factory() as session:
        assert session.get(Meta, "encryption").value == "required"  # type: ignore[union-attr]
        with pytest.raises(KeyMismatch, match="requires encryption"):
            build_crypto(unsafe, session)
