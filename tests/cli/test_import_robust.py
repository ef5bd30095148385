"""`medvault import` internals: one file's failure is that file's rejection, never the import's end;
a fatal error stops the worker processes; output names files by position, never by name; files
written in one database transaction stay all-or-nothing each."""

from __future__ import annotations

import json
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from medvault.fhir import parse as fhir_parse
from medvault.records import importer as importer_mod
from medvault.records import service
from medvault.records.errors import BadRequest
from medvault.records.importer import Importer, prepare_file
from tests.helpers import open_vault

SECRET_NAME = "Jane_Doe_0001.json"  # what a Synthea file name looks like: a patient's name


def patient(pid: str, family: str = "Rota") -> dict[str, Any]:
    return {"resourceType": "Patient", "id": pid, "name": [{"family": family}], "gender": "female"}


def transaction(*resources: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}} for r in resources
        ],
    }


def write(folder: Path, name: str, doc: dict[str, Any]) -> Path:
    path = folder / name
    path.write_text(json.dumps(doc))
    return path


def stored_ids(env: Any, pids: list[str]) -> set[str]:
    found = set()
    with open_vault(env) as vault:
        for pid in pids:
            try:
                service.read(vault=vault, rtype="Patient", rid=pid)
                found.add(pid)
            except Exception:  # noqa: BLE001, S112 - NotFound: not stored
                continue
    return found


def test_rejection_names_the_file_by_position_not_name(tmp_path: Path) -> None:
    bad = write(tmp_path, SECRET_NAME, {"resourceType": "Patient", "id": "p2", "birthDate": "sometimes"})
    prepared = prepare_file(bad, 7)
    assert prepared[0].rejection is not None
    rejection = prepared[0].rejection
    assert rejection.label == "file 7"
    assert "Jane" not in repr(rejection)
    assert "Jane" not in rejection.label
    assert "Jane" not in rejection.reason
    lines = tmp_path / "x.ndjson"
    lines.write_text(json.dumps(patient("p1")) + "\n" + '{"resourceType": "Nope"}\n')
    second = prepare_file(lines, 3)[1].rejection
    assert second is not None
    assert second.label == "file 3 line 2"


def test_unexpected_error_in_a_worker_step_rejects_that_file_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = fhir_parse.validate

    def flaky(doc: dict[str, Any], **kw: Any) -> str:
        if doc.get("id") == "boom":
            raise KeyError("Sensitive Value 555-1234")
        return real(doc, **kw)

    monkeypatch.setattr(fhir_parse, "validate", flaky)
    path = write(tmp_path, SECRET_NAME, patient("boom"))
    [item] = prepare_file(path, 2)
    assert item.rejection is not None
    assert item.rejection.label == "file 2"
    assert "KeyError" in item.rejection.reason
    assert "Sensitive" not in item.rejection.reason
    assert "555" not in item.rejection.reason


@pytest.mark.parametrize("backend", ["sqlite"])
def test_unexpected_error_while_writing_rejects_that_file_only(
    vault_env: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = service.update

    def flaky(**kw: Any) -> Any:
        if kw["rid"] == "b2":
            raise ValueError("Sensitive Value")
        return real(**kw)

    monkeypatch.setattr(service, "update", flaky)
    files = [
        write(tmp_path, "1.json", transaction(patient("a1"), patient("a2"))),
        write(tmp_path, "2.json", transaction(patient("b1"), patient("b2"))),  # fails half-way
        write(tmp_path, "3.json", transaction(patient("c1"))),
    ]
    report = Importer(vault_env.factory, vault_env.crypto, workers=0).run(files)
    assert [(r.label, "ValueError" in r.reason, "Sensitive" in r.reason) for r in report.rejected] == [
        ("file 2", True, False)
    ]
    assert report.stored == 3
    # The three files shared one database transaction; the failed one left nothing behind.
    assert stored_ids(vault_env, ["a1", "a2", "b1", "b2", "c1"]) == {"a1", "a2", "c1"}


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_rejected_transaction_in_a_group_keeps_the_others(
    vault_env: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = service.update

    def refuse(**kw: Any) -> Any:
        if kw["rid"] == "b2":
            raise BadRequest("refused")
        return real(**kw)

    monkeypatch.setattr(service, "update", refuse)
    files = [
        write(tmp_path, "1.json", transaction(patient("a1"))),
        write(tmp_path, "2.json", transaction(patient("b1"), patient("b2"))),
        write(tmp_path, "3.json", transaction(patient("c1"))),
    ]
    report = Importer(vault_env.factory, vault_env.crypto, workers=0).run(files)
    assert [r.label for r in report.rejected] == ["file 2"]
    assert stored_ids(vault_env, ["a1", "b1", "b2", "c1"]) == {"a1", "c1"}
    # Re-importing stores nothing new (the b* bundle is still refused).
    again = Importer(vault_env.factory, vault_env.crypto, workers=0).run(files)
    assert again.stored == 0
    assert sum(again.unchanged.values()) == 2


@pytest.mark.parametrize("backend", ["sqlite"])
def test_fatal_error_stops_the_workers(vault_env: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pools: list[ProcessPoolExecutor] = []
    futures: list[Future[Any]] = []
    shutdowns: list[tuple[bool, bool]] = []

    class Spy(ProcessPoolExecutor):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            pools.append(self)

        def submit(self, *args: Any, **kwargs: Any) -> Future[Any]:  # type: ignore[override]
            future = super().submit(*args, **kwargs)
            futures.append(future)
            return future

        def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
            shutdowns.append((wait, cancel_futures))
            super().shutdown(wait, cancel_futures=cancel_futures)

    monkeypatch.setattr(importer_mod, "ProcessPoolExecutor", Spy)
    processes: list[Any] = []
    real_file = Importer._file

    def fail_on_second(self: Importer, position: int, *args: Any, **kwargs: Any) -> None:
        if position == 2:
            processes.extend(pools[0]._processes.values())  # type: ignore[attr-defined]
            raise OperationalError("INSERT", {}, Exception("disk I/O error"))
        real_file(self, position, *args, **kwargs)

    monkeypatch.setattr(Importer, "_file", fail_on_second)
    files = [write(tmp_path, f"{i:02}.json", transaction(patient(f"p{i}"))) for i in range(12)]
    with pytest.raises(OperationalError):
        Importer(vault_env.factory, vault_env.crypto, workers=2).run(files)
    assert processes
    assert not any(p.is_alive() for p in processes)
    assert shutdowns == [(True, True)]  # queued files dropped, workers joined
    assert len(futures) < len(files)  # a bounded window of files in flight, not all at once
    # What was written before the fatal error was rolled back with its group: nothing half-done.
    assert stored_ids(vault_env, ["p0", "p1"]) == set()


def test_an_unexpected_error_in_one_collection_entry_rejects_that_entry_only(
    vault_env: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = service.update

    def flaky(**kw: Any) -> Any:
        if kw["rid"] == "g2":
            raise KeyError("Sensitive Value")
        return real(**kw)

    monkeypatch.setattr(service, "update", flaky)
    collection = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": patient(pid)} for pid in ("g1", "g2", "g3")],
    }
    report = Importer(vault_env.factory, vault_env.crypto, workers=0).run([write(tmp_path, "c.json", collection)])
    assert [("KeyError" in r.reason, "Sensitive" in r.reason) for r in report.rejected] == [(True, False)]
    assert "entry[1]" in report.rejected[0].label
    assert stored_ids(vault_env, ["g1", "g2", "g3"]) == {"g1", "g3"}


def test_a_missing_key_stops_the_import_with_one_error(vault_env: Any, tmp_path: Path) -> None:
    from medvault.crypto.errors import CryptoError

    with open_vault(vault_env) as vault:
        service.create(vault=vault, resource=patient("k0"), rid="k0")
    for kek in vault_env.settings.keys_path.glob("kek-*.key"):
        kek.unlink()
    vault_env.crypto.keyring._keks.clear()
    vault_env.crypto._by_owner.clear()
    vault_env.crypto._by_id.clear()
    files = [write(tmp_path, f"{n}.json", transaction(patient(f"k{n}"))) for n in range(1, 4)]
    with pytest.raises(CryptoError):
        Importer(vault_env.factory, vault_env.crypto, workers=0).run(files)
