"""JSON parsing and structural validation with fhir.resources R4B, plus our own checks."""

from __future__ import annotations

import re
from typing import Any

import orjson
from pydantic import ValidationError

from medvault.fhir.checks import extra_checks
from medvault.fhir.errors import InvalidResource, Issue
from medvault.fhir.types import is_resource_type, model_class

MAX_BODY_BYTES = 32 * 1024 * 1024
_BOM = b"\xef\xbb\xbf"
_ONE_OF = re.compile(r"Expect any of field value from this list \[([^\]]*)\]")


def parse_json(raw: bytes) -> dict[str, Any]:
    """Bytes to a JSON object; errors give line/column, never content."""
    if len(raw) > MAX_BODY_BYTES:
        raise InvalidResource([Issue("too-costly", f"body larger than {MAX_BODY_BYTES} bytes")])
    if raw.startswith(_BOM):
        raw = raw[len(_BOM) :]  # RFC 8259 section 8.1: a parser MAY ignore a byte order mark
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidResource(
            [Issue("structure", f"not valid JSON (line {exc.lineno}, column {exc.colno}): {exc.msg}")]
        ) from None
    if not isinstance(doc, dict):
        raise InvalidResource([Issue("structure", "a FHIR resource must be a JSON object")])
    return doc


def check_resource_type(doc: dict[str, Any], *, where: str = "") -> str:
    rtype = doc.get("resourceType")
    if not isinstance(rtype, str) or not rtype:
        raise InvalidResource([Issue("required", "resourceType is missing", where or None)])
    if not is_resource_type(rtype):
        raise InvalidResource(
            [Issue("not-supported", "unknown resource type", f"{where}.resourceType" if where else "resourceType")]
        )
    return rtype


def _loc(prefix: str, loc: tuple[int | str, ...]) -> str:
    out = prefix
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            name = str(part)
            if name.endswith("__ext"):
                name = "_" + name[: -len("__ext")]
            out += f".{name}" if out else name
    return out


def _safe_message(err: Any) -> str:
    msg = str(err.get("msg", "invalid value"))
    value = err.get("input")
    # Some validators quote the offending value; never let input (possibly PHI) into a message.
    if isinstance(value, str | int | float) and str(value) and str(value) in msg:
        msg = msg.replace(str(value), "<value>")
    return msg[:300]


def _node(doc: Any, loc: tuple[int | str, ...]) -> Any:
    for part in loc:
        if isinstance(part, int) and isinstance(doc, list) and 0 <= part < len(doc):
            doc = doc[part]
        elif isinstance(part, str) and isinstance(doc, dict):
            doc = doc.get("_" + part.removesuffix("__ext") if part.endswith("__ext") else part)
        else:
            return None
    return doc


def _absent_choice(doc: dict[str, Any], err: Any) -> bool:
    """fhir.resources rejects a required choice element (e.g. Immunization.occurrence[x]) given only as
    a primitive extension (`"_occurrenceDateTime": {"extension": [data-absent-reason]}`), which FHIR allows:
    https://hl7.org/fhir/R4/extensibility.html#Special-Case. True for exactly that error."""
    found = _ONE_OF.search(str(err.get("msg", "")))
    if not found:
        return False
    node = _node(doc, tuple(err.get("loc", ())))
    if not isinstance(node, dict):
        return False
    for name in re.findall(r"'([A-Za-z]+)'", found.group(1)):
        ext = node.get("_" + name)
        if isinstance(ext, dict) and isinstance(ext.get("extension"), list) and ext["extension"]:
            return True
    return False


def validate(doc: dict[str, Any], *, where: str = "") -> str:
    """Validate one resource (not recursing into Bundle entries' business rules). Returns its type."""
    rtype = check_resource_type(doc, where=where)
    base = where or rtype
    issues = extra_checks(doc, base)
    try:
        model_class(rtype).model_validate(doc)
    except ValidationError as exc:
        for err in exc.errors(include_url=False):
            if _absent_choice(doc, err):
                continue
            issues.append(Issue("structure", _safe_message(err), _loc(base, tuple(err["loc"]))))
    except (ValueError, TypeError) as exc:  # fhir_core raises plain ValueErrors for some shapes
        issues.append(Issue("structure", f"invalid resource ({exc.__class__.__name__})", base))
    if issues:
        raise InvalidResource(issues)
    return rtype
