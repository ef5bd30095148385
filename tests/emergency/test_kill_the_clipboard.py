"""Acceptance: an independent SMART Health Links client, the npm package `kill-the-clipboard`
(pinned in tests/js/package-lock.json; `bin/test` runs `npm ci --prefix tests/js`), resolves links
served by our real app under uvicorn on 127.0.0.1 and gets exactly the Bundle we shared."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from medvault.emergency import jwe, links, shl
from medvault.emergency.summary import SummaryOptions
from medvault.store.models import ShlLink
from tests.emergency.links_support import EXTRA_ALERT, FAST_HASHER, PASSCODE, Person, make_patient, serve

JS = Path(__file__).resolve().parents[1] / "js"
NODE = shutil.which("node")
pytestmark = pytest.mark.skipif(
    NODE is None or not (JS / "node_modules" / "kill-the-clipboard").is_dir(),
    reason="node or tests/js/node_modules missing (run `npm ci --prefix tests/js`)",
)


@pytest.fixture(params=["sqlite"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)  # the protocol is the subject here; tests/emergency/test_links.py covers both DBs


@pytest.fixture
def served(vault_env: Any) -> Iterator[tuple[Person, str]]:
    person = make_patient(vault_env)
    with serve(vault_env.settings) as root:
        yield person, root


def _kill_the_clipboard(link: str, *, recipient: str, **extra: Any) -> dict[str, Any]:
    assert NODE is not None
    done = subprocess.run(
        [NODE, str(JS / "resolve.mjs")],
        input=json.dumps({"link": link, "recipient": recipient, **extra}).encode(),
        capture_output=True,
        timeout=60,
        cwd=JS,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    out: dict[str, Any] = json.loads(done.stdout)
    return out


def _shared_bundle(env: Any, issued: links.IssuedLink) -> dict[str, Any]:
    """What we put behind the link: decrypt the stored file with the link's key."""
    with env.factory() as s:
        stored = s.get(ShlLink, issued.link_id)
        assert stored is not None
        assert stored.file_jwe is not None
        plain = jwe.decrypt_file(token=stored.file_jwe, key=shl.decode_key(issued.payload.key)).plaintext
    doc: dict[str, Any] = json.loads(plain)
    return doc


def _create(env: Any, p: Person, root: str, **kw: Any) -> links.IssuedLink:
    return links.create_link(
        factory=env.factory,
        crypto=env.crypto,
        caller=p.caller,
        patient_id=p.patient_id,
        base_url=root,
        hasher=FAST_HASHER,
        **kw,
    )


def test_emergency_link_without_passcode(vault_env: Any, served: tuple[Person, str]) -> None:
    person, root = served
    issued = _create(
        vault_env, person, root, purpose="emergency", label="Ada", options=SummaryOptions(extra_alerts=(EXTRA_ALERT,))
    )
    out = _kill_the_clipboard(issued.viewer_link(base_url=root), recipient="Paramedic Lee")
    assert out["ok"], out
    assert out["fhirResources"] == [_shared_bundle(vault_env, issued)]
    assert EXTRA_ALERT in json.dumps(out["fhirResources"])
    # Embedded as well as by location.
    out = _kill_the_clipboard(issued.shlink(), recipient="Paramedic Lee", embeddedLengthMax=10**6)
    assert out["fhirResources"] == [_shared_bundle(vault_env, issued)]


def test_sharing_link_with_passcode(vault_env: Any, served: tuple[Person, str]) -> None:
    person, root = served
    issued = _create(vault_env, person, root, purpose="sharing", passcode=PASSCODE, share="record", budget=5)
    out = _kill_the_clipboard(issued.shlink(), recipient="Dr Rao", passcode=PASSCODE)
    assert out["ok"], out
    shared = _shared_bundle(vault_env, issued)
    assert shared["type"] == "collection"
    assert out["fhirResources"] == [shared]
    wrong = _kill_the_clipboard(issued.shlink(), recipient="Dr Rao", passcode="not-it")
    assert not wrong["ok"]
    assert wrong["error"] == "SHLInvalidPasscodeError"


def test_direct_link(vault_env: Any, served: tuple[Person, str]) -> None:
    person, root = served
    issued = _create(vault_env, person, root, purpose="emergency", direct=True)
    assert issued.payload.flag == "U"
    out = _kill_the_clipboard(issued.shlink(), recipient="ER nurse")
    assert out["ok"], out
    assert out["fhirResources"] == [_shared_bundle(vault_env, issued)]


def test_revoked_link_is_refused(vault_env: Any, served: tuple[Person, str]) -> None:
    person, root = served
    issued = _create(vault_env, person, root, purpose="emergency")
    links.set_status(
        factory=vault_env.factory,
        crypto=vault_env.crypto,
        caller=person.caller,
        patient_id=person.patient_id,
        link_id=issued.link_id,
        status="revoked",
    )
    out = _kill_the_clipboard(issued.shlink(), recipient="Paramedic Lee")
    assert not out["ok"]
    assert out["error"] == "SHLManifestNotFoundError"
