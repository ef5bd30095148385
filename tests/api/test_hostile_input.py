"""Hostile input through the HTTP API, on SQLite and PostgreSQL: NUL bytes, impossible ids and
versions, unparseable URLs, deep nesting, smuggled narrative markup. Each gets a 4xx
OperationOutcome (never a 500 or a traceback) and the store is left exactly as it was.

Ids are checked in the services before any query: PostgreSQL refuses NUL in text, which gave 500s.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medvault.fhir.types import is_fhir_id
from tests.api.support import JSON_HEADERS, create, ok, outcome
from tests.helpers import post_streamed

SECRET = "Zyxwquartz"
TYPES = ("Patient", "Observation")  # every write these requests could make

# Ids no resource can have: NUL (raw and as text), Unicode, over-long, whitespace, an encoded NUL.
BAD_IDS = [
    "a\x00b",
    "\x00",
    "%00",
    "é",
    "\uff41\uff42\uff43",  # fullwidth letters
    "\u0661\u0662\u0663",  # Arabic-Indic digits: str.isdigit() says yes, FHIR says no
    "a" * 65,
    "a b",
    "semi;colon",
    "under_score",
    f"{SECRET}\x00",
]


def _seg(text: str) -> str:
    """A path segment carrying any text, lone surrogates included (as their UTF-8-ish bytes)."""
    return quote(text.encode("utf-8", "surrogatepass"), safe="")


@pytest.fixture(scope="module")
def world(module_api: Any) -> dict[str, str]:
    """One patient with one observation, so that lookups run against real rows."""
    pid = create(module_api, {"resourceType": "Patient", "name": [{"family": "Hostile"}]})["id"]
    oid = create(
        module_api,
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "x"},
            "subject": {"reference": f"Patient/{pid}"},
        },
    )["id"]
    return {"patient": pid, "observation": oid}


def snapshot(api: Any) -> dict[str, int]:
    """Every version the store holds, per type (a write of any kind adds one)."""
    return {t: ok(api.get(f"/fhir/{t}/_history", params={"_count": "0"}))["total"] for t in TYPES}


@pytest.fixture
def api(module_api: Any, world: dict[str, str]) -> Iterator[Any]:
    """The module's client; asserts that the test left the store unchanged."""
    before = snapshot(module_api)
    yield module_api
    assert snapshot(module_api) == before, "hostile input changed the store"


def rejected(response: Any, status: int | tuple[int, ...] = (400, 404, 422)) -> dict[str, Any]:
    body = outcome(response, status)
    assert SECRET not in response.text
    return body


def expressions(body: dict[str, Any]) -> list[str]:
    return [e for issue in body["issue"] for e in issue.get("expression", [])]


# ---------------------------------------------------------------------------------------------
# ids and versions in the URL path


@pytest.mark.parametrize("rid", BAD_IDS, ids=range(len(BAD_IDS)))
def test_impossible_ids_in_the_path(api: Any, world: dict[str, str], rid: str) -> None:
    seg = _seg(rid)
    for path in (
        f"/fhir/Patient/{seg}",
        f"/fhir/Patient/{seg}/_history/1",
        f"/fhir/Patient/{seg}/_history",
        f"/fhir/Patient/{seg}/$everything",
    ):
        rejected(api.get(path), 404)
    rejected(api.delete(f"/fhir/Observation/{seg}"), 404)
    body = {"resourceType": "Patient", "id": rid}
    rejected(api.put(f"/fhir/Patient/{seg}", json=body, headers=JSON_HEADERS), 400)


@pytest.mark.parametrize(
    "vid", ["0", "00", "-1", "2147483648", "99999999999", "9" * 5000, "1.0", "1e3", "\uff11", "\u0663", "%00"]
)
def test_impossible_version_ids(api: Any, world: dict[str, str], vid: str) -> None:
    rejected(api.get(f"/fhir/Patient/{world['patient']}/_history/{vid}"), (400, 404))


def test_the_rejections_say_where(api: Any, world: dict[str, str]) -> None:
    assert expressions(rejected(api.get("/fhir/Patient/a%00b"), 404)) == ["Patient.id"]
    body = rejected(api.put("/fhir/Patient/a%00b", json={"resourceType": "Patient"}, headers=JSON_HEADERS), 400)
    assert expressions(body) == ["Patient.id"]
    # A valid id that is merely absent is still a plain 404.
    outcome(api.get("/fhir/Patient/no-such-patient"), 404)


# ---------------------------------------------------------------------------------------------
# search values that would reach the database, or name no resource


SEARCHES = [
    ("Patient", {"_id": "a\x00b"}, "_id"),
    ("Patient", {"_id": "a" * 65}, "_id"),
    ("Patient", {"_id": "é"}, "_id"),
    ("Patient", {"_id": "ok,bad\x00"}, "_id"),
    ("Observation", {"_id": "%00"}, "_id"),
    ("Observation", {"patient": "Patient/"}, "patient"),
    ("Observation", {"patient": "Patient/a\x00"}, "patient"),
    ("Observation", {"patient": "a\x00"}, "patient"),
    ("Observation", {"subject": "é"}, "subject"),
    ("Observation", {"subject": "Patient/" + "a" * 65}, "subject"),
    ("Observation", {"encounter": "Encounter/"}, "encounter"),
    ("Observation", {"encounter": "a\x00"}, "encounter"),
    ("Observation", {"encounter": "Nonsense/1"}, "encounter"),
]


@pytest.mark.parametrize(("rtype", "params", "where"), SEARCHES, ids=range(len(SEARCHES)))
def test_searches_with_impossible_ids(api: Any, rtype: str, params: dict[str, str], where: str) -> None:
    assert expressions(rejected(api.get(f"/fhir/{rtype}", params=params), 400)) == [where]
    rejected(api.post(f"/fhir/{rtype}/_search", data=params), 400)
    # lenient handling ignores unknown parameters, not bad values of known ones
    rejected(api.get(f"/fhir/{rtype}", params=params, headers={"Prefer": "handling=lenient"}), 400)


def test_conditional_requests_with_impossible_ids(api: Any) -> None:
    rejected(api.delete("/fhir/Patient", params={"_id": "a\x00"}), 400)
    patient = {"resourceType": "Patient", "name": [{"family": "Cond"}]}
    rejected(api.post("/fhir/Patient", json=patient, headers={**JSON_HEADERS, "If-None-Exist": "_id=a%00"}), 400)


# ---------------------------------------------------------------------------------------------
# deep nesting


def _nested_extension(levels: int) -> dict[str, Any]:
    """A Patient whose extensions nest `levels` deep: JSON depth 1 + 2 * levels."""
    ext: dict[str, Any] = {"url": "http://example.org/x", "valueString": "leaf"}
    for _ in range(levels - 1):
        ext = {"url": "http://example.org/x", "extension": [ext]}
    return {"resourceType": "Patient", "extension": [ext]}


def _deep_bytes(prefix: str, opener: str, closer: str, n: int, suffix: str) -> bytes:
    return (prefix + opener * n + closer * n + suffix).encode()


DEEP = {
    "arrays in an extension": _deep_bytes(
        '{"resourceType":"Patient","extension":[{"url":"u","extension":', "[", "]", 10_000, "}]}"
    ),
    "objects in a contained resource": (
        b'{"resourceType":"Patient","contained":[' + b'{"a":' * 10_000 + b"1" + b"}" * 10_000 + b"]}"
    ),
    "600 levels (over orjson.dumps's 255)": _deep_bytes('{"resourceType":"Patient","extension":', "[", "]", 600, "}"),
    "65 levels": _deep_bytes('{"resourceType":"Patient","extension":', "[", "]", 64, "}"),
}


@pytest.mark.parametrize("raw", DEEP.values(), ids=DEEP.keys())
def test_deep_nesting_is_refused_before_anything_recurses(api: Any, world: dict[str, str], raw: bytes) -> None:
    body = rejected(api.post("/fhir/Patient", content=raw, headers=JSON_HEADERS), 400)
    assert body["issue"][0]["code"] == "too-costly"
    pid = world["patient"]
    rejected(api.put(f"/fhir/Patient/{pid}", content=raw, headers=JSON_HEADERS), 400)
    entry = b'{"request":{"method":"POST","url":"Patient"},"resource":' + raw + b"}"
    for kind in (b"transaction", b"batch"):
        bundle = b'{"resourceType":"Bundle","type":"' + kind + b'","entry":[' + entry + b"]}"
        rejected(api.post("/fhir", content=bundle, headers=JSON_HEADERS), 400)


def test_depth_limit_boundary(module_api: Any) -> None:
    """31 nested extensions (JSON depth 63) are fine; 32 (depth 65) are not."""
    before = snapshot(module_api)
    deep = _nested_extension(32)
    rejected(module_api.post("/fhir/Patient", json=deep, headers=JSON_HEADERS), 400)
    assert snapshot(module_api) == before
    created = create(module_api, _nested_extension(31))
    assert ok(module_api.get(f"/fhir/Patient/{created['id']}"))["extension"] == _nested_extension(31)["extension"]


# ---------------------------------------------------------------------------------------------
# narrative markup that sanitisers miss


@pytest.mark.parametrize(
    "inner",
    [
        "<!-- <img src=x onerror=alert(1)> -->",
        "<!---->",
        "<![CDATA[<script>alert(1)</script>]]>",
        "<![CDATA[ ><img src=x onerror=alert(1)> ]]>",  # an HTML parser runs the <img>
        '<!DOCTYPE x [<!ENTITY a "b">]>',
    ],
)
def test_narrative_comments_and_cdata_are_refused(api: Any, inner: str) -> None:
    div = f'<div xmlns="http://www.w3.org/1999/xhtml"><p>{SECRET}</p>{inner}</div>'
    patient = {"resourceType": "Patient", "text": {"status": "generated", "div": div}}
    body = rejected(api.post("/fhir/Patient", json=patient, headers=JSON_HEADERS), 422)
    assert "Patient.text.div" in expressions(body)
    assert {i["code"] for i in body["issue"]} == {"security"}


# ---------------------------------------------------------------------------------------------
# transaction and batch entries


def _bundle(kind: str, *entries: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def _patient_entry(method: str, url: str, **extra: Any) -> dict[str, Any]:
    return {
        "resource": {"resourceType": "Patient", "name": [{"family": "Tx"}]},
        "request": {"method": method, "url": url},
        **extra,
    }


BAD_ENTRIES = {
    "unparseable url": {"request": {"method": "GET", "url": "http://[::1"}},
    "unparseable url with a path": {"request": {"method": "GET", "url": "http://[::1/Patient/1"}},
    "NUL in a read url": {"request": {"method": "GET", "url": "Patient/a\x00"}},
    "encoded NUL in a read url": {"request": {"method": "GET", "url": "Patient/a%00"}},
    "tab in a url (urlsplit would drop it)": {"request": {"method": "GET", "url": "Pati\tent/1"}},
    "unicode id": {"request": {"method": "GET", "url": "Patient/é"}},
    "over-long id to delete": {"request": {"method": "DELETE", "url": "Patient/" + "a" * 65}},
    "NUL id to delete": {"request": {"method": "DELETE", "url": "Patient/a\x00"}},
    "version not a number": {"request": {"method": "GET", "url": "Patient/x/_history/abc"}},
    "version zero": {"request": {"method": "GET", "url": "Patient/x/_history/0"}},
    "version too large": {"request": {"method": "GET", "url": "Patient/x/_history/2147483648"}},
    "version with 5000 digits": {"request": {"method": "GET", "url": "Patient/x/_history/" + "9" * 5000}},
    "operation url": {"request": {"method": "GET", "url": "Patient/x/$everything"}},
    "search with a NUL _id": {"request": {"method": "GET", "url": "Observation?_id=a%00"}},
    "search for Patient/ (no id)": {"request": {"method": "GET", "url": "Observation?patient=Patient/"}},
    "conditional delete with a NUL _id": {"request": {"method": "DELETE", "url": "Patient?_id=a%00"}},
    "put without an id": _patient_entry("PUT", "Patient"),
    "put with an over-long id": _patient_entry("PUT", "Patient/" + "b" * 65),
    "put with a NUL id": _patient_entry("PUT", "Patient/b\x00"),
    "put to another type": _patient_entry("PUT", "Observation/tx-1"),
    "post to another type": _patient_entry("POST", "Observation"),
    "conditional create with a NUL _id": _patient_entry(
        "POST", "Patient", request={"method": "POST", "url": "Patient", "ifNoneExist": "_id=a%00"}
    ),
    "unparseable fullUrl": _patient_entry("POST", "Patient", fullUrl="http://[::1/Patient/x"),
    "NUL in fullUrl": _patient_entry("POST", "Patient", fullUrl="urn:uuid:a\x00"),
    "space in fullUrl": _patient_entry("POST", "Patient", fullUrl="urn:uuid:a b"),
}


def test_bad_transaction_entries(api: Any) -> None:
    for name, entry in BAD_ENTRIES.items():
        # A good entry first: the transaction must leave no trace of it either.
        doc = _bundle("transaction", _patient_entry("POST", "Patient"), entry)
        response = api.post("/fhir", json=doc, headers=JSON_HEADERS)
        assert response.status_code == 400, (name, response.text)
        where = expressions(rejected(response, 400))
        assert where, name
        assert all(e.startswith("Bundle.entry[1]") for e in where), (name, where)


def test_bad_batch_entries(api: Any) -> None:
    """One batch of every bad entry: each gets its own 4xx outcome naming it; nothing is written."""
    names = list(BAD_ENTRIES)
    result = ok(api.post("/fhir", json=_bundle("batch", *BAD_ENTRIES.values()), headers=JSON_HEADERS))
    assert len(result["entry"]) == len(names)
    for i, (name, entry) in enumerate(zip(names, result["entry"], strict=True)):
        response = entry["response"]
        assert response["status"].split()[0] in ("400", "404"), (name, response)
        issues = response["outcome"]["issue"]
        assert issues[0]["severity"] == "error", name
        assert all(e.startswith(f"Bundle.entry[{i}]") for issue in issues for e in issue["expression"]), (name, issues)


def test_transaction_put_type_mismatch_says_where(api: Any) -> None:
    doc = _bundle("transaction", _patient_entry("PUT", "Observation/tx-1"))
    body = rejected(api.post("/fhir", json=doc, headers=JSON_HEADERS), 400)
    assert expressions(body) == ["Bundle.entry[0].request.url"]
    outcome(api.get("/fhir/Patient/tx-1"), 404)
    outcome(api.get("/fhir/Observation/tx-1"), 404)


def test_transaction_vread_entry(module_api: Any, world: dict[str, str]) -> None:
    """`Type/id/_history/version` reads that version (it used to read the current one)."""
    pid = world["patient"]
    doc = _bundle("batch", {"request": {"method": "GET", "url": f"Patient/{pid}/_history/1"}})
    entry = ok(module_api.post("/fhir", json=doc, headers=JSON_HEADERS))["entry"][0]
    assert entry["response"]["status"] == "200 OK"
    assert entry["resource"]["meta"]["versionId"] == "1"
    doc = _bundle("batch", {"request": {"method": "GET", "url": f"Patient/{pid}/_history/7"}})
    entry = ok(module_api.post("/fhir", json=doc, headers=JSON_HEADERS))["entry"][0]
    assert entry["response"]["status"].startswith("404")


# ---------------------------------------------------------------------------------------------
# fuzzing: arbitrary text (NUL, controls, surrogates...) never gets a 5xx

# Any code point, lone surrogates included, with the characters that matter here made frequent.
_ANY_TEXT = st.text(
    st.sampled_from("\x00\t\n /,|%?#$-._:[]aZ9") | st.characters(exclude_categories=()), min_size=1, max_size=80
)
_FUZZ = settings(
    max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
_QUERY_PARAMS = [
    ("Patient", "_id"),
    ("Patient", "family"),
    ("Patient", "birthdate"),
    ("Patient", "identifier"),
    ("Patient", "_lastUpdated"),
    ("Observation", "patient"),
    ("Observation", "subject"),
    ("Observation", "encounter"),
    ("Observation", "code"),
    ("Observation", "date"),
    ("Observation", "_sort"),
    ("Observation", "_count"),
]


def _no_5xx(response: Any) -> None:
    assert response.status_code < 500, (response.status_code, response.text)
    assert "Traceback" not in response.text


@_FUZZ
@given(text=_ANY_TEXT)
def test_fuzz_path_ids(api: Any, text: str) -> None:
    seg = _seg(text)
    for path in (f"/fhir/Patient/{seg}", f"/fhir/Patient/{seg}/_history", f"/fhir/Patient/{seg}/$everything"):
        _no_5xx(api.get(path))
    _no_5xx(api.get(f"/fhir/Patient/{seg}/_history/1"))
    _no_5xx(api.get(f"/fhir/Observation/{seg}"))
    if not is_fhir_id(text):  # a valid id would be a (harmless) write: keep the store unchanged
        response = api.put(f"/fhir/Patient/{seg}", json={"resourceType": "Patient", "id": "x"}, headers=JSON_HEADERS)
        assert 400 <= response.status_code < 500, response.text
        response = api.delete(f"/fhir/Observation/{seg}")
        assert 400 <= response.status_code < 500, response.text


@pytest.mark.parametrize(("rtype", "name"), _QUERY_PARAMS, ids=[f"{t}-{n}" for t, n in _QUERY_PARAMS])
@settings(_FUZZ, max_examples=12)
@given(text=_ANY_TEXT)
def test_fuzz_query_values(api: Any, rtype: str, name: str, text: str) -> None:
    value = quote(text.encode("utf-8", "surrogatepass"), safe="")
    _no_5xx(api.get(f"/fhir/{rtype}?{name}={value}"))
    # The same text in a batch: as a request url, an id, a search value and a parameter name.
    try:
        url = text.encode("utf-8").decode()
    except UnicodeEncodeError:
        url = value  # lone surrogates cannot travel in JSON: send them percent-encoded
    urls = [url, f"{rtype}/{url}", f"{rtype}?{name}={value}", f"{rtype}?{value}=1"]
    doc = _bundle("batch", *({"request": {"method": "GET", "url": u}} for u in urls))
    _no_5xx(api.post("/fhir", json=doc, headers=JSON_HEADERS))


NESTED_UNKNOWN = {
    "contained": ("/fhir/Patient", {"resourceType": "Patient", "contained": [{"resourceType": "Foo", "id": "x"}]}),
    "bundle entry": (
        "/fhir/Bundle",
        {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": {"resourceType": "Foo"}}]},
    ),
    "parameters": (
        "/fhir/Parameters",
        {"resourceType": "Parameters", "parameter": [{"name": "p", "resource": {"resourceType": "Foo"}}]},
    ),
}


@pytest.mark.parametrize(("path", "body"), NESTED_UNKNOWN.values(), ids=NESTED_UNKNOWN.keys())
def test_nested_resource_of_unknown_type(api: Any, path: str, body: dict[str, Any]) -> None:
    """fhir_core raised KeyError for these (a 500 before); in a batch it failed the whole request."""
    rejected(api.post(path, json=body, headers=JSON_HEADERS), (400, 422))
    batch = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [{"request": {"method": "POST", "url": path.removeprefix("/fhir/")}, "resource": body}],
    }
    response = api.post("/fhir", json=batch, headers=JSON_HEADERS)
    assert response.status_code == 200, response.text
    assert response.json()["entry"][0]["response"]["status"].startswith(("400", "422"))


@pytest.mark.parametrize("path", ["/fhir", "/fhir/Observation", "/fhir/Observation/_search"])
@pytest.mark.parametrize("declared", [False, True])
def test_a_huge_body_is_refused_without_reading_it_all(vault_env: Any, path: str, declared: bool) -> None:
    # Any token holder (an app a patient approved, say) could make the server buffer a body of any
    # size before its 32 MiB limit was looked at: the limit now stops the reading itself.
    from medvault.api.app import create_app
    from medvault.fhir.parse import MAX_BODY_BYTES

    chunk = 1024 * 1024
    chunks = MAX_BODY_BYTES // chunk + 16
    token = vault_env.settings.token_path.read_text().strip()
    ctype = "application/x-www-form-urlencoded" if path.endswith("_search") else "application/fhir+json"
    headers = {"authorization": f"Bearer {token}", "content-type": ctype}
    status, read = post_streamed(
        create_app(vault_env.settings),
        path,
        headers=headers,
        chunk=chunk,
        chunks=chunks,
        content_length=chunk * chunks if declared else None,
    )
    assert status in (400, 413), status
    assert read == 0 if declared else read <= MAX_BODY_BYTES // chunk + 1, read
