"""Search over the sealed store.

Plan: narrow candidates with plaintext-free indexes (patient pseudonym, keyed tokens, year tokens,
blind identity buckets, _id, _lastUpdated), then open only the candidates that need an exact check
(dates, identity values, date sort) and filter them with the same predicates as fhir.search.
Totals and paging are computed after filtering, so every count is exact.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.sql.elements import ColumnElement

from medvault.crypto.indexes import normalise
from medvault.fhir import identity as fhir_identity
from medvault.fhir import search as fs
from medvault.fhir.errors import UnsupportedSearch
from medvault.fhir.types import is_fhir_id, is_resource_type
from medvault.records.errors import BadRequest
from medvault.records.vault import GLOBAL_SCOPE, Vault, load_current, open_identity_row
from medvault.store.models import IdentityIndex, IdentityVersion, Resource, SearchToken

DEFAULT_COUNT = 50
# Reference parameters with a single target type, so a bare id is unambiguous.
_REFERENCE_TARGET = {"encounter": "Encounter"}
MAX_COUNT = 1000
CHUNK = 500


@dataclass
class SearchResult:
    total: int
    offset: int
    count: int
    resources: list[dict[str, Any]]
    used: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class _Plan:
    rtype: str
    ids: set[str] | None = None
    links: set[bytes] | None = None
    token_groups: list[tuple[str, list[str]]] = field(default_factory=list)
    post_tokens: list[tuple[fs.Param, list[str]]] = field(default_factory=list)
    date_filters: list[tuple[fs.Param, list[tuple[str, tuple[datetime, datetime]]]]] = field(default_factory=list)
    updated: list[tuple[str, tuple[datetime, datetime]]] = field(default_factory=list)
    identity: list[tuple[str, list[str]]] = field(default_factory=list)
    count: int = DEFAULT_COUNT
    offset: int = 0
    sort: tuple[str, bool] | None = None  # (param, descending)
    used: list[tuple[str, str]] = field(default_factory=list)
    # The one compartment the caller can reach (its pseudonym): other patients' rows are not read.
    compartment: bytes | None = None


def _int(name: str, raw: str, lo: int, hi: int) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise UnsupportedSearch(f"{name} must be a whole number") from None
    if not lo <= value <= hi:
        raise UnsupportedSearch(f"{name} must be between {lo} and {hi}")
    return value


_BAD_ID = "is not a valid FHIR id (1-64 characters of A-Z, a-z, 0-9, '-' and '.')"


def _ids(name: str, raw: str) -> set[str]:
    """`_id` values. Checked before they reach a query (PostgreSQL refuses NUL in text: a 500),
    and never echoed (a client may use an MRN as an id)."""
    out = {v for v in raw.split(",") if v}
    if not all(is_fhir_id(v) for v in out):
        raise BadRequest(f"{name} search value {_BAD_ID}", location=name)
    return out


def _patient_ids(name: str, raw: str) -> list[str]:
    out = []
    for value in raw.split(","):
        parts = value.split("/")
        if len(parts) >= 2 and parts[-2] != "Patient":
            raise UnsupportedSearch("patient/subject search supports Patient references only")
        if len(parts) >= 2 or parts[-1]:  # "Patient/" names no patient; an empty item is skipped
            if not is_fhir_id(parts[-1]):
                raise BadRequest(f"{name} search value: the id {_BAD_ID}", location=name)
            out.append(parts[-1])
    return out


def _reference(name: str, value: str) -> str:
    """A reference search value as the index stores it: `ref:Type/id`."""
    # R4 allows a bare id when the parameter has a single target type.
    ref = f"{_REFERENCE_TARGET[name]}/{value}" if "/" not in value and name in _REFERENCE_TARGET else value
    if "/" not in ref:
        raise UnsupportedSearch(f"{name} needs a typed reference (Type/id)")
    rtype, rid = ref.split("/")[-2:]
    if not is_resource_type(rtype):
        raise BadRequest(f"{name} search value: the reference names an unknown resource type", location=name)
    if not is_fhir_id(rid):
        raise BadRequest(f"{name} search value: the id {_BAD_ID}", location=name)
    return f"ref:{rtype}/{rid}"


def plan(vault: Vault, rtype: str, params: Sequence[tuple[str, str]], *, strict: bool = True) -> _Plan:
    if not is_resource_type(rtype):
        raise UnsupportedSearch("unknown resource type")  # no echo of the input
    known = fs.params_for(rtype)
    p = _Plan(rtype=rtype)
    for raw_name, raw_value in params:
        name, _, modifier = raw_name.partition(":")
        if name in fs.IGNORED_PARAMS:
            continue
        if modifier and not (modifier == "exact" and name in known and known[name].kind == "string"):
            if strict:
                raise UnsupportedSearch(f"modifier :{modifier[:20]} on {name[:40]} is not supported")
            continue
        if name == "_count":
            p.count = _int("_count", raw_value, 0, MAX_COUNT)
        elif name == "_offset":
            p.offset = _int("_offset", raw_value, 0, 10**9)
        elif name == "_sort":
            desc = raw_value.startswith("-")
            key = raw_value.lstrip("-")
            if key == "_lastUpdated" or (key in known and known[key].kind == "date"):
                p.sort = (key, desc)
            else:
                raise UnsupportedSearch("_sort supports date parameters and _lastUpdated")
        elif name == "_id":
            ids = _ids(name, raw_value)
            p.ids = ids if p.ids is None else p.ids & ids
        elif name == "_lastUpdated":
            p.updated.append(fs.parse_date_query(raw_value))
        elif name in ("patient", "subject") and name in known:
            links = {vault.crypto.indexer.pseudonym(pid) for pid in _patient_ids(name, raw_value)}
            p.links = links if p.links is None else p.links & links
        elif rtype == "Patient" and name in fs.IDENTITY_PARAMS:
            if name == "birthdate":
                # Check the values here: the identity matcher would otherwise meet an invalid date
                # only while filtering (a 500), or never when no patient shares the bucket (a silent 0).
                for v in raw_value.split(","):
                    fs.parse_date_query(v)
            p.identity.append((name, raw_value.split(",")))
        elif name in known:
            param = known[name]
            if param.kind == "date":
                p.date_filters.append((param, [fs.parse_date_query(v) for v in raw_value.split(",")]))
            elif param.kind == "token":
                values = [fs.token_query_value(v) for v in raw_value.split(",")]
                if any(v.startswith(("s:", "n:")) for v in values):
                    # `system|` and `|code` are not indexed: narrow by code where possible, then check.
                    p.post_tokens.append((param, raw_value.split(",")))
                    if all(v.startswith("n:") for v in values):
                        p.token_groups.append((name, ["c:" + v[3:] for v in values]))
                else:
                    p.token_groups.append((name, values))
            elif param.kind == "reference":
                p.token_groups.append((name, [_reference(name, v) for v in raw_value.split(",")]))
            else:  # string
                p.token_groups.append((name, [f"str:{normalise(v)}" for v in raw_value.split(",")]))
        else:
            if strict:
                raise UnsupportedSearch(
                    f"search parameter {name[:40]!r} is not supported for {rtype} (see /fhir/metadata)"
                )
            continue
        p.used.append((raw_name, raw_value))
    return p


def _scopes(vault: Vault, p: _Plan) -> list[bytes]:
    if p.links is not None:
        return sorted(p.links)
    rows = vault.session.execute(select(Resource.patient_link).where(Resource.rtype == p.rtype).distinct()).scalars()
    return [r or GLOBAL_SCOPE for r in rows]


def _token_rids(vault: Vault, p: _Plan, name: str, values: list[str], scopes: list[bytes]) -> set[str]:
    indexer = vault.crypto.indexer
    tokens = [indexer.search_token(s, p.rtype, name, v) for s in scopes for v in values]
    out: set[str] = set()
    for start in range(0, len(tokens), CHUNK):
        out.update(
            vault.session.execute(
                select(SearchToken.rid).where(SearchToken.token.in_(tokens[start : start + CHUNK]))
            ).scalars()
        )
    return out


def _identity_rids(vault: Vault, name: str, values: list[str]) -> set[str]:
    """Patient ids whose identity matches one of `values`: blind buckets, then open and check."""
    indexer = vault.crypto.indexer
    buckets: set[int] | None = set()
    for raw in values:
        wanted = fhir_identity.query_index_values(name, raw)
        if wanted is None:
            buckets = None  # the index cannot serve this value: open every identity
            break
        assert buckets is not None
        buckets.update(indexer.blind_bucket(p, v) for p, v in wanted)
    # Rows of every version come back; the newest per handle is the current one.
    if buckets is not None:
        handles = select(IdentityIndex.handle).where(IdentityIndex.bucket.in_(sorted(buckets)))
        stmt = select(IdentityVersion).where(IdentityVersion.handle.in_(handles))
    else:
        stmt = select(IdentityVersion)
    out: set[str] = set()
    latest: dict[bytes, IdentityVersion] = {}
    for row in vault.session.execute(stmt).scalars():
        if row.handle not in latest or latest[row.handle].version < row.version:
            latest[row.handle] = row
    for row in latest.values():
        rid, ident = open_identity_row(vault, row)
        if any(fhir_identity.matches(ident, {}, name, raw) for raw in values):
            out.add(rid)
    return out


def run(vault: Vault, p: _Plan, *, visible: Callable[[dict[str, Any]], bool] | None = None) -> SearchResult:
    """Run a plan. `visible` (records/guard.py) filters hits *before* counting and paging, so
    totals and next links count only what the caller may see."""
    vault.flush()
    rids = p.ids
    scopes: list[bytes] | None = None

    def narrow(found: set[str]) -> None:
        nonlocal rids
        rids = found if rids is None else rids & found

    for name, values in p.identity:
        narrow(_identity_rids(vault, name, values))
    for name, values in p.token_groups:
        if rids is not None and not rids:
            break
        scopes = scopes if scopes is not None else _scopes(vault, p)
        narrow(_token_rids(vault, p, name, values, scopes))
    # Year tokens only pay off inside a few records; across all patients the exact check decides.
    if p.links is not None and len(p.links) <= 20:
        for param, queries in p.date_filters:
            per_query = [fs.query_years(prefix, q) for prefix, q in queries]
            if any(not years for years in per_query):
                continue  # `ne` (no year list): narrowing by years would drop true matches
            years = [*sorted({y for ys in per_query for y in ys}), "open"]
            narrow(_token_rids(vault, p, param.name, [f"y:{y}" for y in years], sorted(p.links)))

    conds: list[ColumnElement[bool]] = [Resource.rtype == p.rtype, Resource.deleted.is_(False)]
    if p.links is not None:
        conds.append(Resource.patient_link.in_(sorted(p.links)))
    if p.compartment is not None:
        conds.append(or_(Resource.patient_link.is_(None), Resource.patient_link == p.compartment))
    for prefix, (low, high) in p.updated:
        conds.append(_updated_cond(prefix, low, high))
    heads: list[tuple[str, datetime]] = []
    if rids is not None:
        ordered = sorted(rids)
        for start in range(0, len(ordered), CHUNK):
            heads.extend(
                vault.session.execute(
                    select(Resource.rid, Resource.last_updated).where(
                        *conds, Resource.rid.in_(ordered[start : start + CHUNK])
                    )
                )
            )
    else:
        heads.extend(vault.session.execute(select(Resource.rid, Resource.last_updated).where(*conds)))

    date_sort = p.sort is not None and p.sort[0] != "_lastUpdated"
    docs: dict[tuple[str, str], dict[str, Any]] = {}
    if p.date_filters or date_sort or p.post_tokens or visible is not None:
        docs = load_current(vault, [(p.rtype, rid) for rid, _ in heads])
        kept = []
        for rid, ts in heads:
            doc = docs.get((p.rtype, rid))
            if (
                doc is not None
                and all(
                    any(any(fs.date_matches(t, prefix, q) for t in fs.date_ranges(doc, param)) for prefix, q in queries)
                    for param, queries in p.date_filters
                )
                and all(
                    any(fs.token_matches(fs.token_pairs(doc, param), raw) for raw in raws)
                    for param, raws in p.post_tokens
                )
                and (visible is None or visible(doc))
            ):
                kept.append((rid, ts))
        heads = kept

    if date_sort and p.sort:
        param = fs.params_for(p.rtype)[p.sort[0]]
        heads.sort(key=lambda h: (fs.sort_key(docs[(p.rtype, h[0])], param), h[0]), reverse=p.sort[1])
    elif p.sort:
        heads.sort(key=lambda h: (h[1], h[0]), reverse=p.sort[1])
    else:
        heads.sort(key=lambda h: (h[1], h[0]))

    total = len(heads)
    page = heads[p.offset : p.offset + p.count]
    keys = [(p.rtype, rid) for rid, _ in page]
    missing = [k for k in keys if k not in docs]
    if missing:
        docs.update(load_current(vault, missing))
    return SearchResult(
        total=total,
        offset=p.offset,
        count=p.count,
        resources=[docs[k] for k in keys if k in docs],
        used=p.used,
    )


def _updated_cond(prefix: str, low: datetime, high: datetime) -> ColumnElement[bool]:
    col = Resource.last_updated
    if prefix == "eq":
        return and_(col >= low, col < high)
    if prefix == "ne":
        return ~and_(col >= low, col < high)
    if prefix == "gt":
        return col >= high
    if prefix == "ge":
        return col >= low
    if prefix == "lt":
        return col < low
    return col < high  # le


def search(
    vault: Vault,
    rtype: str,
    params: Sequence[tuple[str, str]],
    *,
    strict: bool = True,
    visible: Callable[[dict[str, Any]], bool] | None = None,
    compartment: str | None = None,
) -> SearchResult:
    """`compartment`: a patient id when the caller can reach no other patient's records (what
    `visible` would refuse anyway is not read, judged or logged); resources outside any
    compartment are still searched."""
    p = plan(vault, rtype, params, strict=strict)
    if compartment is not None:
        p.compartment = vault.crypto.indexer.pseudonym(compartment)
    return run(vault, p, visible=visible)
