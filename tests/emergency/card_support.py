"""Shared fixtures for the card and viewer tests: a real Synthea patient's emergency summary, a link
to it and its JWE, built with our own `summary.py`, `shl.py` and `jwe.py`."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from medvault.emergency import jwe, shl
from medvault.emergency.summary import SummaryOptions, build_summary

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
# Reyna Ziemann: ten allergies (bee venom, dairy, grass pollen...), problems and medications.
REYNA = DATA / "synthea" / "r4-transaction-bundles" / "Reyna_Ziemann_08f8bfce-34cf-4b5a-a398-8e49650c6e3c.json"
NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
ALERT = "Irradiated blood only - fludarabine-treated patient"
ALLERGY = "Allergy to bee venom"
LABEL = "Reyna's emergency card"
CONTACT = "Maribel Okafor"

needs_data = pytest.mark.skipif(not REYNA.is_file(), reason="shared Synthea data not present")


@dataclass
class Summary:
    bundle: dict[str, Any]
    plaintext: bytes = field(repr=False)
    #: Strings that must never appear in clear outside the encrypted file: names and clinical terms.
    canaries: list[str]


def reyna_summary() -> Summary:
    resources = [e["resource"] for e in json.loads(REYNA.read_bytes())["entry"]]
    patient = dict(next(r for r in resources if r["resourceType"] == "Patient"))
    # Synthea writes no contacts; a responder's viewer must show them, so the test patient gets one.
    patient["contact"] = [
        {
            "relationship": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0131", "code": "C"}]}],
            "name": {"given": ["Maribel"], "family": "Okafor"},
            "telecom": [{"system": "phone", "value": "+1 555 0100 222"}],
        }
    ]
    resources = [patient if r["resourceType"] == "Patient" else r for r in resources]
    bundle = build_summary(patient=patient, resources=resources, now=NOW, options=SummaryOptions(extra_alerts=(ALERT,)))
    plaintext = json.dumps(bundle, separators=(",", ":")).encode("utf-8")
    canaries = [
        "Reyna",
        "Ziemann",
        ALERT,
        ALLERGY,
        "Allergy to dairy product",
        "Prediabetes",
        "Hydrochlorothiazide",
        CONTACT,
        "555 0100 222",
    ]
    for canary in canaries:
        assert canary.encode() in plaintext  # a canary the summary lacks would prove nothing
    return Summary(bundle=bundle, plaintext=plaintext, canaries=canaries)


def make_link(
    *, base: str, manifest_id: str, key: bytes, flags: str = "", viewer: str | None = None, label: str | None = LABEL
) -> str:
    payload = shl.build_payload(url=f"{base}/shl/m/{manifest_id}", key=key, flags=flags, label=label)
    return shl.to_viewer_link(payload, viewer_url=viewer) if viewer else shl.to_shlink(payload)


def encrypt(summary: Summary, key: bytes, *, compress: bool = True) -> str:
    return jwe.encrypt_file(
        plaintext=summary.plaintext, key=key, content_type="application/fhir+json", compress=compress
    )


def zbar_decode(image: Path) -> str:
    """Decode a QR image with Debian's `zbarimg` (bin/test installs zbar-tools)."""
    exe = shutil.which("zbarimg")
    if exe is None:
        pytest.skip("zbarimg (Debian zbar-tools) is not installed")
    out = subprocess.run([exe, "--raw", "-q", str(image)], capture_output=True, check=True, timeout=60)
    return out.stdout.decode("utf-8").rstrip("\n")
