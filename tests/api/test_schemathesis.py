"""schemathesis over the in-process OpenAPI schema (issue 3 acceptance): a bounded property-based run
over every operation against the ASGI app, checking `not_a_server_error` and `ignored_auth`, as the
operator (bearer) and as actors with no relationship to the seeded patients, each holding a page
session *and* a SMART access token (a patient with `patient/*.cruds` launched on its own record, a
clinician without a grant with `user/*.rs`): every 2xx must disclose none of the seeded ids or
Observation texts, and no seeded resource's version may change. A narrow token
(`patient/Observation.rs` of a seeded patient) must never be answered beyond its scopes. Counts are
collected and asserted (0 and 0), not raised at the first failure, so one run reports everything it
found.

Further checks of schemathesis 4.32 where they apply: `use_after_free` and
`ensure_resource_availability` in a stateful create/read/delete/read run over OpenAPI links, and
`unsupported_method` over the coverage phase's probes with undeclared methods. Not enabled:
`missing_required_header` (what it would add, a 401 without the Authorization header, is what
`ignored_auth`'s probe without credentials asserts) and `object_level_authorization` (one identity
reading what another created: the disclosure markers check that more strictly, on seeded data).
Revoked, expired and unknown tokens get 401 (explicit cases).

The run is reproducible (`derandomize`, no example database) and bounded by EXAMPLES per operation
and generation mode; the generation-speed health checks are suppressed because they measure the
generator, not the server (a slow server still fails nothing here; it only makes the run slower).
Most of the wall time is hypothesis generating cases (negative FHIR bodies above all), so the load
of the machine, more than the number of cases, decides how long the file takes.
"""

from __future__ import annotations

import html
import json
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import hypothesis
import pytest
import schemathesis
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup, ServerError
from schemathesis.generation.meta import CoverageScenario, coverage_scenario
from schemathesis.openapi.checks import IgnoredAuth
from schemathesis.specs.openapi.checks import (
    ensure_resource_availability,
    ignored_auth,
    unsupported_method,
    use_after_free,
)

from medvault.access.consent import consent_resource
from medvault.access.policy import SHARED_TYPES
from medvault.api import openapi
from medvault.api.app import create_app
from medvault.auth import accounts, totp
from medvault.auth.passwords import Hasher
from medvault.db import unit_of_work
from medvault.records import bundles as record_bundles
from medvault.records import service
from medvault.records.errors import Gone
from medvault.smart import scopes as smart_scopes
from medvault.smart import tokens as smart_tokens
from medvault.web.pages import COOKIE
from tests.api.support import fresh_settings
from tests.api.synthea import load, subset_files
from tests.helpers import open_vault

EXAMPLES = 3  # per operation and generation mode (the schema's own examples: 1 case each); see the docstring
# Slow by design: every sign-in attempt costs an Argon2id hash (~0.2 s, more on a busy machine).
COSTLY = {"POST /login": 2}
MODES = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
CHECKS = [not_a_server_error, ignored_auth]
NO_REDIRECTS: dict[str, Any] = {"allow_redirects": False}
SEEDED_FILES = 2  # the two smallest Synthea patients
PASSWORD = "a long and private passphrase"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
# Seeded types, plus types with rules of their own (Consent drives access, AuditEvent is the log).
FOCUS_TYPES = ["Patient", "Observation", "Encounter", "Condition", "Consent", "AuditEvent", "Practitioner"]
# Forms left without the CSRF token: a valid sign-out would end the run's session half way.
CSRF_WITHHELD = frozenset({"/logout"})
# Marks the stranger's own record: seen on its pages, it is no leak.
OWN_TEXT = "stranger own reading 4711"
# SMART scopes of the actors' app tokens: as broad as each may ask for (a patient's app: its own
# record, every interaction; a clinician's: read and search whatever the clinician may).
STRANGER_SCOPE = "patient/*.cruds launch/patient"
CLINICIAN_SCOPE = "user/*.rs"
NARROW_SCOPE = "patient/Observation.rs launch/patient"
APP_REDIRECT = "https://app.example.org/callback"


@dataclass(frozen=True)
class Credentials:
    """What a caller holds: a `bearer` token for /fhir (the operator's, or a SMART app's) and/or a page
    `session`."""

    name: str
    bearer: str | None = None
    session: str | None = None
    csrf: str | None = None  # the session's form token, so generated page forms get past the CSRF check

    def headers_for(self, operation: Any) -> dict[str, str]:
        """Everything the caller holds, except a bearer token on an operation that declares the session
        cookie: browsers send none there, and schemathesis's `ignored_auth` ignores a request that
        carries an Authorization header its operation does not declare (it could not remove it)."""
        declared = {name for requirement in operation.definition.raw.get("security", []) for name in requirement}
        headers = {}
        if self.bearer and openapi.SESSION not in declared:
            headers["Authorization"] = f"Bearer {self.bearer}"
        if self.session:
            headers["Cookie"] = f"{COOKIE}={self.session}"
        return headers


@dataclass
class Seeded:
    patient_ids: list[str]
    observation_ids: list[str]
    observation_texts: list[str]
    other_ids: list[str] = field(default_factory=list)  # a few of each other seeded type
    practitioner_ids: list[str] = field(default_factory=list)
    consent_id: str = ""  # the first seeded patient shares her record with a seeded clinician
    # Every seeded resource's versionId right after seeding (read as the operator): a run that
    # changed or deleted any of them shows up as a difference.
    versions: dict[tuple[str, str], str] = field(default_factory=dict)

    def sample_ids(self) -> list[str]:
        return [*self.patient_ids, *self.observation_ids[:4], *self.other_ids]

    def markers(self) -> list[str]:
        """Strings whose presence in a stranger's 2xx body discloses a seeded patient's data: every
        seeded id (except directory entries such as the Practitioner, which everyone may read) and
        the longer Observation texts."""
        ids = [rid for rtype, rid in self.versions if rtype not in SHARED_TYPES]
        return [*dict.fromkeys([*self.patient_ids, *ids, self.consent_id]), *self.observation_texts]


@dataclass
class Tally:
    cases: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    by_operation: dict[str, Counter[int]] = field(default_factory=dict)
    successes: Counter[str] = field(default_factory=Counter)  # 2xx per operation: the run reached handlers
    server_errors: list[str] = field(default_factory=list)
    unauthorized: list[str] = field(default_factory=list)
    # Operations whose 2xx `ignored_auth` has confirmed (refused without and with a wrong credential).
    # As in schemathesis's own engine, once per operation and run is enough: its two probes per 2xx
    # would otherwise be most of the run's time.
    auth_confirmed: set[str] = field(default_factory=set)

    def summary(self) -> str:
        return (
            f"{self.cases} cases, statuses {dict(sorted(self.statuses.items()))}, "
            f"{len(self.successes)} operations answered 2xx, "
            f"{len(self.server_errors)} server errors, {len(self.unauthorized)} unauthorized successes"
        )


def run(
    schema: Any,
    credentials: Credentials,
    *,
    examples: int = EXAMPLES,
    markers: list[str] | None = None,
    modes: tuple[GenerationMode, ...] = MODES,
    judge: Judge | None = None,
) -> Tally:
    """Every operation of `schema`, each generation mode, `examples` cases each, as `credentials`.
    With `markers`, any 2xx whose body contains one is an unauthorized success (a disclosure); with
    `judge`, so is any 2xx it finds fault with (it returns what is wrong, empty when nothing is)."""
    tally = Tally()
    inspect = _Inspect(markers or [], judge)
    for result in schema.get_all_operations():
        operation = result.ok()
        # The schema's own examples first (a seeded Patient id, say), then generated cases per mode.
        for strategy in schema.get_strategies_from_examples(operation):
            _fuzz(operation, strategy, "example", credentials, 1, inspect, tally)
        budget = min(examples, COSTLY.get(operation.label, examples))
        for mode in modes:
            strategy = operation.as_strategy(generation_mode=mode)
            _fuzz(operation, strategy, mode.value, credentials, budget, inspect, tally)
    return tally


# (case, response) of a 2xx -> what is wrong with it (empty: nothing).
Judge = Callable[[Any, Any], list[str]]


@dataclass(frozen=True)
class _Inspect:
    markers: list[str]
    judge: Judge | None

    def __call__(self, case: Any, response: Any) -> list[str]:
        # HTML pages escape what they show: look for both spellings.
        text = response.text
        leaked = [m for m in self.markers if m in text or html.escape(m) in text]
        faults = [f"discloses {leaked[:3]}"] if leaked else []
        if self.judge is not None:
            faults.extend(self.judge(case, response))
        return faults


def _fuzz(
    operation: Any,
    strategy: Any,
    mode: str,
    credentials: Credentials,
    examples: int,
    inspect: _Inspect,
    tally: Tally,
) -> None:
    @hypothesis.settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        phases=(Phase.explicit, Phase.generate),
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.filter_too_much,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
        ],
    )
    @hypothesis.given(case=strategy)
    def one(case: Any) -> None:
        tally.cases += 1
        headers = credentials.headers_for(operation)
        label = f"{operation.label} [{mode}]"
        try:
            # Redirects not followed: a 303 to /login is a refusal, not the sign-in page's 200.
            response = case.call(headers=headers, **NO_REDIRECTS)
        except Exception as exc:  # noqa: BLE001 - an exception through the ASGI app is a server error
            tally.server_errors.append(f"{label}: raised {exc.__class__.__name__}")
            return
        tally.statuses[response.status_code] += 1
        tally.by_operation.setdefault(operation.label, Counter())[response.status_code] += 1
        if 200 <= response.status_code < 300:
            tally.successes[operation.label] += 1
            tally.unauthorized.extend(f"{label}: {response.status_code} {fault}" for fault in inspect(case, response))
        checks = [not_a_server_error] if operation.label in tally.auth_confirmed else CHECKS
        try:
            case.validate_response(response, checks=checks, headers=headers, transport_kwargs=dict(NO_REDIRECTS))
            if 200 <= response.status_code < 300:
                tally.auth_confirmed.add(operation.label)
        except FailureGroup as group:
            for failure in group.exceptions:
                entry = f"{label}: {response.status_code} {failure.title}"
                if isinstance(failure, ServerError):
                    tally.server_errors.append(entry)
                elif isinstance(failure, IgnoredAuth):
                    tally.unauthorized.append(entry)
                else:
                    tally.server_errors.append(f"{entry} (unexpected check failure {failure.__class__.__name__})")

    try:
        one()
    except hypothesis.errors.Unsatisfiable:
        # Nothing to negate in this operation (no parameters, no body); the positive mode covers it.
        if mode != GenerationMode.NEGATIVE.value:
            raise


def load_schema(app: FastAPI, focus: Callable[[dict[str, Any]], None] | None = None) -> Any:
    """The app's in-process schema (no HTTP endpoint serves it), bound to the app for ASGI calls."""
    raw = json.loads(json.dumps(app.openapi()))  # a copy: the app caches its own
    if focus is not None:
        focus(raw)
    schema = schemathesis.openapi.from_dict(raw)
    schema.app = app
    return schema


def focus_on(seeded: Seeded, credentials: Credentials | None = None) -> Callable[[dict[str, Any]], None]:
    """Test-only narrowing for the seed: valid cases name a seeded resource type and a seeded id (so
    reads hit real records); the negative mode still sends every other type name and id. With the
    caller's CSRF token, valid page forms carry it and name the seeded clinician and the seeded
    patient's Consent, so a stranger's forms reach the code that must refuse them."""

    def apply(raw: dict[str, Any]) -> None:
        for path, item in raw["paths"].items():
            for operation in item.values():
                for param in operation.get("parameters", []):
                    if param["in"] == "path" and param["name"] == "rid":
                        param["schema"] = {"type": "string", "enum": [*seeded.sample_ids(), seeded.consent_id]}
                        param["example"] = seeded.patient_ids[0]
                    elif param["in"] == "path" and param["name"] == "patient_id":
                        param["schema"] = {"type": "string", "enum": seeded.patient_ids}
                    elif param["in"] == "path" and param["name"] == "rtype":
                        param["schema"] = {"type": "string", "enum": FOCUS_TYPES}
                        param["example"] = "Patient"
                form = operation.get("requestBody", {}).get("content", {}).get(openapi.FORM, {}).get("schema", {})
                fields = form.get("properties", {})
                if credentials and credentials.csrf and "csrf" in fields and path not in CSRF_WITHHELD:
                    fields["csrf"] = {"type": "string", "enum": [credentials.csrf]}
                    form["required"] = ["csrf"]
                if "consent" in fields:
                    fields["consent"] = {"type": "string", "enum": [seeded.consent_id]}
                if "practitioner" in fields:
                    fields["practitioner"] = {"type": "string", "enum": seeded.practitioner_ids[:2]}
                if "until" in fields:
                    fields["until"] = {"type": "string", "enum": ["", "2099-12-31"]}

    return apply


@dataclass
class Target:
    app: FastAPI
    seeded: Seeded
    token: str  # the operator's bearer token


def _seed(app: FastAPI) -> Seeded:
    state = app.state.medvault
    seeded = Seeded([], [], [])
    taken: Counter[str] = Counter()
    with open_vault(state) as v:
        for path in subset_files(SEEDED_FILES):
            bundle = load(path)
            record_bundles.process(vault=v, bundle=bundle, stable_ids=True)
            for entry in bundle["entry"]:
                resource = entry["resource"]
                seeded.versions[(resource["resourceType"], resource["id"])] = ""
                if resource["resourceType"] == "Patient":
                    seeded.patient_ids.append(resource["id"])
                if resource["resourceType"] == "Observation":
                    seeded.observation_ids.append(resource["id"])
                    text = resource.get("code", {}).get("text") or ""
                    if len(text) >= 12 and text not in seeded.observation_texts:
                        seeded.observation_texts.append(text)
                if resource["resourceType"] == "Practitioner":
                    seeded.practitioner_ids.append(resource["id"])
                if resource["resourceType"] in FOCUS_TYPES and taken[resource["resourceType"]] < 2:
                    taken[resource["resourceType"]] += 1
                    seeded.other_ids.append(resource["id"])
        consent = consent_resource(
            patient_id=seeded.patient_ids[0],
            grantee=f"Practitioner/{seeded.practitioner_ids[0]}",
            resource_types=None,
            sensitive=frozenset(),
            start=None,
            end=None,
            now=datetime.now(UTC),
        )
        seeded.consent_id = service.create(vault=v, resource=consent).rid
    seeded.versions[("Consent", seeded.consent_id)] = ""
    seeded.versions = _versions(app, list(seeded.versions))
    assert seeded.patient_ids
    assert seeded.observation_ids
    return seeded


def _versions(app: FastAPI, keys: list[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """Each resource's current versionId, read as the operator ("gone" once deleted)."""
    out = {}
    with open_vault(app.state.medvault) as v:
        for rtype, rid in keys:
            try:
                out[(rtype, rid)] = service.read(vault=v, rtype=rtype, rid=rid)["meta"]["versionId"]
            except Gone:
                out[(rtype, rid)] = "gone"
    return out


def _seed_changes(app: FastAPI, seeded: Seeded) -> list[str]:
    """The seeded resources a run changed or deleted (empty: none)."""
    now = _versions(app, list(seeded.versions))
    return [
        f"{rtype}/{rid}: {seeded.versions[(rtype, rid)]} -> {now[(rtype, rid)]}"
        for rtype, rid in now
        if now[(rtype, rid)] != seeded.versions[(rtype, rid)]
    ]


def _consent_untouched(app: FastAPI, seeded: Seeded) -> bool:
    with open_vault(app.state.medvault) as v:
        consent = service.read(vault=v, rtype="Consent", rid=seeded.consent_id)
        consents = service.search(vault=v, rtype="Consent", params=[("patient", seeded.patient_ids[0])]).total
    return consent["meta"]["versionId"] == "1" and consent["status"] == "active" and consents == 1


def _stranger(app: FastAPI) -> Credentials:
    """A patient account linked to its own new Patient: no relationship to the seeded patients."""
    state = app.state.medvault
    with open_vault(state) as v:
        own = service.create(vault=v, resource={"resourceType": "Patient", "gender": "other"}).rid
        service.create(
            vault=v,
            resource={
                "resourceType": "Observation",
                "status": "final",
                "code": {"text": OWN_TEXT},
                "subject": {"reference": f"Patient/{own}"},
            },
        )
    with unit_of_work(state.factory) as session:
        account_id = accounts.create_account(
            session=session,
            crypto=state.crypto,
            hasher=Hasher(),
            login="stranger@example.org",
            password=PASSWORD,
            role="patient",
            patient_id=own,
            now=datetime.now(UTC),
        )
    cookie, csrf = _signed_in(app, "stranger@example.org")
    # The broadest scopes a patient's app may hold, launched (as always for a patient) on its own record.
    token = smart_token(app, account_id=account_id, scope=STRANGER_SCOPE, patient=own)
    return Credentials("stranger (patient page session, SMART token)", bearer=token, session=cookie, csrf=csrf)


def smart_token(
    app: FastAPI, *, account_id: str, scope: str, patient: str | None, issued: datetime | None = None
) -> str:
    """A SMART access token for `account_id` (see `mint`)."""
    return mint(app, account_id=account_id, scope=scope, patient=patient, issued=issued)[0]


def mint(
    app: FastAPI, *, account_id: str, scope: str, patient: str | None, issued: datetime | None = None
) -> tuple[str, str]:
    """(access token, its app's client id) for `account_id`, stored as the token endpoint stores one
    after an approval: a registered public app, the scope in canonical text, the launch patient.
    `issued` in the past makes an expired one."""
    state = app.state.medvault
    parsed = smart_scopes.parse(scope)
    assert parsed.resources, "an app token has resource scopes"
    assert "system" not in parsed.levels, "system/ scopes are the operator's, no person approves them"
    now = issued or datetime.now(UTC)
    token = smart_tokens.new_secret()
    with unit_of_work(state.factory) as session:
        client_id, _ = smart_tokens.register_client(
            session=session, name="schemathesis app", redirect_uris=[APP_REDIRECT], confidential=False, now=now
        )
        smart_tokens.store_token(
            session=session,
            crypto=state.crypto,
            access_token=token,
            refresh_token=None,
            client_id=client_id,
            account_id=account_id,
            scope=parsed.text,
            patient=patient if parsed.launch_patient else None,
            family=None,
            granted=now,
            now=now,
        )
    return token, client_id


def patient_account(app: FastAPI, login: str, patient_id: str) -> str:
    """A patient account linked to an existing (seeded) Patient; its id."""
    state = app.state.medvault
    with unit_of_work(state.factory) as session:
        return accounts.create_account(
            session=session,
            crypto=state.crypto,
            hasher=Hasher(),
            login=login,
            password=PASSWORD,
            role="patient",
            patient_id=patient_id,
            now=datetime.now(UTC),
        )


def _signed_in(app: FastAPI, login: str, code: str = "") -> tuple[str, str]:
    """(session cookie, CSRF token) after a real sign-in through the page."""
    # No `with`: the lifespan is schemathesis's to run. https: the cookie is Secure and __Host-.
    client = TestClient(app, base_url="https://testserver")
    body = urlencode({"login": login, "password": PASSWORD, "code": code})
    signed_in = client.post(
        "/login", content=body, headers={**FORM, "Origin": "https://testserver"}, follow_redirects=False
    )
    assert signed_in.status_code == 303, signed_in.text
    cookie = signed_in.cookies.get(COOKIE)
    assert cookie
    home = client.get("/", headers={"Cookie": f"{COOKIE}={cookie}"})
    assert home.status_code == 200, home.text
    return cookie, home.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]


def _clinician_without_grant(app: FastAPI) -> Credentials:
    """A clinician (second factor enrolled, as the role requires) whom no seeded patient has granted."""
    state = app.state.medvault
    with open_vault(state) as v:
        own = service.create(vault=v, resource={"resourceType": "Practitioner", "name": [{"family": "Nobody"}]}).rid
    now = datetime.now(UTC)
    with unit_of_work(state.factory) as session:
        account_id = accounts.create_account(
            session=session,
            crypto=state.crypto,
            hasher=Hasher(),
            login="clinician@example.org",
            password=PASSWORD,
            role="clinician",
            practitioner_id=own,
            now=now,
        )
        secret, _uri = accounts.begin_totp(session=session, crypto=state.crypto, account_id=account_id)
    with unit_of_work(state.factory) as session:
        # The previous step's code confirms, so signing in with the current step's is no replay.
        accounts.confirm_totp(
            session=session,
            crypto=state.crypto,
            account_id=account_id,
            code=totp.totp_code(secret=secret, step=totp.time_step(now) - 1),
            now=now,
        )
    code = totp.totp_code(secret=secret, step=totp.time_step(datetime.now(UTC)))
    cookie, csrf = _signed_in(app, "clinician@example.org", code)
    token = smart_token(app, account_id=account_id, scope=CLINICIAN_SCOPE, patient=None)
    return Credentials("clinician without a grant (page session, SMART token)", bearer=token, session=cookie, csrf=csrf)


@pytest.fixture
def target(tmp_path: Path) -> Iterator[Target]:
    """A fresh SQLite vault per run: the operator run writes and deletes, the stranger run must see
    the seed intact."""
    from schemathesis.python import asgi

    with fresh_settings("sqlite", tmp_path / "data") as settings:
        app = create_app(settings)
        yield Target(app, _seed(app), settings.token_path.read_text().strip())
        asgi.shutdown_lifespans()  # schemathesis keeps each app's lifespan until process exit


@pytest.fixture
def operator(target: Target) -> Credentials:
    return Credentials("operator (bearer token)", bearer=target.token)


def test_operator_run_no_server_errors_no_unauthenticated_successes(target: Target, operator: Credentials) -> None:
    schema = load_schema(target.app, focus_on(target.seeded))
    tally = run(schema, operator)
    print(f"schemathesis as the operator: {tally.summary()}")
    assert tally.server_errors == []
    assert tally.unauthorized == []
    operations = len(list(schema.get_all_operations()))
    assert tally.cases >= operations * EXAMPLES  # bounded, but not vacuous
    # The schema is tight enough to reach the handlers: reads of seeded records answer 200, writes
    # succeed (and `ignored_auth` then replayed each without and with a wrong token).
    reads = ("GET /fhir/{rtype}/{rid}", "GET /fhir/{rtype}", "GET /fhir/Patient/{rid}/$everything")
    for label in (*reads, "POST /fhir/{rtype}", "POST /fhir", "DELETE /fhir/{rtype}/{rid}"):
        assert tally.successes[label] > 0, (label, tally.summary())


@pytest.fixture
def stranger(target: Target) -> Credentials:
    """An actor with no relationship to the seeded patients: a patient with its own record, holding
    a page session and a SMART token of the broadest scopes a patient's app may hold."""
    return _stranger(target.app)


def _bearer(token: str | None) -> dict[str, str]:
    assert token
    return {"Authorization": f"Bearer {token}"}


def test_stranger_run_discloses_nothing_of_the_seeded_patients(target: Target, stranger: Credentials) -> None:
    schema = load_schema(target.app, focus_on(target.seeded, stranger))
    tally = run(schema, stranger, markers=target.seeded.markers())
    print(f"schemathesis as a stranger: {tally.summary()}")
    assert tally.server_errors == []
    assert tally.unauthorized == []
    # The stranger did get in (its own pages answered, and /fhir took its token), so "no leak" is
    # not "no access at all".
    assert tally.successes["GET /me/record"] > 0, tally.summary()
    assert tally.successes["GET /fhir/{rtype}"] > 0, tally.by_operation["GET /fhir/{rtype}"]
    # The markers would show: the stranger's own timeline and its app's search name its own reading.
    assert stranger.session
    own = TestClient(target.app).get("/me/record", headers={"Cookie": f"{COOKIE}={stranger.session}"})
    assert OWN_TEXT in own.text
    own = TestClient(target.app).get("/fhir/Observation", headers=_bearer(stranger.bearer))
    assert own.status_code == 200
    assert OWN_TEXT in own.text
    # Writes count too: no seeded resource changed (their versions, read as the operator), and the
    # seeded patient's Consent, which the stranger's forms named, is still the only active one.
    assert _seed_changes(target.app, target.seeded) == []
    assert _consent_untouched(target.app, target.seeded)
    # The forms got past the CSRF check (a refusal of every form would prove nothing): the stranger
    # shared its own record, and its attempts on the other patient's Consent reached the guard.
    assert tally.by_operation["POST /me/sharing"][303] > 0, tally.by_operation["POST /me/sharing"]
    revokes = tally.by_operation["POST /me/sharing/revoke"]
    assert revokes[404] > 0, revokes
    assert not any(300 <= status < 400 for status in revokes), revokes
    # Its token's writes reached the guard: creates in its own record went through (patient/*.cruds),
    # and reads of every seeded id answered like missing records.
    assert tally.by_operation["GET /fhir/{rtype}/{rid}"][404] > 0, tally.by_operation["GET /fhir/{rtype}/{rid}"]


def test_clinician_without_a_grant_run_discloses_nothing(target: Target) -> None:
    clinician = _clinician_without_grant(target.app)
    schema = load_schema(target.app, focus_on(target.seeded, clinician))
    tally = run(schema, clinician, markers=target.seeded.markers())
    print(f"schemathesis as a clinician without a grant: {tally.summary()}")
    assert tally.server_errors == []
    assert tally.unauthorized == []
    assert tally.successes["GET /patients"] > 0, tally.summary()  # signed in: the pages answered
    assert tally.successes["GET /fhir/{rtype}"] > 0, tally.by_operation["GET /fhir/{rtype}"]  # the token too
    # Every seeded patient's page was asked for and refused like a missing one.
    records = tally.by_operation["GET /patients/{patient_id}"]
    assert records[404] > 0, records
    assert not any(200 <= status < 400 for status in records), records
    reads = tally.by_operation["GET /fhir/{rtype}/{rid}"]
    assert reads[404] > 0, reads
    assert _seed_changes(target.app, target.seeded) == []
    assert _consent_untouched(target.app, target.seeded)


def _fhir_only(focus: Callable[[dict[str, Any]], None], rtype: str, rid: str) -> Callable[[dict[str, Any]], None]:
    """`focus`, on the /fhir operations only, with `rtype`/`rid` as the schema's examples (so each
    read operation's example case names a record the caller may read)."""

    def apply(raw: dict[str, Any]) -> None:
        focus(raw)
        raw["paths"] = {path: item for path, item in raw["paths"].items() if openapi.is_fhir(path)}
        for item in raw["paths"].values():
            for operation in item.values():
                for param in operation.get("parameters", []):
                    if param["in"] == "path" and param["name"] in ("rtype", "rid"):
                        param["example"] = rtype if param["name"] == "rtype" else rid

    return apply


def _resources(doc: Any) -> Iterator[tuple[dict[str, Any], str]]:
    """(resource, how it was answered) in a response body, Bundle entries included: a batch or
    transaction response's entries carry their own status."""
    if not isinstance(doc, dict) or "resourceType" not in doc:
        return
    if doc["resourceType"] != "Bundle":
        yield doc, ""
        return
    for entry in doc.get("entry", []):
        status = str(entry.get("response", {}).get("status", ""))
        if "resource" in entry:
            for resource, _ in _resources(entry["resource"]):
                yield resource, status
        elif status.startswith("2"):
            yield {"resourceType": "(no resource)"}, status


def within_scope(patient_id: str, rtypes: frozenset[str]) -> Judge:
    """For a token of `patient/<rtypes>.rs` launched on `patient_id`: a 2xx may only read or search
    those types in that patient's compartment, or directory types, or the server's metadata."""
    allowed_types = rtypes | SHARED_TYPES

    def judge(case: Any, response: Any) -> list[str]:
        path, method = case.operation.path, case.method.upper()
        if path == "/fhir/metadata" or "/.well-known/" in path:
            return []
        faults = []
        rtype = (case.path_parameters or {}).get("rtype")
        if rtype is not None and rtype not in allowed_types:
            faults.append(f"answered on {rtype}")
        searching = path.endswith("/_search") or path == "/fhir"  # a batch is judged by its entries
        if method != "GET" and not searching:
            faults.append(f"a {method} succeeded with read/search scopes")
        try:
            body = response.json() if response.content else None
        except ValueError:
            return [*faults, "a body that is not JSON"]
        for resource, status in _resources(body):
            kind = resource["resourceType"]
            if status.startswith("201") or kind == "(no resource)":
                faults.append(f"a batch entry answered {status}")
            elif kind in ("OperationOutcome", "CapabilityStatement") or kind in SHARED_TYPES:
                continue
            elif kind not in rtypes or resource.get("subject", {}).get("reference") != f"Patient/{patient_id}":
                faults.append(f"{kind}/{resource.get('id')} is outside the token's scopes")
        return faults

    return judge


def test_narrow_token_never_exceeds_its_scopes(target: Target) -> None:
    """A token of `patient/Observation.rs` for a seeded patient: every 2xx on /fhir concerns her
    Observations only (or directory entries, or the metadata); nothing else is read or written."""
    pid = target.seeded.patient_ids[0]
    account = patient_account(target.app, "seeded@example.org", pid)
    token = smart_token(target.app, account_id=account, scope=NARROW_SCOPE, patient=pid)
    narrow = Credentials(f"a seeded patient's app ({NARROW_SCOPE})", bearer=token)
    own = target.seeded.observation_ids[0]  # the first seeded patient's (her bundle is read first)
    schema = load_schema(target.app, _fhir_only(focus_on(target.seeded), "Observation", own))
    tally = run(schema, narrow, judge=within_scope(pid, frozenset({"Observation"})))
    print(f"schemathesis with a narrow token: {tally.summary()}")
    assert tally.server_errors == []
    assert tally.unauthorized == []
    # Not vacuous: the token read her Observations, and was refused the rest openly (403).
    assert tally.successes["GET /fhir/{rtype}/{rid}"] > 0, tally.by_operation["GET /fhir/{rtype}/{rid}"]
    assert tally.successes["GET /fhir/{rtype}"] > 0, tally.by_operation["GET /fhir/{rtype}"]
    assert tally.statuses[403] > 0, tally.summary()
    assert _seed_changes(target.app, target.seeded) == []


def test_within_scope_judge_catches_what_it_claims() -> None:
    """The narrow run's judge flags another patient's, another type's and a write's 2xx."""

    @dataclass
    class Op:
        path: str

    @dataclass
    class Case:
        operation: Op
        method: str
        path_parameters: dict[str, str]

    @dataclass
    class Answer:
        body: Any

        @property
        def content(self) -> bytes:
            return json.dumps(self.body).encode()

        def json(self) -> Any:
            return self.body

    judge = within_scope("p1", frozenset({"Observation"}))
    own = {"resourceType": "Observation", "id": "o1", "subject": {"reference": "Patient/p1"}}
    theirs = {**own, "id": "o2", "subject": {"reference": "Patient/p2"}}
    search = Case(Op("/fhir/{rtype}"), "GET", {"rtype": "Observation"})
    bundle = {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": own}]}
    assert judge(search, Answer(bundle)) == []
    assert judge(search, Answer({**bundle, "entry": [{"resource": own}, {"resource": theirs}]}))
    assert judge(Case(Op("/fhir/{rtype}"), "GET", {"rtype": "Condition"}), Answer({**bundle, "entry": []}))
    assert judge(Case(Op("/fhir/{rtype}/{rid}"), "DELETE", {"rtype": "Observation", "rid": "o1"}), Answer(None))
    batch = {"resourceType": "Bundle", "type": "batch-response", "entry": [{"response": {"status": "201 Created"}}]}
    assert judge(Case(Op("/fhir"), "POST", {}), Answer(batch))
    assert judge(Case(Op("/fhir/metadata"), "GET", {}), Answer({"resourceType": "CapabilityStatement"})) == []


def test_revoked_expired_and_unknown_tokens_get_401(target: Target) -> None:
    """A handful of explicit cases: the same requests that a live token gets answered are refused
    with 401 and `invalid_token` once the token is revoked (through the revocation endpoint) or
    expired, and for a token nobody issued."""
    pid = target.seeded.patient_ids[0]
    obs = target.seeded.observation_ids[0]
    account = patient_account(target.app, "owner@example.org", pid)
    scope = "patient/*.rs launch/patient"
    live = smart_token(target.app, account_id=account, scope=scope, patient=pid)
    revoked, client_id = mint(target.app, account_id=account, scope=scope, patient=pid)
    issued = datetime.now(UTC) - smart_tokens.ACCESS_LIFETIME - timedelta(minutes=1)
    expired = smart_token(target.app, account_id=account, scope=scope, patient=pid, issued=issued)
    client = TestClient(target.app, base_url="https://testserver")
    reads = [
        f"/fhir/Patient/{pid}",
        f"/fhir/Observation/{obs}",
        "/fhir/Observation",
        f"/fhir/Patient/{pid}/$everything",
    ]
    for path in reads:
        for token in (live, revoked):
            assert client.get(path, headers=_bearer(token)).status_code == 200, path
    gone = client.post("/oauth/revoke", content=urlencode({"token": revoked, "client_id": client_id}), headers=FORM)
    assert gone.status_code == 200, gone.text
    writes: list[tuple[str, str, dict[str, Any] | None]] = [
        ("POST", "/fhir/Observation", {"resourceType": "Observation", "status": "final", "code": {"text": "x"}}),
        ("PUT", f"/fhir/Patient/{pid}", {"resourceType": "Patient", "id": pid}),
        ("DELETE", f"/fhir/Observation/{obs}", None),
    ]
    requests = [("GET", path, None) for path in reads] + writes
    for name, token in (("revoked", revoked), ("expired", expired), ("unknown", smart_tokens.new_secret())):
        for method, path, doc in requests:
            headers = {**_bearer(token), "Content-Type": openapi.FHIR_JSON}
            answer = client.request(method, path, headers=headers, content=json.dumps(doc) if doc else None)
            assert answer.status_code == 401, (name, method, path, answer.status_code)
            assert answer.json()["resourceType"] == "OperationOutcome"
            assert 'error="invalid_token"' in answer.headers["www-authenticate"]
    # The live token still works: the refusals were about those tokens, not the requests.
    assert client.get(f"/fhir/Patient/{pid}", headers=_bearer(live)).status_code == 200
    assert _seed_changes(target.app, target.seeded) == []


# --- stateful: what a run learns from links between operations ---------------------------------------

STATEFUL_CHECKS = [not_a_server_error, use_after_free, ensure_resource_availability]
STATEFUL_KEEP = {("/fhir/{rtype}", "post"), ("/fhir/{rtype}/{rid}", "get"), ("/fhir/{rtype}/{rid}", "delete")}
# The link passes the caller's credentials on too: `ensure_resource_availability` judges a follow-up
# only when every one of its parameters came from the link, and the bearer header counts as one.
_SAME_CALLER = {"header.Authorization": "$request.header.Authorization"}
_CREATED_ID = {"rtype": "$request.path.rtype", "rid": "$response.body#/id", **_SAME_CALLER}
_DELETED_ID = {"rtype": "$request.path.rtype", "rid": "$request.path.rid", **_SAME_CALLER}


def linked(raw: dict[str, Any]) -> None:
    """Create, read and delete, with OpenAPI links between them (FHIR answers a create with the new
    resource, whose `id` the read and the delete take): the state machine creates a Patient, reads it
    (`ensure_resource_availability`: a 404 for what was just created fails), deletes it, and reads it
    again (`use_after_free`: a 2xx for what was deleted fails; FHIR answers 410)."""
    paths = {
        path: {m: op for m, op in item.items() if (path, m) in STATEFUL_KEEP} for path, item in raw["paths"].items()
    }
    raw["paths"] = {path: item for path, item in paths.items() if item}
    create, read = raw["paths"]["/fhir/{rtype}"]["post"], raw["paths"]["/fhir/{rtype}/{rid}"]["get"]
    delete = raw["paths"]["/fhir/{rtype}/{rid}"]["delete"]
    for param in create["parameters"]:
        if param["name"] == "rtype":
            param["schema"] = {"type": "string", "enum": ["Patient"]}
    patient = {
        "type": "object",
        "required": ["resourceType"],
        "properties": {
            "resourceType": {"type": "string", "enum": ["Patient"]},
            "gender": {"type": "string", "enum": ["male", "female", "other", "unknown"]},
            "active": {"type": "boolean"},
        },
        "additionalProperties": False,
    }
    create["requestBody"]["content"][openapi.FHIR_JSON]["schema"] = patient
    links = {
        "Read": {"operationId": read["operationId"], "parameters": _CREATED_ID},
        "Delete": {"operationId": delete["operationId"], "parameters": _CREATED_ID},
    }
    create["responses"]["201"] = {"description": "created", "links": links}
    gone = {"ReadDeleted": {"operationId": read["operationId"], "parameters": _DELETED_ID}}
    delete["responses"]["204"] = {"description": "deleted", "links": gone}


@dataclass
class StatefulTally:
    steps: Counter[str] = field(default_factory=Counter)  # "METHOD path status"
    failures: list[str] = field(default_factory=list)


def run_stateful(schema: Any, credentials: Credentials, *, scenarios: int = 6, steps: int = 6) -> StatefulTally:
    """The schema's state machine (derandomized, bounded), every response through STATEFUL_CHECKS with
    the scenario's recorder, so the checks see what came before. Failures are collected, not raised."""
    tally = StatefulTally()
    base = schema.as_state_machine()

    class Machine(base):  # type: ignore[misc, valid-type]
        def before_call(self, case: Any) -> None:
            # On the case itself (not only on the wire): the links' `$request.header.Authorization`
            # reads the case, which otherwise holds a generated (wrong) token.
            case.headers = {**(case.headers or {}), **credentials.headers_for(case.operation)}

        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return dict(NO_REDIRECTS)

        def validate_response(self, response: Any, case: Any, additional_checks: Any = None, **kwargs: Any) -> None:
            tally.steps[f"{case.method} {case.operation.path} {response.status_code}"] += 1
            try:
                case.validate_response(
                    response, checks=STATEFUL_CHECKS, transport_kwargs=kwargs or None, recorder=self.recorder
                )
            except FailureGroup as group:
                tally.failures.extend(
                    f"{case.operation.label}: {f.__class__.__name__} ({f.title})" for f in group.exceptions
                )

    Machine.run(
        settings=hypothesis.settings(
            max_examples=scenarios,
            stateful_step_count=steps,
            derandomize=True,
            database=None,
            deadline=None,
            phases=(Phase.explicit, Phase.generate),
            suppress_health_check=list(HealthCheck),
        )
    )
    return tally


def test_stateful_create_read_delete_read(target: Target, operator: Credentials) -> None:
    tally = run_stateful(load_schema(target.app, linked), operator)
    print(f"stateful schemathesis as the operator: {dict(tally.steps)}")
    assert tally.failures == []
    # The links were followed: created, read back, deleted, and the deleted one read again (410).
    for step in (
        "POST /fhir/{rtype} 201",
        "GET /fhir/{rtype}/{rid} 200",
        "DELETE /fhir/{rtype}/{rid} 204",
        "GET /fhir/{rtype}/{rid} 410",
    ):
        assert tally.steps[step] > 0, (step, tally.steps)


# --- methods the schema does not declare ------------------------------------------------------------


def unsupported_methods(schema: Any, credentials: Credentials) -> tuple[list[str], Counter[int]]:
    """schemathesis's `unsupported_method` check over its own probes (the coverage phase's requests
    with each method a path does not declare): 405 with an `Allow` header, or a refusal of the
    credentials first. Returns (failures, statuses)."""
    failures: list[str] = []
    statuses: Counter[int] = Counter()
    for result in schema.get_all_operations():
        operation = result.ok()
        cases = operation.schema.iter_coverage_cases(
            operation,
            generation_modes=[GenerationMode.NEGATIVE],
            generation_config=schema.config.generation_for(operation=operation),
            extra_data_source=None,
            error_feedback=None,
            session=None,
        )
        for case in cases:
            if coverage_scenario(case) != CoverageScenario.UNSPECIFIED_HTTP_METHOD:
                continue
            headers = credentials.headers_for(operation)
            response = case.call(headers=headers, **NO_REDIRECTS)
            statuses[response.status_code] += 1
            try:
                case.validate_response(
                    response,
                    checks=[not_a_server_error, unsupported_method],
                    headers=headers,
                    transport_kwargs=dict(NO_REDIRECTS),
                )
            except FailureGroup as group:
                failures.extend(
                    f"{case.method} {operation.path}: {f.title}: {f.message[:120]}" for f in group.exceptions
                )
    return failures, statuses


def test_undeclared_methods_answer_405_with_allow(target: Target, operator: Credentials) -> None:
    failures, statuses = unsupported_methods(load_schema(target.app), operator)
    print(f"undeclared methods: {dict(statuses)}")
    assert failures == []
    assert statuses[405] > 0, statuses


# --- the harness itself: it must catch what it claims to catch ----------------------------------------


def _broken_app(leak: str) -> FastAPI:
    """A tiny app declaring auth, with a 500, a bearer and a cookie route that never check it, and a
    checked route that discloses another patient's data."""
    app = FastAPI(openapi_url=None)

    @app.get("/crash")
    def crash() -> None:
        raise RuntimeError("deliberate")

    @app.get("/open")
    def open_door() -> PlainTextResponse:
        return PlainTextResponse("anyone gets this")  # declares bearer auth but never checks it

    @app.get("/page")
    def page_without_session_check() -> PlainTextResponse:
        return PlainTextResponse("a page that never reads its session cookie")

    @app.get("/leak")
    def leak_route(request: Request) -> JSONResponse:
        if request.headers.get("authorization") != "Bearer right":
            return JSONResponse({"error": "unauthorized"}, status_code=401)
        return JSONResponse({"other-patient": leak})

    raw = app.openapi()
    raw["components"] = {"securitySchemes": openapi.SECURITY_SCHEMES}
    for path, item in raw["paths"].items():
        for op in item.values():
            op["security"] = [{openapi.SESSION if path == "/page" else openapi.BEARER: []}]
    schema = schemathesis.openapi.from_dict(raw)
    schema.app = app
    app.state.schema = schema
    return app


def test_harness_catches_a_server_error_and_unauthorized_successes() -> None:
    app = _broken_app("Patient/someone-else")
    tally = run(
        app.state.schema,
        Credentials("bearer and cookie", bearer="right", session="right"),
        examples=2,
        markers=["someone-else"],
        modes=(GenerationMode.POSITIVE,),
    )
    assert any(e.startswith("GET /crash") for e in tally.server_errors), tally.server_errors
    assert any(e.startswith("GET /open") and "authentication" in e for e in tally.unauthorized), tally.unauthorized
    assert any(e.startswith("GET /page") and "authentication" in e for e in tally.unauthorized), tally.unauthorized
    assert any(e.startswith("GET /leak") and "discloses" in e for e in tally.unauthorized), tally.unauthorized
    assert not any(e.startswith("GET /leak") and "authentication" in e for e in tally.unauthorized)


def _forgetful_app(flaw: str) -> FastAPI:
    """A tiny FHIR-shaped create/read/delete app with one flaw: "lost" (a created resource reads as
    missing) or "undead" (a deleted one still reads)."""
    app = FastAPI(openapi_url=None)
    store: dict[str, dict[str, Any]] = {}

    @app.post("/fhir/{rtype}")
    async def create(rtype: str, request: Request) -> JSONResponse:
        doc = json.loads(await request.body())
        doc["id"] = f"r{len(store)}"
        store[doc["id"]] = doc
        return JSONResponse(doc, status_code=201)

    @app.get("/fhir/{rtype}/{rid}")
    def read(rtype: str, rid: str) -> JSONResponse:
        if rid not in store or flaw == "lost":
            return JSONResponse({"resourceType": "OperationOutcome"}, status_code=404)
        return JSONResponse(store[rid])

    @app.delete("/fhir/{rtype}/{rid}")
    def delete(rtype: str, rid: str) -> PlainTextResponse:
        if flaw != "undead":
            store.pop(rid, None)
        return PlainTextResponse("", status_code=204)

    return app


@pytest.mark.parametrize(("flaw", "failure"), [("lost", "EnsureResourceAvailability"), ("undead", "UseAfterFree")])
def test_harness_stateful_checks_catch_lost_and_undead_resources(flaw: str, failure: str) -> None:
    app = _forgetful_app(flaw)
    raw = json.loads(json.dumps(openapi.build(app)))
    linked(raw)
    schema = schemathesis.openapi.from_dict(raw)
    schema.app = app
    tally = run_stateful(schema, Credentials("anyone", bearer="whatever"), scenarios=4)
    assert tally.failures, (failure, tally.steps)
    assert all(f.startswith(f"GET /fhir/{{rtype}}/{{rid}}: {failure} (") for f in tally.failures), tally.failures
