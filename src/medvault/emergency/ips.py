"""Reading International Patient Summary documents that other systems wrote.

A patient brings an IPS from another provider (a download, a SMART Health Link, a flash drive), and
a responder needs what is in it. Real documents often break base FHIR rules that do not touch their
meaning: vendors' narratives carry `idref` attributes (txt-1), ids run past 64 characters, a
timestamp or identifier is missing. Refusing such a document would hide a patient's allergies
over a formatting detail, so reading is two-layered:

* **Conformance**: the document is checked as strictly as anything we store (R4B models plus our
  own rules, `fhir.parse.validate`); what fails is reported as `conformance` findings, each naming
  the rule and the place.
* **Content**: independently, the document is read defensively as JSON: the Composition's sections
  with their titles, LOINC codes, entries as plain text (references resolved by `fullUrl`, by
  `Type/id` or by bare id, as vendors variously write them) and `emptyReason`. Anything unreadable
  becomes "(unreadable entry)", never an exception.

Only input that is not a FHIR resource at all (not JSON, not an object, no known resourceType) is
refused. Nothing here stores the document: callers decide (the vault's import validates strictly).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from medvault.fhir.errors import InvalidResource
from medvault.fhir.parse import check_resource_type, parse_json, validate

__all__ = ["IpsSection", "LoadedIps", "item_text", "load", "read"]

Kind = Literal["document", "bundle", "resource"]
_UNREADABLE = "(unreadable entry)"
_MAX_FINDINGS = 50


@dataclass(frozen=True)
class IpsSection:
    title: str
    code: str | None  # the section's LOINC code, when given
    items: tuple[str, ...]
    empty_reason: str | None  # e.g. "No information" vs "Nil known": not the same thing


@dataclass(frozen=True)
class LoadedIps:
    kind: Kind
    resource_type: str
    sections: tuple[IpsSection, ...]
    conformance: tuple[str, ...]  # strict-validation findings; empty when the input is valid

    @property
    def conformant(self) -> bool:
        return not self.conformance


def _list(value: Any) -> list[Any]:
    """A JSON array, or nothing: vendors put numbers, booleans or objects where arrays belong."""
    return value if isinstance(value, list) else []


def _concept_text(concept: Any) -> str:
    if not isinstance(concept, dict):
        return ""
    if isinstance(concept.get("text"), str) and concept["text"].strip():
        return str(concept["text"])
    for coding in _list(concept.get("coding")):
        if isinstance(coding, dict) and isinstance(coding.get("display"), str):
            return str(coding["display"])
    for coding in _list(concept.get("coding")):
        if isinstance(coding, dict) and isinstance(coding.get("code"), str):
            return str(coding["code"])
    return ""


def _name_text(name: Any) -> str:
    if isinstance(name, str):
        return name
    if isinstance(name, list) and name and isinstance(name[0], dict):
        first = name[0]
        if isinstance(first.get("text"), str):
            return str(first["text"])
        given = [g for g in _list(first.get("given")) if isinstance(g, str)]
        family = str(first["family"]) if isinstance(first.get("family"), str) else ""
        return " ".join([*given, family]).strip()
    return ""


def item_text(res: Any) -> str:
    """One entry as a line of plain text: its code, vaccine, medication or name, else its type."""
    if not isinstance(res, dict):
        return _UNREADABLE
    rtype = str(res.get("resourceType", "")) or "resource"
    for element in ("code", "vaccineCode", "medicationCodeableConcept", "type"):
        text = _concept_text(res.get(element))
        if text:
            return text
    if rtype == "Patient":
        contacts = []
        for c in _list(res.get("contact")):
            contacts.append(_name_text([c.get("name")] if isinstance(c, dict) else None) or "contact")
        return "Contacts: " + ", ".join(contacts) if contacts else "Patient"
    ref = res.get("medicationReference")
    if isinstance(ref, dict) and isinstance(ref.get("display"), str):
        return str(ref["display"])
    return _name_text(res.get("name")) or rtype


def _index(entries: list[Any]) -> dict[str, Any]:
    """Every way a vendor may refer to an entry: its fullUrl, "Type/id", and the bare id."""
    found: dict[str, Any] = {}
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("resource"), dict):
            continue
        res = entry["resource"]
        if isinstance(entry.get("fullUrl"), str):
            found[entry["fullUrl"]] = res
        rid, rtype = res.get("id"), res.get("resourceType")
        if isinstance(rid, str) and isinstance(rtype, str):
            found.setdefault(f"{rtype}/{rid}", res)
            found.setdefault(rid, res)
    return found


def _resolve(index: dict[str, Any], reference: Any) -> Any:
    if not isinstance(reference, dict) or not isinstance(reference.get("reference"), str):
        return None
    ref = reference["reference"]
    if ref in index:
        return index[ref]
    tail = "/".join(ref.rstrip("/").split("/")[-2:])  # an absolute URL ending in Type/id
    return index.get(tail)


def _sections(composition: dict[str, Any], index: dict[str, Any]) -> list[IpsSection]:
    out = []
    for section in _list(composition.get("section")):
        if not isinstance(section, dict):
            continue
        items = []
        for ref in _list(section.get("entry")):
            target = _resolve(index, ref)
            if target is not None:
                items.append(item_text(target))
            elif isinstance(ref, dict) and isinstance(ref.get("display"), str):
                items.append(str(ref["display"]))
            else:
                items.append(_UNREADABLE)
        code = section.get("code")
        loinc = None
        if isinstance(code, dict):
            for coding in _list(code.get("coding")):
                if isinstance(coding, dict) and isinstance(coding.get("code"), str):
                    loinc = str(coding["code"])
                    break
        title = section.get("title") if isinstance(section.get("title"), str) else _concept_text(code)
        empty = _concept_text(section.get("emptyReason")) or None
        out.append(IpsSection(str(title or "Section"), loinc, tuple(items), empty))
    return out


def _conformance(doc: dict[str, Any]) -> tuple[str, ...]:
    try:
        validate(doc)
    except InvalidResource as exc:
        findings = []
        for issue in exc.issues[:_MAX_FINDINGS]:
            where = f" at {issue.expression}" if issue.expression else ""
            findings.append(f"{issue.diagnostics}{where}")
        if len(exc.issues) > _MAX_FINDINGS:
            findings.append(f"... and {len(exc.issues) - _MAX_FINDINGS} more")
        return tuple(dict.fromkeys(findings))
    return ()


def read(doc: dict[str, Any]) -> LoadedIps:
    """Read a parsed FHIR JSON object. Raises InvalidResource only when it is no FHIR resource."""
    rtype = check_resource_type(doc)
    conformance = _conformance(doc)
    raw_entries = doc.get("entry")
    entries: list[Any] = raw_entries if rtype == "Bundle" and isinstance(raw_entries, list) else []
    if rtype == "Bundle" and doc.get("type") == "document":
        index = _index(entries)
        first = entries[0].get("resource") if entries and isinstance(entries[0], dict) else None
        if isinstance(first, dict) and first.get("resourceType") == "Composition":
            return LoadedIps("document", rtype, tuple(_sections(first, index)), conformance)
        missing = "a document's first entry must be its Composition (bdl-11)"
        return LoadedIps("document", rtype, (), (*conformance, missing) if missing not in conformance else conformance)
    if rtype == "Bundle":
        items = tuple(item_text(e.get("resource")) if isinstance(e, dict) else _UNREADABLE for e in entries)
        return LoadedIps("bundle", rtype, (IpsSection("Entries", None, items, None),), conformance)
    return LoadedIps("resource", rtype, (IpsSection(rtype, None, (item_text(doc),), None),), conformance)


def load(raw: bytes) -> LoadedIps:
    """Read a file's bytes (our JSON parser: size, depth and BOM rules apply)."""
    return read(parse_json(raw))
