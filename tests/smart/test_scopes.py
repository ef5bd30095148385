"""SMART v2 scope parsing and what a scope set permits (property tests), and the policy's use of it."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from medvault.access.consent import Grant
from medvault.access.policy import Decision, decide
from medvault.auth.accounts import Actor
from medvault.smart import scopes as sc

LEVELS = st.sampled_from(["patient", "user", "system"])
TYPES = st.sampled_from(["Observation", "Condition", "Patient", "*"])
PERMS = st.sets(st.sampled_from(list("cruds")), min_size=1).map(lambda s: "".join(c for c in "cruds" if c in s))


@given(LEVELS, TYPES, PERMS)
def test_v2_scopes_round_trip(level: str, rtype: str, perms: str) -> None:
    text = f"{level}/{rtype}.{perms}"
    parsed = sc.parse(text)
    assert parsed.text == text
    assert sc.parse(parsed.text) == parsed


@given(LEVELS, TYPES, st.text(alphabet="cruds", min_size=2, max_size=5))
def test_letters_out_of_order_or_repeated_are_refused(level: str, rtype: str, perms: str) -> None:
    ordered = "".join(c for c in "cruds" if c in perms)
    if perms == ordered:
        return
    with pytest.raises(sc.InvalidScope):
        sc.parse(f"{level}/{rtype}.{perms}")


@pytest.mark.parametrize(
    ("v1", "v2"),
    [
        ("patient/*.read", "patient/*.rs"),
        ("user/Observation.write", "user/Observation.cud"),
        ("user/*.*", "user/*.cruds"),
    ],
)
def test_v1_scopes_map_to_v2(v1: str, v2: str) -> None:
    assert sc.parse(v1).text == v2


@pytest.mark.parametrize(
    "bad",
    [
        "patient/Observation.rs?category=laboratory",
        "patient/Nope.rs",
        "launch",
        "profile",
        "patient/.rs",
        "user/*.x",
        "a" * 300,
    ],
)
def test_unknown_scopes_are_refused(bad: str) -> None:
    with pytest.raises(sc.InvalidScope):
        sc.parse(bad)


def test_context_scopes() -> None:
    parsed = sc.parse("openid fhirUser launch/patient offline_access patient/*.rs")
    assert parsed.openid
    assert parsed.fhir_user
    assert parsed.launch_patient
    assert parsed.offline
    assert parsed.text == "patient/*.rs fhirUser launch/patient offline_access openid"


@given(
    LEVELS,
    TYPES,
    PERMS,
    st.sampled_from(["Observation", "Condition"]),
    st.sampled_from(["read", "search", "write", "delete"]),
    st.sampled_from(["p1", "p2", None]),
)
def test_permits_never_exceeds_the_scope(
    level: str, rtype: str, perms: str, asked: str, action: str, patient: str | None
) -> None:
    scopes = sc.parse(f"{level}/{rtype}.{perms}")
    letter = sc.letter_for(action, "create")
    verdict = sc.permits(scopes, rtype=asked, letter=letter, patient_id=patient, launch_patient="p1")
    covered = rtype in ("*", asked) and letter in perms
    if level == "patient" and patient == "p2":
        assert verdict == "outside-launch-patient"  # whatever the type: another patient is missing
    elif not covered:
        assert verdict == "outside-scope"
    else:
        assert verdict == "ok"


def test_letters_for_actions() -> None:
    assert [sc.letter_for(a, i) for a, i in [("read", None), ("search", None), ("delete", None)]] == ["r", "s", "d"]
    assert sc.letter_for("write", "create") == "c"
    assert sc.letter_for("write", "update") == "u"


NOW = datetime(2026, 11, 29, tzinfo=UTC)
DOC = Actor(account_id="a1", role="clinician", practitioner_id="doc")
GRANT = Grant(
    consent_id="c1",
    patient_id="p1",
    grantee="Practitioner/doc",
    resource_types=None,
    sensitive=frozenset(),
    start=None,
    end=None,
    active=True,
)


def _decide(scope: str | None, *, action: str = "read", patient: str = "p1", launch: str | None = None) -> Decision:
    return decide(
        actor=DOC,
        action=action,  # type: ignore[arg-type]
        patient_id=patient,
        resource_type="Observation",
        labels=frozenset(),
        grants=[GRANT],
        now=NOW,
        scopes=sc.parse(scope) if scope is not None else None,
        launch_patient=launch,
        interaction="create" if action == "write" else None,
    )


def test_policy_narrows_by_scope() -> None:
    assert _decide(None).allowed
    assert _decide("user/Observation.rs").allowed
    write = _decide("user/Observation.rs", action="write")
    assert not write.allowed
    assert write.reason == "outside-token-scope"
    assert not write.hide_as_missing
    assert _decide("user/Observation.c", action="write").allowed
    other = _decide("patient/Observation.rs", launch="p2")
    assert other.reason == "outside-launch-patient"
    assert other.hide_as_missing
    # A scope never widens: no grant, no access, whatever the token says.
    stranger = _decide("user/*.cruds", patient="p9")
    assert stranger.reason == "no-grant-in-force"


@pytest.mark.parametrize("level", ["patient", "user", "system"])
def test_a_wildcard_never_writes_a_consent(level: str) -> None:
    wildcard = sc.parse(f"{level}/*.cruds")
    for letter in "cud":
        assert not sc.type_permitted(wildcard, rtype="Consent", letter=letter)
        assert sc.type_permitted(wildcard, rtype="Observation", letter=letter)
    for letter in "rs":
        assert sc.type_permitted(wildcard, rtype="Consent", letter=letter)
    named = sc.parse(f"{level}/Consent.cud")
    assert all(sc.type_permitted(named, rtype="Consent", letter=c) for c in "cud")


def test_outside_the_launch_patient_is_missing_whatever_the_type() -> None:
    # A patient/-only token launched for p2: the clinician's other patient p1 is hidden as missing
    # for every type. A type outside the scopes used to get a 403 there, telling the app that the
    # id exists in a record it was never given.
    for scope in ("patient/Observation.rs", "patient/Condition.rs", "patient/Observation.c"):
        for action in ("read", "write"):
            decision = _decide(scope, action=action, launch="p2")
            assert decision.reason == "outside-launch-patient", (scope, action)
            assert decision.hide_as_missing
    # With a user/ scope the account's own reach applies: outside the scopes is an open 403.
    assert _decide("patient/Observation.rs user/Condition.rs", action="write", launch="p2").reason == (
        "outside-token-scope"
    )
