"""Transaction and batch Bundles.

A transaction is validated whole before anything is written (every entry, duplicate fullUrls,
internal references that resolve to nothing), then executed in FHIR order (DELETE, POST, PUT, GET)
inside the caller's single database transaction: any failure raises and nothing is stored.
A batch runs each entry in its own savepoint and reports per-entry outcomes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson

from medvault.errors import MedvaultError
from medvault.fhir import bundles as fb
from medvault.fhir import checks as fhir_checks
from medvault.fhir import parse as fhir_parse
from medvault.fhir.errors import InvalidResource, Issue
from medvault.fhir.types import MAX_VERSION, is_fhir_id, is_resource_type, is_version_id
from medvault.records import guard, service
from medvault.records.errors import BadRequest, Gone, NotFound, PreconditionFailed, VersionConflict
from medvault.records.vault import Vault, index_entries

ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}
URN_PREFIXES = ("urn:uuid:", "urn:oid:")
# FHIR `uri` values have no whitespace; control characters never belong in a URL (urlsplit would
# even drop tabs and newlines silently, and PostgreSQL refuses NUL in text).
_URL_NOISE = re.compile(r"[\x00-\x20\x7f]")
_ID_RULE = "1-64 characters of A-Z, a-z, 0-9, '-' and '.'"


class UnsupportedRequest(BadRequest):
    """An entry request this server does not implement (400, like every other request problem)."""

    code = "not-supported"


@dataclass(frozen=True)
class _Request:
    """An entry's checked request.url: `Type`, `Type/id` or (reads) `Type/id/_history/version`,
    with its query parameters (decoded once)."""

    rtype: str
    rid: str | None
    version: int | None
    query: list[tuple[str, str]]


@dataclass
class _Entry:
    index: int
    method: str
    url: str
    full_url: str | None
    resource: dict[str, Any] | None
    if_none_exist: str | None
    if_match: str | None
    request: _Request
    target: tuple[str, str] | None = None  # (type, id) once known
    skip: bool = False  # conditional create matched an existing resource


def _where(i: int) -> str:
    return f"Bundle.entry[{i}]"


@contextmanager
def _naming_entry(index: int) -> Iterator[None]:
    """Errors raised while an entry runs (a search's, a read's) name that entry when they name
    nothing more precise in the Bundle (a search error names only its parameter)."""
    try:
        yield
    except MedvaultError as exc:
        if not isinstance(exc, InvalidResource) and not (exc.location or "").startswith("Bundle."):
            exc.location = _where(index)
        raise


def check_bundle(bundle: dict[str, Any], *, validate: bool = True) -> list[_Entry]:
    """Structural checks of a transaction/batch Bundle and its entries; raises with every issue.
    `validate=False` skips per-resource validation already done (import validates in worker processes)."""
    # Bundle-level rules (bdl-*, fullUrl shape, links); entries and duplicate fullUrls are checked below.
    issues: list[Issue] = fhir_checks.bundle_checks(bundle) if validate else []
    entries_raw = bundle.get("entry", [])
    if not isinstance(entries_raw, list):
        raise InvalidResource([Issue("structure", "Bundle.entry must be an array", "Bundle.entry")])
    entries: list[_Entry] = []
    seen_full: dict[str, int] = {}
    # Problems with an entry's URLs are request errors (400), raised as the first one found: the
    # resources' own issues (422 unless structural) are secondary to a request that cannot run.
    url_problem: BadRequest | None = None
    for i, raw in enumerate(entries_raw):
        if not isinstance(raw, dict):
            issues.append(Issue("structure", "entry must be an object", _where(i)))
            continue
        req = raw.get("request")
        if not isinstance(req, dict) or not isinstance(req.get("method"), str) or not isinstance(req.get("url"), str):
            issues.append(Issue("required", "entry.request with method and url is required", f"{_where(i)}.request"))
            continue
        method = req["method"].upper()
        if method not in ORDER:
            issues.append(Issue("not-supported", "request method not supported", f"{_where(i)}.request.method"))
            continue
        if method == "PATCH":
            issues.append(Issue("not-supported", "PATCH is not supported", f"{_where(i)}.request.method"))
            continue
        full = raw.get("fullUrl") if isinstance(raw.get("fullUrl"), str) else None
        try:
            if full is not None:
                _check_full_url(full, f"{_where(i)}.fullUrl")
            request = _parse_request(method, req["url"], f"{_where(i)}.request.url")
            resource_type = raw["resource"].get("resourceType") if isinstance(raw.get("resource"), dict) else None
            if method in ("POST", "PUT") and isinstance(resource_type, str) and resource_type != request.rtype:
                raise BadRequest("resourceType does not match the request url", location=f"{_where(i)}.request.url")
        except BadRequest as exc:
            url_problem = url_problem or exc
            continue
        if full is not None:
            if full in seen_full:
                issues.append(
                    Issue(
                        "invariant",
                        f"duplicate fullUrl (also entry {seen_full[full]})",
                        f"{_where(i)}.fullUrl",
                    )
                )
            seen_full[full] = i
        resource = raw.get("resource")
        if method in ("POST", "PUT"):
            if not isinstance(resource, dict):
                issues.append(Issue("required", f"{method} entry needs a resource", f"{_where(i)}.resource"))
                continue
            if validate:
                try:
                    fhir_parse.validate(resource, where=f"{_where(i)}.resource")
                except InvalidResource as exc:
                    issues.extend(exc.issues)
                    continue
        entries.append(
            _Entry(
                i,
                method,
                req["url"],
                full,
                resource if isinstance(resource, dict) else None,
                req.get("ifNoneExist") if isinstance(req.get("ifNoneExist"), str) else None,
                req.get("ifMatch") if isinstance(req.get("ifMatch"), str) else None,
                request,
            )
        )
    if url_problem is not None:
        raise url_problem
    if bundle.get("type") == "transaction" and validate:
        issues.extend(_dangling_references(entries, set(seen_full)))
    if issues:
        raise InvalidResource(issues)
    return entries


def _walk_refs(node: Any, path: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str):
                out.append((f"{path}.reference", value))
            else:
                out.extend(_walk_refs(value, f"{path}.{key}"))
    elif isinstance(node, list):
        for i, item in enumerate(node):
            out.extend(_walk_refs(item, f"{path}[{i}]"))
    return out


def _dangling_references(entries: list[_Entry], full_urls: set[str]) -> list[Issue]:
    issues = []
    for e in entries:
        if e.resource is None:
            continue
        # Byte scan first; the walk (which knows locations) runs only for a resource that fails it.
        refs = [m.decode() for m in _URN_REFERENCE.findall(orjson.dumps(e.resource))]
        if all(r in full_urls for r in refs):
            continue
        for where, ref in _walk_refs(e.resource, f"{_where(e.index)}.resource"):
            if ref.startswith(URN_PREFIXES) and ref not in full_urls:
                issues.append(Issue("not-found", "reference does not resolve to any entry of this transaction", where))
    return issues


def _check_full_url(full: str, where: str) -> None:
    if _URL_NOISE.search(full):
        raise BadRequest("fullUrl contains whitespace or control characters", location=where)
    try:
        urlsplit(full)
    except ValueError:  # e.g. "http://[::1": an unclosed IPv6 literal
        raise BadRequest("fullUrl is not a valid URL", location=where) from None


def _parse_request(method: str, url: str, where: str) -> _Request:
    """Checks an entry's request.url before anything runs; errors name `where`, never the url."""
    if _URL_NOISE.search(url):
        raise BadRequest("request url contains whitespace or control characters", location=where)
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. "http://[::1": an unclosed IPv6 literal
        raise BadRequest("request url is not a valid URL", location=where) from None
    path = parts.path.strip("/")
    segs = path.split("/") if path else []
    if not segs or not is_resource_type(segs[0]):
        raise BadRequest("entry request url must start with a known resource type", location=where)
    rid = segs[1] if len(segs) > 1 else None
    if rid is not None and not is_fhir_id(rid):
        raise BadRequest(f"the id in the request url is not a valid FHIR id ({_ID_RULE})", location=where)
    version = None
    if len(segs) == 4 and segs[2] == "_history" and method in ("GET", "HEAD"):
        # At most 10 digits before int(): Python refuses to convert over 4,300 (a ValueError).
        digits = segs[3]
        if not (digits.isascii() and digits.isdigit() and len(digits) <= 10 and is_version_id(int(digits))):
            raise BadRequest(
                f"the version in the request url is not a whole number from 1 to {MAX_VERSION}", location=where
            )
        version = int(digits)
    elif len(segs) > 2:
        raise UnsupportedRequest(
            "entry request url is not supported (Type, Type/id, Type?query or, to read, Type/id/_history/version)",
            location=where,
        )
    if method == "PUT" and rid is None:
        raise UnsupportedRequest("conditional update is not supported: PUT needs Type/id", location=where)
    return _Request(segs[0], rid, version, parse_qsl(parts.query, keep_blank_values=True))


def _resolve_conditional(vault: Vault, rtype: str, query: str) -> str | None:
    return _resolve_params(vault, rtype, parse_qsl(query, keep_blank_values=True))


def _resolve_params(vault: Vault, rtype: str, params: list[tuple[str, str]]) -> str | None:
    result = service.search(vault=vault, rtype=rtype, params=params)
    if result.total > 1:
        raise PreconditionFailed(f"conditional request on {rtype} matched {result.total} resources")
    return result.resources[0]["id"] if result.resources else None


_URN_REFERENCE = re.compile(rb'"reference":"(urn:[^"\\]*)"')
_REFERENCE = re.compile(rb'"reference":"([^"\\]*)"')


def _rewrite(resource: dict[str, Any], mapping: dict[str, str], vault: Vault) -> dict[str, Any]:
    """Point bundle-internal (urn:uuid) and conditional (Type?query) references at real ids.

    Works on the serialised bytes: one C-level scan instead of a Python walk of every node."""
    raw = orjson.dumps(resource)
    if b'"reference"' not in raw:
        return resource

    def sub(match: re.Match[bytes]) -> bytes:
        value = match.group(1).decode()
        if value in mapping:
            value = mapping[value]
        elif "?" in value and is_resource_type(value.split("?", 1)[0]):
            rtype, query = value.split("?", 1)
            found = _resolve_conditional(vault, rtype, query)
            if found is None:
                raise BadRequest("conditional reference matched no resource")
            value = f"{rtype}/{found}"
        else:
            return match.group(0)
        return b'"reference":' + orjson.dumps(value)

    rewritten: dict[str, Any] = orjson.loads(_REFERENCE.sub(sub, raw))
    return rewritten


@dataclass
class Resolved:
    """One entry of an import transaction with its id and references resolved without the database
    (made in an import worker process, applied by `apply_resolved`)."""

    method: str
    rtype: str
    rid: str
    resource: dict[str, Any]
    index: list[tuple[str, str]]


_CONDITIONAL_REFERENCE = re.compile(rb'"reference":"[A-Za-z]+\?')


def resolve_for_import(bundle: dict[str, Any]) -> list[Resolved] | None:
    """For import (stable ids): resolve a checked transaction without the database when it can be
    (POST/PUT only, every id known from the source, no conditional create or reference); else None,
    and the caller processes the Bundle normally. Pure CPU: runs in worker processes."""
    entries = check_bundle(bundle, validate=False)
    targets: list[tuple[_Entry, str, str]] = []
    mapping: dict[str, str] = {}
    for e in entries:
        if e.method not in ("POST", "PUT") or e.resource is None or e.if_none_exist or e.if_match:
            return None
        rtype = e.resource["resourceType"]
        if e.method == "PUT":
            rid = e.request.rid
        else:
            rid = e.resource.get("id") or (
                e.full_url[9:] if e.full_url and e.full_url.startswith("urn:uuid:") else None
            )
        if not is_fhir_id(rid):
            return None  # processed normally, which says what is wrong
        targets.append((e, rtype, rid))
        if e.full_url:
            mapping[e.full_url] = f"{rtype}/{rid}"
    out: list[Resolved] = []
    for e, rtype, rid in sorted(targets, key=lambda t: (ORDER[t[0].method], t[0].index)):
        assert e.resource is not None
        raw = orjson.dumps(e.resource)
        if _CONDITIONAL_REFERENCE.search(raw):
            return None
        resource = _rewrite_mapped(raw, mapping) if b'"reference"' in raw else dict(e.resource)
        resource["id"] = rid
        out.append(Resolved(e.method, rtype, rid, resource, list(index_entries(rtype, resource))))
    return out


def apply_resolved(*, vault: Vault, resolved: list[Resolved], observer: Observer | None = None) -> None:
    """Write a resolved import transaction: unchanged resources write nothing (idempotent import)."""
    vault.prefetch_heads((r.rtype, r.rid) for r in resolved)
    for r in resolved:
        written = service.update(
            vault=vault,
            rtype=r.rtype,
            rid=r.rid,
            resource=r.resource,
            validated=True,
            skip_unchanged=True,
            index_hint=r.index,
        )
        if observer:
            observer(written)


def _rewrite_mapped(raw: bytes, mapping: dict[str, str]) -> dict[str, Any]:
    def sub(match: re.Match[bytes]) -> bytes:
        value = match.group(1).decode()
        return b'"reference":' + orjson.dumps(mapping[value]) if value in mapping else match.group(0)

    rewritten: dict[str, Any] = orjson.loads(_REFERENCE.sub(sub, raw))
    return rewritten


def _assign(vault: Vault, entries: list[_Entry], *, stable_ids: bool) -> dict[str, str]:
    """Pick ids for new resources and map every fullUrl to its Type/id."""
    mapping: dict[str, str] = {}
    for e in entries:
        if e.resource is None:
            continue
        rtype = e.resource["resourceType"]
        if e.method == "POST":
            with _naming_entry(e.index):
                existing = _resolve_conditional(vault, rtype, e.if_none_exist) if e.if_none_exist else None
            if existing is not None:
                e.target, e.skip = (rtype, existing), True
            elif stable_ids:
                e.target = (rtype, _stable_id(e))
            else:
                e.target = (rtype, service.new_id())
        elif e.method == "PUT":
            rid = e.request.rid
            if rid is None:  # check_bundle refuses this already
                raise UnsupportedRequest("conditional update is not supported: PUT needs Type/id")
            e.target = (rtype, rid)
        if e.full_url and e.target:
            mapping[e.full_url] = f"{e.target[0]}/{e.target[1]}"
    return mapping


def _stable_id(e: _Entry) -> str:
    """Import keeps the source's ids so that re-importing the same data updates, never duplicates."""
    assert e.resource is not None
    rid = e.resource.get("id")
    if isinstance(rid, str) and rid:
        return rid
    if e.full_url and e.full_url.startswith("urn:uuid:"):
        rid = e.full_url[len("urn:uuid:") :]
        if not is_fhir_id(rid):
            raise BadRequest(
                f"the fullUrl's urn:uuid value would be the resource id, but is not a valid FHIR id ({_ID_RULE})",
                location=f"{_where(e.index)}.fullUrl",
            )
        return rid
    return service.new_id()


def _response(
    status: str,
    *,
    location: str | None = None,
    version: int | None = None,
    resource: dict[str, Any] | None = None,
    outcome: dict[str, Any] | None = None,
) -> dict[str, Any]:
    resp: dict[str, Any] = {"status": status}
    if location:
        resp["location"] = location
    if version is not None:
        resp["etag"] = f'W/"{version}"'
    entry: dict[str, Any] = {"response": resp}
    if resource is not None:
        entry["resource"] = resource
    if outcome is not None:
        resp["outcome"] = outcome
    return entry


Observer = Callable[[service.Written], None]


def _execute(
    vault: Vault,
    e: _Entry,
    mapping: dict[str, str],
    *,
    base: str,
    stable_ids: bool,
    observer: Observer | None = None,
) -> dict[str, Any]:
    if e.method == "DELETE":
        rtype, rid, query = e.request.rtype, e.request.rid, e.request.query
        if rid is None:
            # The decoded parameters as they are: re-joining them into a query string and parsing
            # it again decoded twice ("a+b" became "a b", a value with "&" split in two).
            rid = _resolve_params(vault, rtype, query) if query else None
            if rid is None:
                return _response("204 No Content")
        version = service.delete(vault=vault, rtype=rtype, rid=rid)
        return _response("204 No Content", version=version)
    if e.method in ("GET", "HEAD"):
        rtype, rid, query = e.request.rtype, e.request.rid, e.request.query
        if rid is not None and e.request.version is not None:
            doc = service.vread(vault=vault, rtype=rtype, rid=rid, version=e.request.version)
            return _response("200 OK", resource=doc, version=e.request.version)
        if rid is not None:
            doc = service.read(vault=vault, rtype=rtype, rid=rid)
            return _response("200 OK", resource=doc, version=int(doc["meta"]["versionId"]))
        result = service.search(vault=vault, rtype=rtype, params=query)
        return _response(
            "200 OK",
            resource=fb.searchset(
                base=base,
                rtype=rtype,
                resources=result.resources,
                total=result.total,
                used=result.used,
                offset=result.offset,
                count=result.count,
            ),
        )
    assert e.resource is not None
    assert e.target is not None
    rtype, rid = e.target
    if e.skip:
        return _response("200 OK", location=f"{rtype}/{rid}")
    resource = _rewrite(e.resource, mapping, vault)
    if e.method == "POST" and not stable_ids:
        written = service.create(vault=vault, resource=resource, rid=rid, validated=True)
    else:
        resource["id"] = rid
        written = service.update(
            vault=vault,
            rtype=rtype,
            rid=rid,
            resource=resource,
            if_match=service.parse_if_match(e.if_match),
            validated=True,
            skip_unchanged=stable_ids,
        )
    if observer:
        observer(written)
    status = "201 Created" if written.created else "200 OK"
    return _response(status, location=f"{rtype}/{rid}/_history/{written.version}", version=written.version)


def process(
    *,
    vault: Vault,
    bundle: dict[str, Any],
    base: str = "",
    stable_ids: bool = False,
    observer: Observer | None = None,
    validated: bool = False,
) -> dict[str, Any]:
    """Run a transaction or batch Bundle; returns the response Bundle."""
    kind = bundle.get("type")
    if kind not in ("transaction", "batch"):
        raise InvalidResource(
            [Issue("invalid", "Bundle.type must be transaction or batch to be processed", "Bundle.type")]
        )
    if kind == "transaction":
        entries = check_bundle(bundle, validate=not validated)
        mapping = _assign(vault, entries, stable_ids=stable_ids)
        vault.prefetch_heads(e.target for e in entries if e.target is not None)
        results: dict[int, dict[str, Any]] = {}
        for e in sorted(entries, key=lambda x: (ORDER[x.method], x.index)):
            with _naming_entry(e.index):
                results[e.index] = _execute(vault, e, mapping, base=base, stable_ids=stable_ids, observer=observer)
        return {
            "resourceType": "Bundle",
            "type": "transaction-response",
            "entry": [results[e.index] for e in entries],
        }
    return _batch(vault, bundle, base=base)


def _batch(vault: Vault, bundle: dict[str, Any], *, base: str) -> dict[str, Any]:
    out = []
    for i, raw in enumerate(bundle.get("entry", []) if isinstance(bundle.get("entry"), list) else []):
        try:
            with vault.session.begin_nested():
                entries = check_bundle({"type": "batch", "entry": [raw]})
                e = entries[0]
                e.index = i
                mapping = _assign(vault, entries, stable_ids=False)
                with _naming_entry(i):
                    out.append(_execute(vault, e, mapping, base=base, stable_ids=False))
        except MedvaultError as exc:
            # The entry's savepoint is gone, and with it a refusal's audit entry: log it again.
            vault.discard()
            guard.record_refusal(vault, exc)
            status = _status_for(exc)
            issues = exc.issues if isinstance(exc, InvalidResource) else [Issue(exc.code, exc.message, exc.location)]
            out.append(
                _response(
                    status,
                    outcome=fb.operation_outcome(
                        [
                            Issue(
                                x.code,
                                x.diagnostics,
                                (x.expression or "").replace("Bundle.entry[0]", _where(i)) or None,
                            )
                            for x in issues
                        ]
                    ),
                )
            )
    return {"resourceType": "Bundle", "type": "batch-response", "entry": out}


def _status_for(exc: MedvaultError) -> str:
    if isinstance(exc, guard.Forbidden):
        return "403 Forbidden"
    if isinstance(exc, NotFound):
        return "404 Not Found"
    if isinstance(exc, Gone):
        return "410 Gone"
    if isinstance(exc, VersionConflict | PreconditionFailed):
        return "412 Precondition Failed"
    return "400 Bad Request"
