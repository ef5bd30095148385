"""One minimal example per check in medvault.fhir.checks / parse: it is rejected, the issue names the
location, and no input value (a canary) appears in the OperationOutcome; and a close valid variant
is accepted."""

from __future__ import annotations

import base64
import copy
from typing import Any

import pytest

from medvault.fhir.checks import bundle_checks
from medvault.fhir.errors import InvalidResource, Issue
from medvault.fhir.parse import parse_json, validate

CANARY = "Qzx-Canary-7741"
DIV = '<div xmlns="http://www.w3.org/1999/xhtml">'
UUID = "urn:uuid:0b6e5f1c-6c55-4d53-9f3e-000000000001"


def issues_of(doc: dict[str, Any]) -> list[Issue]:
    try:
        validate(doc)
    except InvalidResource as exc:
        return exc.issues
    return []


def assert_rejected(doc: dict[str, Any], location: str, fragment: str) -> None:
    issues = issues_of(doc)
    assert any(i.expression == location and fragment in i.diagnostics for i in issues), issues
    for issue in issues:
        assert CANARY not in issue.diagnostics
        assert CANARY not in (issue.expression or "")


def patient(**extra: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": "p1", "name": [{"family": CANARY}], **extra}


def narrative(div: str) -> dict[str, Any]:
    return patient(text={"status": "generated", "div": div})


def obs(**extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        **extra,
    }


# --- value-level rules (the walk) -----------------------------------------------------------------

REJECTED: list[tuple[str, dict[str, Any], str, str]] = [
    ("blank string", patient(gender=" \t\n"), "Patient.gender", "whitespace-only"),
    ("empty string", patient(birthDate=""), "Patient.birthDate", "empty"),
    ("empty array", patient(telecom=[]), "Patient.telecom", "empty array"),
    ("empty object", patient(maritalStatus={}), "Patient.maritalStatus", "empty object"),
    ("control character", patient(name=[{"text": CANARY + "\x07"}]), "Patient.name[0].text", "control characters"),
    ("vertical tab", patient(name=[{"text": CANARY + "\x0b"}]), "Patient.name[0].text", "control characters"),
    ("script in string", patient(name=[{"text": CANARY + "<script>x</script>"}]), "Patient.name[0].text", "markup"),
    ("tag with tab, upper case", patient(name=[{"text": "<\tSCRIPT>" + CANARY}]), "Patient.name[0].text", "markup"),
    ("event handler, newline", patient(name=[{"text": CANARY + ' onClick\n="x"'}]), "Patient.name[0].text", "markup"),
    ("javascript url", patient(name=[{"text": "JavaScript :" + CANARY}]), "Patient.name[0].text", "markup"),
    ("data html url", patient(name=[{"text": "data: text/html," + CANARY}]), "Patient.name[0].text", "markup"),
    (
        "element id not unique",
        patient(name=[{"id": "n1", "family": CANARY}], address=[{"id": "n1", "city": CANARY}]),
        "Patient.address[0].id",
        "not unique",
    ),
    (
        "period ends before it starts",
        obs(effectivePeriod={"start": "2024-02-01", "end": "2024-01-31T23:00:00Z"}),
        "Observation.effectivePeriod",
        "per-1",
    ),
    (
        "range low above high",
        obs(referenceRange=[{"low": {"value": 9, "unit": "g"}, "high": {"value": 3, "unit": "g"}, "text": CANARY}]),
        "Observation.referenceRange[0]",
        "rng-2",
    ),
    (
        "ratio without denominator",
        obs(valueRatio={"numerator": {"value": 1}}),
        "Observation.valueRatio",
        "rat-1",
    ),
    (
        "attachment data without contentType",
        patient(photo=[{"data": base64.b64encode(CANARY.encode()).decode()}]),
        "Patient.photo[0]",
        "att-1",
    ),
    (
        "attachment size mismatch",
        patient(photo=[{"contentType": "image/png", "data": base64.b64encode(b"12345").decode(), "size": 6}]),
        "Patient.photo[0].size",
        "size",
    ),
    ("string over 1 MB", patient(name=[{"text": "x" * (1024 * 1024 + 1)}]), "Patient.name[0].text", "1 MB"),
]


@pytest.mark.parametrize(("doc", "location", "fragment"), [r[1:] for r in REJECTED], ids=[r[0] for r in REJECTED])
def test_value_rule_rejects(doc: dict[str, Any], location: str, fragment: str) -> None:
    assert_rejected(doc, location, fragment)


ACCEPTED: list[tuple[str, dict[str, Any]]] = [
    ("tab and newline in a string", patient(name=[{"text": "a\tb\r\nc"}])),
    ("ionisation= has no word boundary before 'on'", patient(name=[{"text": "ionisation=3"}])),
    ("session=1 is not an event handler", patient(name=[{"text": "sessionid=1"}])),
    (
        "period at mixed precision, same day",
        obs(effectivePeriod={"start": "2023-06-21", "end": "2023-06-21T06:20:00Z"}),
    ),
    (
        "range in different units",
        obs(referenceRange=[{"low": {"value": 9, "unit": "g"}, "high": {"value": 3, "unit": "kg"}}]),
    ),
    ("ratio with both parts", obs(valueRatio={"numerator": {"value": 1}, "denominator": {"value": 2}})),
    (
        "attachment of the stated size",
        patient(photo=[{"contentType": "image/png", "data": base64.b64encode(b"12345").decode(), "size": 5}]),
    ),
    (
        "base64 over 1 MB is not a string",
        patient(photo=[{"contentType": "image/png", "data": base64.b64encode(b"\0" * 800_000).decode()}]),
    ),
    (
        "same element id in two resources of a Bundle",
        {
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [
                {
                    "fullUrl": f"{UUID[:-1]}{i}",
                    "resource": {"resourceType": "Patient", "name": [{"id": "n1", "text": "x"}]},
                }
                for i in (1, 2)
            ],
        },
    ),
]


@pytest.mark.parametrize("doc", [a[1] for a in ACCEPTED], ids=[a[0] for a in ACCEPTED])
def test_value_rule_accepts(doc: dict[str, Any]) -> None:
    assert issues_of(doc) == []


# --- narrative XHTML ------------------------------------------------------------------------------

XHTML_REJECTED = [
    ("script element", DIV + "<p>" + CANARY + "</p><script>alert(1)</script></div>", "'script' element"),
    ("iframe element", DIV + "<iframe src='x'></iframe>" + CANARY + "</div>", "'iframe' element"),
    ("event attribute", DIV + '<p onmouseover="x()">' + CANARY + "</p></div>", "event handler"),
    ("javascript href", DIV + '<a href=" java\tscript:x()">' + CANARY + "</a></div>", "URL scheme"),
    ("data url not an image", DIV + '<a href="data:text/plain,' + CANARY + '">x</a></div>', "data: URLs"),
    ("svg image data url", DIV + '<img src="data:image/svg+xml,' + CANARY + '"/>y</div>', "data: URLs"),
    ("style expression", DIV + '<p style="width: expression(alert(1))">' + CANARY + "</p></div>", "style"),
    ("element FHIR does not allow", DIV + "<font>" + CANARY + "</font></div>", "'font' element"),
    ("unknown element not named", DIV + "<" + CANARY.replace("-", "") + "/>x</div>", "an element"),
    (
        "attribute FHIR does not allow",
        DIV + '<table><tr idref="' + CANARY + '"><td>x</td></tr></table></div>',
        "an attr",
    ),
    ("block element in a paragraph", DIV + "<p>" + CANARY + "<ul><li>x</li></ul></p></div>", "inside a paragraph"),
    ("not well-formed", DIV + "<p>" + CANARY + "</div>", "not well-formed"),
    ("HTML entity", DIV + CANARY + "&nbsp;</div>", "undefined entity"),
    ("DOCTYPE", '<!DOCTYPE x [<!ENTITY a "' + CANARY + '">]>' + DIV + "&a;</div>", "DOCTYPE"),
    ("comment", DIV + "<p>" + CANARY + "</p><!-- a comment --></div>", "XML comment"),
    ("comment smuggling markup", DIV + "<p>x</p><!--<img src=x onerror=alert(1)>-->" + CANARY + "</div>", "comment"),
    ("empty comment", DIV + CANARY + "<!----></div>", "XML comment"),
    ("CDATA section", DIV + "<pre><![CDATA[ <not markup> ]]>" + CANARY + "</pre></div>", "CDATA section"),
    ("CDATA smuggling markup", DIV + "<p><![CDATA[<script>alert(1)</script>]]></p>" + CANARY + "</div>", "CDATA"),
    # XML reads text; an HTML parser ends a bogus comment at the first ">" and then runs the <img>.
    ("CDATA mutation", DIV + "<p><![CDATA[ ><img src=x onerror=alert(1)> ]]>" + CANARY + "</p></div>", "CDATA"),
    ("conditional comment", DIV + "<!--[if IE]><script>x()</script><![endif]-->" + CANARY + "</div>", "comment"),
    ("processing instruction", DIV + "<?php echo 1 ?>" + CANARY + "</div>", "processing instruction"),
    ("no XHTML namespace", "<div><p>" + CANARY + "</p></div>", "XHTML namespace"),
    ("root is not a div", '<p xmlns="http://www.w3.org/1999/xhtml">' + CANARY + "</p>", "div element"),
    ("child in another namespace", DIV + '<p xmlns="urn:x">' + CANARY + "</p></div>", "XHTML namespace"),
    ("no content (txt-2)", DIV + "<p> </p>\n</div>", "txt-2"),
]


@pytest.mark.parametrize(("div", "fragment"), [x[1:] for x in XHTML_REJECTED], ids=[x[0] for x in XHTML_REJECTED])
def test_narrative_rejects(div: str, fragment: str) -> None:
    assert_rejected(narrative(div), "Patient.text.div", fragment)


XHTML_ACCEPTED = [
    DIV + "<p>Plain &lt;text&gt; &amp; &#169; &quot;quoted&quot;</p></div>",
    DIV + '<table class="grid"><thead><tr><th scope="col">a</th></tr></thead><tbody><tr><td colspan="2">b</td>'
    "</tr></tbody></table></div>",
    DIV + '<a name="top"/><a href="https://example.org/x?y=1#z">link</a> <a href="#top">back</a></div>',
    DIV + '<img src="data:image/png;base64,iVBORw0KGgo=" alt="logo"/></div>',
    DIV + '<span style="color: red" xml:lang="en" lang="en">x</span><br/></div>',
    DIV + "<pre>&lt;!-- not a comment --&gt; &lt;![CDATA[ not markup ]]&gt;</pre></div>",  # escaped: text
    DIV + "<ul><li><b>bold</b> and <i>italic</i></li></ul><p>onset=3 days</p></div>",
]


@pytest.mark.parametrize("div", XHTML_ACCEPTED)
def test_narrative_accepts(div: str) -> None:
    assert issues_of(narrative(div)) == []


# --- resource-level rules -------------------------------------------------------------------------


def condition(**extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Condition",
        "subject": {"reference": "Patient/p1"},
        "clinicalStatus": {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]
        },
        **extra,
    }


def with_contained(kid: dict[str, Any], ref: str = "#k1") -> dict[str, Any]:
    return condition(contained=[kid], asserter={"reference": ref})


PRACTITIONER = {"resourceType": "Practitioner", "id": "k1", "name": [{"family": CANARY}]}
LONG_ID = "a" * 65
ENTERED_IN_ERROR = {
    "coding": [
        {"system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification", "code": "entered-in-error"}
    ]
}

RESOURCE_REJECTED: list[tuple[str, dict[str, Any], str, str]] = [
    ("id longer than 64", patient(id=LONG_ID), "Patient.id", "longer than 64"),
    ("versionId longer than 64", patient(meta={"versionId": "1" * 65}), "Patient.meta.versionId", "longer than 64"),
    (
        "contained id longer than 64",
        with_contained({**PRACTITIONER, "id": LONG_ID}, "#" + LONG_ID),
        "Condition.contained[0].id",
        "64",
    ),
    (
        "nested contained (dom-2)",
        with_contained({**PRACTITIONER, "contained": [{"resourceType": "Organization", "id": "o", "name": "x"}]}),
        "Condition.contained[0].contained",
        "dom-2",
    ),
    (
        "contained not referenced (dom-3)",
        with_contained(PRACTITIONER, "Practitioner/x"),
        "Condition.contained[0]",
        "dom-3",
    ),
    (
        "contained with versionId (dom-4)",
        with_contained({**PRACTITIONER, "meta": {"versionId": "2"}}),
        "Condition.contained[0].meta",
        "dom-4",
    ),
    (
        "contained with security label (dom-5)",
        with_contained({**PRACTITIONER, "meta": {"security": [{"code": "R"}]}}),
        "Condition.contained[0].meta.security",
        "dom-5",
    ),
    (
        "local reference resolves to nothing (ref-1)",
        condition(asserter={"reference": "#nope"}),
        "Condition.asserter.reference",
        "ref-1",
    ),
    (
        "probability over 100 (ras-2)",
        {
            "resourceType": "RiskAssessment",
            "status": "final",
            "subject": {"reference": "Patient/p"},
            "prediction": [{"probabilityDecimal": 101}],
        },
        "RiskAssessment.prediction[0]",
        "ras-2",
    ),
    (
        "value and dataAbsentReason (obs-6)",
        obs(valueString=CANARY, dataAbsentReason={"text": "x"}),
        "Observation.dataAbsentReason",
        "obs-6",
    ),
    (
        "value and a component of the same code (obs-7)",
        obs(valueString=CANARY, component=[{"code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]}}]),
        "Observation.component[0]",
        "obs-7",
    ),
    (
        "allergy without clinicalStatus (ait-1)",
        {"resourceType": "AllergyIntolerance", "patient": {"reference": "Patient/p"}},
        "AllergyIntolerance.clinicalStatus",
        "ait-1",
    ),
    (
        "entered-in-error allergy with clinicalStatus (ait-2)",
        {
            "resourceType": "AllergyIntolerance",
            "patient": {"reference": "Patient/p"},
            "clinicalStatus": {"text": "x"},
            "verificationStatus": ENTERED_IN_ERROR,
        },
        "AllergyIntolerance.clinicalStatus",
        "ait-2",
    ),
    ("abated but active (con-4)", condition(abatementDateTime="2020-01-01"), "Condition.clinicalStatus", "con-4"),
    (
        "entered-in-error condition with clinicalStatus (con-5)",
        condition(
            verificationStatus={
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "entered-in-error"}
                ]
            }
        ),
        "Condition.clinicalStatus",
        "con-5",
    ),
    ("empty contact (pat-1)", patient(contact=[{"gender": "male"}]), "Patient.contact[0]", "pat-1"),
    ("contact point without system (cpt-2)", patient(telecom=[{"value": CANARY}]), "Patient.telecom[0]", "cpt-2"),
    (
        "empty section (cmp-1)",
        {
            "resourceType": "Composition",
            "status": "final",
            "type": {"text": "x"},
            "date": "2024-01-01",
            "author": [{"display": "x"}],
            "title": "t",
            "section": [{"title": CANARY}],
        },
        "Composition.section[0]",
        "cmp-1",
    ),
    (
        "section with entries and emptyReason (cmp-2)",
        {
            "resourceType": "Composition",
            "status": "final",
            "type": {"text": "x"},
            "date": "2024-01-01",
            "author": [{"display": "x"}],
            "title": "t",
            "section": [{"entry": [{"reference": "Patient/p"}], "emptyReason": {"text": "x"}}],
        },
        "Composition.section[0]",
        "cmp-2",
    ),
    (
        "item with answer and items (qrs-1)",
        {
            "resourceType": "QuestionnaireResponse",
            "status": "completed",
            "item": [{"linkId": "1", "answer": [{"valueString": CANARY}], "item": [{"linkId": "1.1"}]}],
        },
        "QuestionnaireResponse.item[0]",
        "qrs-1",
    ),
    (
        "activity with reference and detail (cpe-1)",
        {
            "resourceType": "CarePlan",
            "status": "active",
            "intent": "plan",
            "subject": {"reference": "Patient/p"},
            "activity": [{"reference": {"reference": "ServiceRequest/s"}, "detail": {"status": "scheduled"}}],
        },
        "CarePlan.activity[0]",
        "cpe-1",
    ),
]


@pytest.mark.parametrize(
    ("doc", "location", "fragment"), [r[1:] for r in RESOURCE_REJECTED], ids=[r[0] for r in RESOURCE_REJECTED]
)
def test_resource_rule_rejects(doc: dict[str, Any], location: str, fragment: str) -> None:
    assert_rejected(doc, location, fragment)


RESOURCE_ACCEPTED = [
    ("id of 64 characters", patient(id="a" * 64)),
    ("contained and referenced", with_contained(PRACTITIONER)),
    (
        "contained referring to its container",
        condition(contained=[{**PRACTITIONER, "id": "k9", "identifier": [{"system": "#"}]}]),
    ),
    (
        "entered-in-error allergy without clinicalStatus",
        {
            "resourceType": "AllergyIntolerance",
            "patient": {"reference": "Patient/p"},
            "verificationStatus": ENTERED_IN_ERROR,
        },
    ),
    (
        "resolved abated condition",
        condition(
            abatementDateTime="2020-01-01",
            clinicalStatus={
                "coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "resolved"}]
            },
        ),
    ),
    (
        "component with a different display is not the same coding (obs-7 compares whole codings)",
        obs(
            valueString="x",
            component=[{"code": {"coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "HR"}]}}],
        ),
    ),
]


@pytest.mark.parametrize("doc", [a[1] for a in RESOURCE_ACCEPTED], ids=[a[0] for a in RESOURCE_ACCEPTED])
def test_resource_rule_accepts(doc: dict[str, Any]) -> None:
    assert issues_of(doc) == []


# --- Bundle rules ---------------------------------------------------------------------------------


def entry(rtype: str, rid: str, full: str | None = None, **fields: Any) -> dict[str, Any]:
    res: dict[str, Any] = {"resourceType": rtype, "id": rid, **fields}
    if rtype == "Patient":
        res["name"] = [{"family": CANARY}]
    if rtype == "Observation":
        res.update(status="final", code={"text": "x"})
    return {"fullUrl": full or f"http://example.org/fhir/{rtype}/{rid}", "resource": res}


def composition_entry(**extra: Any) -> dict[str, Any]:
    e = entry("Composition", "c1")
    e["resource"].update(
        {
            "status": "final",
            "type": {"text": "summary"},
            "date": "2024-01-01",
            "author": [{"display": "x"}],
            "title": "t",
            "section": [{"text": {"status": "generated", "div": DIV + "x</div>"}}],
            **extra,
        }
    )
    return e


def document(*entries: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "document",
        "identifier": {"system": "urn:ietf:rfc:3986", "value": UUID},
        "timestamp": "2024-01-01T00:00:00Z",
        "entry": [composition_entry(), *entries],
        **extra,
    }


def collection(*entries: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "collection", "entry": list(entries), **extra}


def searchset(*entries: dict[str, Any], self_url: str = "http://example.org/fhir/Patient?name=x") -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "link": [{"relation": "self", "url": self_url}],
        "entry": list(entries),
    }


def versioned(e: dict[str, Any], version: str) -> dict[str, Any]:
    out = copy.deepcopy(e)
    out["resource"]["meta"] = {"versionId": version}
    return out


def two_versions(reference: str) -> dict[str, Any]:
    """A document holding two versions of one Patient (bdl-7 allows it) and a section entry to it."""
    doc = document(versioned(PAT, "1"), versioned(PAT, "2"))
    doc["entry"][0]["resource"]["section"][0]["entry"] = [{"reference": reference}]
    return doc


PAT = entry("Patient", "p1")

BUNDLE_REJECTED: list[tuple[str, dict[str, Any], str, str]] = [
    ("total outside a search (bdl-1)", collection(PAT, total=1), "Bundle.total", "bdl-1"),
    (
        "search outside a searchset (bdl-2)",
        collection({**PAT, "search": {"mode": "match"}}),
        "Bundle.entry[0].search",
        "bdl-2",
    ),
    (
        "request outside batch/transaction/history (bdl-3)",
        collection({**PAT, "request": {"method": "PUT", "url": "Patient/p1"}}),
        "Bundle.entry[0].request",
        "bdl-3",
    ),
    (
        "history entry without request (bdl-3)",
        {"resourceType": "Bundle", "type": "history", "entry": [{**PAT, "response": {"status": "200"}}]},
        "Bundle.entry[0].request",
        "bdl-3",
    ),
    (
        "response outside a response (bdl-4)",
        collection({**PAT, "response": {"status": "200"}}),
        "Bundle.entry[0].response",
        "bdl-4",
    ),
    (
        "batch-response entry without response (bdl-4)",
        {"resourceType": "Bundle", "type": "batch-response", "entry": [PAT]},
        "Bundle.entry[0].response",
        "bdl-4",
    ),
    ("entry with nothing (bdl-5)", collection({"fullUrl": UUID}), "Bundle.entry[0]", "bdl-5"),
    ("repeated fullUrl (bdl-7)", collection(PAT, PAT), "Bundle.entry[1].fullUrl", "bdl-7"),
    (
        "versioned fullUrl (bdl-8)",
        collection(entry("Patient", "p1", "http://x.org/Patient/p1/_history/1")),
        "Bundle.entry[0].fullUrl",
        "bdl-8",
    ),
    (
        "document without identifier (bdl-9)",
        {**document(), "identifier": {"value": UUID}},
        "Bundle.identifier",
        "bdl-9",
    ),
    (
        "document without date (bdl-10)",
        {k: v for k, v in document().items() if k != "timestamp"},
        "Bundle.timestamp",
        "bdl-10",
    ),
    ("document not starting with a Composition (bdl-11)", {**document(), "entry": [PAT]}, "Bundle.entry[0]", "bdl-11"),
    (
        "message not starting with a MessageHeader (bdl-12)",
        {"resourceType": "Bundle", "type": "message", "entry": [PAT]},
        "Bundle.entry[0]",
        "bdl-12",
    ),
    ("relative fullUrl", collection(entry("Patient", "p1", "Patient/p1")), "Bundle.entry[0].fullUrl", "absolute"),
    (
        "RESTful fullUrl of another resource",
        collection(entry("Patient", "p1", "http://x.org/fhir/Patient/p2")),
        "Bundle.entry[0].fullUrl",
        "type and id",
    ),
    (
        "two self links",
        {**searchset(), "link": [{"relation": "self", "url": "http://x/Patient"}] * 2},
        "Bundle.link[1]",
        "only occur once",
    ),
    (
        "search match without id",
        searchset({"fullUrl": UUID, "resource": {"resourceType": "Patient"}, "search": {"mode": "match"}}),
        "Bundle.entry[0].resource",
        "must have ids",
    ),
    (
        "search match of another type",
        searchset({**entry("Observation", "o1"), "search": {"mode": "match"}}),
        "Bundle.entry[0].resource",
        "resource type the search asked for",
    ),
    (
        "search outcome not an OperationOutcome",
        searchset({**PAT, "search": {"mode": "outcome"}}),
        "Bundle.entry[0].resource",
        "OperationOutcome",
    ),
    (
        "ambiguous reference across versions",
        two_versions("Patient/p1"),
        "Bundle.entry[0].resource.section[0].entry[0].reference",
        "more than one",
    ),
    (
        "versioned reference to a version not there",
        two_versions("Patient/p1/_history/3"),
        "Bundle.entry[0].resource.section[0].entry[0].reference",
        "matches no entry",
    ),
    (
        "entry resources are checked too",
        collection(entry("Patient", LONG_ID, UUID)),
        "Bundle.entry[0].resource.id",
        "64",
    ),
]


@pytest.mark.parametrize(
    ("doc", "location", "fragment"), [r[1:] for r in BUNDLE_REJECTED], ids=[r[0] for r in BUNDLE_REJECTED]
)
def test_bundle_rule_rejects(doc: dict[str, Any], location: str, fragment: str) -> None:
    assert_rejected(doc, location, fragment)


def test_bundle_rules_accept_conformant_bundles() -> None:
    for doc in (
        document(PAT),
        two_versions("Patient/p1/_history/2"),
        collection(entry("Patient", "p1", UUID), PAT),
        searchset({**PAT, "search": {"mode": "match"}}, {**entry("Organization", "o"), "search": {"mode": "include"}}),
        searchset(
            {**entry("Observation", "o1"), "search": {"mode": "match"}}, self_url="http://x/fhir/Patient/p1/Observation"
        ),
    ):
        assert issues_of(doc) == [], doc


def test_bundle_checks_for_transactions_leave_entries_and_duplicates_to_check_bundle() -> None:
    dup = {"request": {"method": "POST", "url": "Patient"}}
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{**entry("Patient", LONG_ID, UUID), **dup}, {**entry("Patient", "p2", UUID), **dup}],
    }
    assert bundle_checks(bundle) == []  # per-entry validation and duplicate fullUrls: records.bundles
    bundle["entry"].append({"fullUrl": "Patient/x", "resource": {"resourceType": "Patient"}})
    issues = bundle_checks(bundle)
    assert [i.expression for i in issues] == ["Bundle.entry[2].fullUrl"]


# --- parse ----------------------------------------------------------------------------------------


def test_byte_order_mark_is_ignored() -> None:
    assert parse_json(b'\xef\xbb\xbf{"resourceType": "Patient"}') == {"resourceType": "Patient"}


def test_required_choice_given_only_as_a_data_absent_extension_is_accepted() -> None:
    absent = {
        "extension": [{"url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason", "valueCode": "unknown"}]
    }
    imm = {
        "resourceType": "Immunization",
        "status": "completed",
        "vaccineCode": {"text": "x"},
        "patient": {"reference": "Patient/p"},
        "_occurrenceDateTime": absent,
    }
    assert issues_of(imm) == []
    del imm["_occurrenceDateTime"]
    assert [i.expression for i in issues_of(imm)] == ["Immunization"]


def test_unknown_resource_type_is_not_echoed() -> None:
    issues = issues_of({"resourceType": CANARY.replace("-", "")})
    assert [(i.expression, CANARY.replace("-", "") in i.diagnostics) for i in issues] == [("resourceType", False)]
