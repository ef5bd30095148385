"""schemathesis over the in-process OpenAPI schema (issue 3 acceptance): a bounded property-based run
over every operation against the ASGI app, checking `not_a_server_error` and `ignored_auth`, as the
operator (bearer) and as actors with no relationship to the seeded patients (a patient, a clinician
without a grant), whose every 2xx must disclose none of their data and whose forms change none of
it. Counts are collected and asserted (0 and 0), not raised at the first failure, so one run reports
everything it found.

The run is reproducible (`derandomize`, no example database) and bounded by EXAMPLES per operation
and generation mode; the generation-speed health checks are suppressed because they measure the
generator, not the server (a slow server still fails nothing here; it only makes the run slower).
"""

from __future__ import annotations

import html
import json
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
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
from schemathesis.openapi.checks import IgnoredAuth
from schemathesis.specs.openapi.checks import ignored_auth

from medvault.access.consent import consent_resource
from medvault.api import openapi
from medvault.api.app import create_app
from medvault.auth import accounts, totp
from medvault.auth.passwords import Hasher
from medvault.db import unit_of_work
from medvault.records import bundles as record_bundles
from medvault.records import service
from medvault.web.pages import COOKIE
from tests.api.support import fresh_settings
from tests.api.synthea import load, subset_files
from tests.helpers import open_vault

EXAMPLES = 6  # per operation and generation mode (the schema's own examples: 1 case each)
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


@dataclass(frozen=True)
class Credentials:
    """What a caller holds. Swappable: once /fhir takes SMART tokens, the stranger gets a `bearer` of
    another patient as well as (or instead of) its page `session`."""

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

    def sample_ids(self) -> list[str]:
        return [*self.patient_ids, *self.observation_ids[:4], *self.other_ids]

    def markers(self) -> list[str]:
        """Strings whose presence in a stranger's 2xx body discloses a seeded patient's data."""
        return [*self.patient_ids, *self.observation_ids, *self.observation_texts, self.consent_id]


@dataclass
class Tally:
    cases: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    by_operation: dict[str, Counter[int]] = field(default_factory=dict)
    successes: Counter[str] = field(default_factory=Counter)  # 2xx per operation: the run reached handlers
    server_errors: list[str] = field(default_factory=list)
    unauthorized: list[str] = field(default_factory=list)

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
) -> Tally:
    """Every operation of `schema`, each generation mode, `examples` cases each, as `credentials`.
    With `markers`, any 2xx whose body contains one is an unauthorized success (a disclosure)."""
    tally = Tally()
    for result in schema.get_all_operations():
        operation = result.ok()
        # The schema's own examples first (a seeded Patient id, say), then generated cases per mode.
        for strategy in schema.get_strategies_from_examples(operation):
            _fuzz(operation, strategy, "example", credentials, 1, markers or [], tally)
        budget = min(examples, COSTLY.get(operation.label, examples))
        for mode in modes:
            strategy = operation.as_strategy(generation_mode=mode)
            _fuzz(operation, strategy, mode.value, credentials, budget, markers or [], tally)
    return tally


def _fuzz(
    operation: Any,
    strategy: Any,
    mode: str,
    credentials: Credentials,
    examples: int,
    markers: list[str],
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
            # HTML pages escape what they show: look for both spellings.
            leaked = [m for m in markers if m in response.text or html.escape(m) in response.text]
            if leaked:
                tally.unauthorized.append(f"{label}: {response.status_code} discloses {leaked[:3]}")
        try:
            case.validate_response(response, checks=CHECKS, headers=headers, transport_kwargs=dict(NO_REDIRECTS))
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
    assert seeded.patient_ids
    assert seeded.observation_ids
    return seeded


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
        accounts.create_account(
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
    return Credentials("stranger (patient page session)", session=cookie, csrf=csrf)


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
    return Credentials("clinician without a grant (page session)", session=cookie, csrf=csrf)


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


@pytest.fixture
def stranger(target: Target) -> Credentials:
    """An actor with no relationship to the seeded patients. Today a patient's page session; swap in
    (or add) a SMART access token of that patient once /fhir takes them."""
    return _stranger(target.app)


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


def test_stranger_run_discloses_nothing_of_the_seeded_patients(target: Target, stranger: Credentials) -> None:
    schema = load_schema(target.app, focus_on(target.seeded, stranger))
    tally = run(schema, stranger, markers=target.seeded.markers())
    print(f"schemathesis as a stranger: {tally.summary()}")
    assert tally.server_errors == []
    assert tally.unauthorized == []
    # The stranger did get in (its own pages answered), so "no leak" is not "no access at all".
    assert tally.successes["GET /me/record"] > 0, tally.summary()
    # The markers would show: the stranger's own timeline names its own reading (Observation texts).
    assert stranger.session
    own = TestClient(target.app).get("/me/record", headers={"Cookie": f"{COOKIE}={stranger.session}"})
    assert OWN_TEXT in own.text
    # Writes count too: the seeded patient's Consent, which the stranger's forms named, is unchanged.
    assert _consent_untouched(target.app, target.seeded)
    # The forms got past the CSRF check (a refusal of every form would prove nothing): the stranger
    # shared its own record, and its attempts on the other patient's Consent reached the guard.
    assert tally.by_operation["POST /me/sharing"][303] > 0, tally.by_operation["POST /me/sharing"]
    revokes = tally.by_operation["POST /me/sharing/revoke"]
    assert revokes[404] > 0, revokes
    assert not any(300 <= status < 400 for status in revokes), revokes


def test_clinician_without_a_grant_run_discloses_nothing(target: Target) -> None:
    clinician = _clinician_without_grant(target.app)
    schema = load_schema(target.app, focus_on(target.seeded, clinician))
    tally = run(schema, clinician, markers=target.seeded.markers())
    print(f"schemathesis as a clinician without a grant: {tally.summary()}")
    assert tally.server_errors == []
    assert tally.unauthorized == []
    assert tally.successes["GET /patients"] > 0, tally.summary()  # signed in: the pages answered
    # Every seeded patient's page was asked for and refused like a missing one.
    records = tally.by_operation["GET /patients/{patient_id}"]
    assert records[404] > 0, records
    assert not any(200 <= status < 400 for status in records), records
    assert _consent_untouched(target.app, target.seeded)


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
