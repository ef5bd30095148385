"""Split a Patient into its identifying part (for the identity vault) and the rest.

The identifying part is everything an attacker could use to name the person: names, telecom,
addresses, identifier values, birth date (and its birth-time extension), photo, contacts, the
narrative (which repeats the name), identity-bearing extensions (mother's maiden name, birth
place) and the quasi-identifiers that pin a person down with a birth date: date of death and
multiple-birth order. The rest (gender, marital status, language, links) stays with the clinical
record.
"""

from __future__ import annotations

import re
from typing import Any

from medvault.crypto.indexes import normalise
from medvault.fhir.search import date_matches, date_range, split_prefix

IDENTITY_KEYS = (
    "identifier",
    "name",
    "telecom",
    "address",
    "birthDate",
    "_birthDate",
    "photo",
    "contact",
    "text",
    "deceasedBoolean",
    "deceasedDateTime",
    "_deceasedDateTime",
    "multipleBirthBoolean",
    "multipleBirthInteger",
)
IDENTITY_EXTENSION_SUFFIXES = (
    "patient-mothersMaidenName",
    "patient-birthPlace",
    "patient-birthTime",
    "patient-nationality",
    "patient-citizenship",
    "patient-religion",
    "us-core-birthsex",
    "us-core-race",
    "us-core-ethnicity",
    "geolocation",
)


def _is_identity_extension(ext: Any) -> bool:
    url = ext.get("url") if isinstance(ext, dict) else None
    return isinstance(url, str) and url.rstrip("/").endswith(IDENTITY_EXTENSION_SUFFIXES)


def split_patient(doc: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Returns (clinical part, identity part). The identity part remembers extension positions."""
    clinical = {k: v for k, v in doc.items() if k not in IDENTITY_KEYS}
    identity: dict[str, Any] = {k: doc[k] for k in IDENTITY_KEYS if k in doc}
    extensions = doc.get("extension")
    if isinstance(extensions, list):
        kept = [e for e in extensions if not _is_identity_extension(e)]
        moved = [[i, e] for i, e in enumerate(extensions) if _is_identity_extension(e)]
        if moved:
            identity["__extensions__"] = moved
            if kept:
                clinical["extension"] = kept
            else:
                clinical.pop("extension", None)
    return clinical, identity


def merge_patient(clinical: dict[str, Any], identity: dict[str, Any]) -> dict[str, Any]:
    out = dict(clinical)
    for key, value in identity.items():
        if key != "__extensions__":
            out[key] = value
    moved = identity.get("__extensions__")
    if moved:
        extensions = list(out.get("extension", []))
        for index, ext in moved:
            extensions.insert(index, ext)
        out["extension"] = extensions
    return out


def _digits(text: str) -> str:
    return re.sub(r"\D", "", text)


def index_values(identity: dict[str, Any]) -> set[tuple[str, str]]:
    """(param, normalised value) pairs the blind index stores for this identity."""
    out: set[tuple[str, str]] = set()
    for ident in identity.get("identifier", []):
        value = ident.get("value") if isinstance(ident, dict) else None
        if isinstance(value, str):
            out.add(("identifier", f"{ident.get('system', '')}|{value}"))
            out.add(("identifier", f"*|{value}"))
    for name in identity.get("name", []):
        if not isinstance(name, dict):
            continue
        if isinstance(name.get("family"), str):
            out.add(("family", normalise(name["family"])))
        for given in name.get("given", []):
            if isinstance(given, str):
                out.add(("given", normalise(given)))
    if isinstance(identity.get("birthDate"), str):
        out.add(("birthdate", identity["birthDate"][:10]))
    for tel in identity.get("telecom", []):
        if not isinstance(tel, dict) or not isinstance(tel.get("value"), str):
            continue
        if tel.get("system") == "email":
            out.add(("email", normalise(tel["value"])))
        elif tel.get("system") in ("phone", "sms", None):
            out.add(("phone", _digits(tel["value"])))
    return {(p, v) for p, v in out if v}


def query_index_values(param: str, raw: str) -> list[tuple[str, str]] | None:
    """Blind index entries one search value could match; None when the index cannot serve it
    (then the caller decrypts every identity and filters)."""
    if param == "identifier":
        if raw.endswith("|"):
            return None  # `system|` (any value of that system) is not indexed: checked by `matches`
        return [("identifier", raw if "|" in raw else f"*|{raw}")]
    if param in ("family", "given"):
        return [(param, normalise(raw))]
    if param == "name":
        return [("family", normalise(raw)), ("given", normalise(raw))]
    if param == "email":
        return [("email", normalise(raw))]
    if param == "phone":
        return [("phone", _digits(raw))]
    if param == "birthdate":
        prefix, value = split_prefix(raw)
        if prefix == "eq" and len(value) == 10:
            return [("birthdate", value)]
        return None
    return None


def matches(identity: dict[str, Any], clinical: dict[str, Any], param: str, raw: str) -> bool:
    """Exact predicate for Patient search parameters (string params: whole-value, case-insensitive)."""
    values = index_values(identity)
    if param == "gender":
        return clinical.get("gender") == raw
    if param == "birthdate":
        birth = identity.get("birthDate")
        if not isinstance(birth, str):
            return False
        prefix, query = split_prefix(raw)
        return date_matches(date_range(birth), prefix, date_range(query))
    if param == "identifier" and raw.endswith("|"):
        system = raw[:-1]
        return any(
            isinstance(i, dict) and i.get("system", "") == system and isinstance(i.get("value"), str)
            for i in identity.get("identifier", [])
        )
    wanted = query_index_values(param, raw)
    return bool(wanted) and any(w in values for w in wanted or [])
