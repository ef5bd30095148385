"""Demo data: the Synthea set from ../shared when present, else synthetic patients made here."""

from __future__ import annotations

import random
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from medvault.access.consent import consent_resource
from medvault.auth import accounts, totp
from medvault.auth.passwords import Hasher
from medvault.db import make_engine, make_sessionmaker, unit_of_work
from medvault.records import guard, service
from medvault.store.crypto_context import build_crypto

SHARED_SYNTHEA = Path("shared/data/synthea/r4-transaction-bundles")

_GIVEN = [
    "Ada",
    "Bruno",
    "Carmen",
    "Dmitri",
    "Elena",
    "Farid",
    "Grace",
    "Hiro",
    "Ines",
    "Jonas",
    "Keiko",
    "Luis",
]
_FAMILY = ["Okafor", "Lindqvist", "Moreau", "Tanaka", "Novak", "Haddad", "Kowalski", "Ferreira", "Byrne"]
_CONDITIONS = [
    ("38341003", "Hypertensive disorder"),
    ("44054006", "Diabetes mellitus type 2"),
    ("195967001", "Asthma"),
    ("92814006", "Chronic lymphocytic leukemia"),
]
_OBS = [
    ("8302-2", "Body Height", "cm", 150, 195),
    ("29463-7", "Body Weight", "kg", 50, 110),
    ("8867-4", "Heart rate", "/min", 55, 100),
]


def default_source() -> Path | None:
    """../shared next to the repository (or the current directory) when it is there."""
    candidates = [Path.cwd().parent / SHARED_SYNTHEA, Path(__file__).resolve().parents[3] / SHARED_SYNTHEA]
    for c in candidates:
        if c.is_dir():
            return c
    return None


def synthetic_bundles(patients: int, *, seed: int = 7) -> list[dict[str, Any]]:
    rng = random.Random(seed)  # noqa: S311 - demo data, not security
    out = []
    for _ in range(patients):
        pid = f"urn:uuid:{uuid.UUID(int=rng.getrandbits(128))}"
        birth = f"{rng.randint(1930, 2015)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
        entries: list[dict[str, Any]] = [
            {
                "fullUrl": pid,
                "resource": {
                    "resourceType": "Patient",
                    "identifier": [{"system": "urn:medvault:demo:mrn", "value": str(rng.randint(10**7, 10**8))}],
                    "name": [{"family": rng.choice(_FAMILY), "given": [rng.choice(_GIVEN)]}],
                    "gender": rng.choice(["female", "male"]),
                    "birthDate": birth,
                    "telecom": [{"system": "phone", "value": f"555-{rng.randint(100, 999)}-{rng.randint(1000, 9999)}"}],
                },
                "request": {"method": "POST", "url": "Patient"},
            }
        ]
        for code, display in rng.sample(_CONDITIONS, rng.randint(0, 2)):
            entries.append(
                _entry(
                    "Condition",
                    {
                        "clinicalStatus": {
                            "coding": [
                                {
                                    "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                    "code": "active",
                                }
                            ]
                        },
                        "code": {"coding": [{"system": "http://snomed.info/sct", "code": code, "display": display}]},
                        "subject": {"reference": pid},
                        "onsetDateTime": f"{rng.randint(2000, 2025)}-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}",
                    },
                )
            )
        for code, display, unit, lo, hi in _OBS:
            for year in range(2019, 2026):
                entries.append(
                    _entry(
                        "Observation",
                        {
                            "status": "final",
                            "category": [
                                {
                                    "coding": [
                                        {
                                            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                            "code": "vital-signs",
                                        }
                                    ]
                                }
                            ],
                            "code": {"coding": [{"system": "http://loinc.org", "code": code, "display": display}]},
                            "subject": {"reference": pid},
                            "effectiveDateTime": f"{year}-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}T10:00:00Z",
                            "valueQuantity": {
                                "value": rng.randint(lo, hi),
                                "unit": unit,
                                "system": "http://unitsofmeasure.org",
                                "code": unit,
                            },
                        },
                    )
                )
        out.append({"resourceType": "Bundle", "type": "transaction", "entry": entries})
    return out


def _entry(rtype: str, body: dict[str, Any]) -> dict[str, Any]:
    return {
        "fullUrl": f"urn:uuid:{uuid.uuid4()}",
        "resource": {"resourceType": rtype, **body},
        "request": {"method": "POST", "url": rtype},
    }


DEMO_PATIENT_LOGIN = "patient@demo.medvault.invalid"


def ensure_demo_patient_account(settings: Any) -> tuple[str, str | None]:
    """A patient account for the demo, linked to the first imported Patient. Returns the login
    name and, when it was made now, its generated passphrase (shown once, stored only as a hash)."""
    engine = make_engine(settings)
    try:
        factory = make_sessionmaker(engine)
        with factory() as session:
            crypto = build_crypto(settings, session)
            if accounts.login_taken(session=session, crypto=crypto, login=DEMO_PATIENT_LOGIN):
                return DEMO_PATIENT_LOGIN, None
        with guard.unit_of_work(factory, crypto, guard.OPERATOR_CLI) as vault:
            found = service.search(vault=vault, rtype="Patient", params=[("_count", "1")])
        if not found.resources:
            raise ValueError("no Patient to link the demo account to")
        password = "-".join(secrets.token_urlsafe(6) for _ in range(4))  # ~140 bits, shown once
        with unit_of_work(factory) as session:
            accounts.create_account(
                session=session,
                crypto=crypto,
                hasher=Hasher(),
                login=DEMO_PATIENT_LOGIN,
                password=password,
                role="patient",
                patient_id=found.resources[0]["id"],
                now=datetime.now(UTC),
            )
        return DEMO_PATIENT_LOGIN, password
    finally:
        engine.dispose()


DEMO_CLINICIAN_LOGIN = "clinician@demo.medvault.invalid"
_DEMO_PRACTITIONER: dict[str, Any] = {
    "resourceType": "Practitioner",
    "active": True,
    "name": [{"use": "official", "prefix": ["Dr."], "given": ["Demo"], "family": "Clinician"}],
}


@dataclass(frozen=True)
class DemoClinician:
    """What to print: the login, and when the account was made now its passphrase and TOTP secret
    (shown once; the passphrase is stored only as a hash, the secret only sealed)."""

    login: str
    password: str | None = None
    totp_secret: str | None = None
    totp_uri: str | None = None


def ensure_demo_clinician_account(settings: Any) -> DemoClinician:
    """A Practitioner, a clinician account for it with an authenticator already enrolled (the
    role needs a second factor before any record page), and a grant from the demo patient to it:
    whole record, not the sensitive parts, one year. Run after `ensure_demo_patient_account`."""
    engine = make_engine(settings)
    try:
        factory = make_sessionmaker(engine)
        with factory() as session:
            crypto = build_crypto(settings, session)
            if accounts.login_taken(session=session, crypto=crypto, login=DEMO_CLINICIAN_LOGIN):
                return DemoClinician(login=DEMO_CLINICIAN_LOGIN)
            patient_id = next(
                (
                    a.patient_id
                    for a in accounts.list_accounts(session=session, crypto=crypto)
                    if a.login == DEMO_PATIENT_LOGIN
                ),
                None,
            )
        if patient_id is None:
            raise ValueError("no demo patient account to grant the demo clinician access")
        now = datetime.now(UTC)
        password = "-".join(secrets.token_urlsafe(6) for _ in range(4))  # ~140 bits, shown once
        with guard.unit_of_work(factory, crypto, guard.OPERATOR_CLI) as vault:
            practitioner_id = service.create(vault=vault, resource=dict(_DEMO_PRACTITIONER)).rid
            grant = consent_resource(
                patient_id=patient_id,
                grantee=f"Practitioner/{practitioner_id}",
                resource_types=None,
                sensitive=frozenset(),
                start=now,
                end=now + timedelta(days=365),
                now=now,
            )
            service.create(vault=vault, resource=grant)
        with unit_of_work(factory) as session:
            account_id = accounts.create_account(
                session=session,
                crypto=crypto,
                hasher=Hasher(),
                login=DEMO_CLINICIAN_LOGIN,
                password=password,
                role="clinician",
                practitioner_id=practitioner_id,
                now=now,
            )
            secret, uri = accounts.begin_totp(session=session, crypto=crypto, account_id=account_id)
            # Confirmed with the previous step's code: the current one stays unused, so the person
            # can sign in at once with what their app shows.
            accounts.confirm_totp(
                session=session,
                crypto=crypto,
                account_id=account_id,
                code=totp.totp_code(secret=secret, step=totp.time_step(now) - 1),
                now=now,
            )
        return DemoClinician(login=DEMO_CLINICIAN_LOGIN, password=password, totp_secret=secret, totp_uri=uri)
    finally:
        engine.dispose()
