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
# Deepest JSON nesting (objects and arrays) a document may have. Real FHIR is shallow: the deepest of
# the ~800 official R4, IPS, SMART and validator examples nests 21 levels (a QuestionnaireResponse
# with nested items), a transaction Bundle adds 4 and a contained resource 2. 64 leaves three times
# that, and stays far below every recursion limit a deeper document would hit: orjson.dumps gives up
# at 255 levels (our checks serialise each resource), Python recursion at ~1000, and the R4B models
# recurse through Extension.extension without a bound.
MAX_DEPTH = 64
_BOM = b"\xef\xbb\xbf"
_ONE_OF = re.compile(r"Expect any of field value from this list \[([^\]]*)\]")
_STRING_SHAPE = re.compile(rb'"[^"]*"')
_NOT_SHAPE = bytes(b for b in range(256) if b not in b'"[]{}')
_TO_PARENS = bytes.maketrans(b"[{]}", b"(())")


def nested_too_deeply(raw: bytes, limit: int = MAX_DEPTH) -> bool:
    """True when the JSON text nests objects/arrays more than `limit` levels deep.

    Works on the bytes, before any parser recurses, in a few C-level passes (about 5 ms per MB):
    escaped backslashes and quotes go first, so that every remaining quote delimits a string; then
    everything but quotes and brackets; then strings (brackets inside them do not count). What is
    left is the bracket structure, whose innermost pairs are removed once per level."""
    if len(raw) < 2 * (limit + 1):
        return False  # too short to hold limit + 1 levels
    if b"\\\\" in raw:
        raw = raw.replace(b"\\\\", b"")
    if b'\\"' in raw:
        raw = raw.replace(b'\\"', b"")
    # An adjacent pair of quotes is an empty string or the end and start of two strings with only
    # non-brackets between them: dropping it leaves the structure outside strings as it was.
    shape = raw.translate(None, _NOT_SHAPE).replace(b'""', b"")
    if b'"' in shape:
        shape = _STRING_SHAPE.sub(b"", shape)
    shape = shape.translate(_TO_PARENS)
    for _ in range(limit):
        if b"()" not in shape:
            return False
        shape = shape.replace(b"()", b"")
    # A pair left after `limit` rounds sat deeper than `limit`. Unbalanced brackets (text that is not
    # JSON) end as ")...(" without a pair: not too deep, and the parser says what is wrong.
    return b"()" in shape


def _too_deep() -> InvalidResource:
    return InvalidResource([Issue("too-costly", f"JSON nests more than {MAX_DEPTH} levels deep")])


def parse_json(raw: bytes) -> dict[str, Any]:
    """Bytes to a JSON object; errors give line/column, never content."""
    if len(raw) > MAX_BODY_BYTES:
        raise InvalidResource([Issue("too-costly", f"body larger than {MAX_BODY_BYTES} bytes")])
    if raw.startswith(_BOM):
        raw = raw[len(_BOM) :]  # RFC 8259 section 8.1: a parser MAY ignore a byte order mark
    if nested_too_deeply(raw):
        raise _too_deep()
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
    except LookupError:
        # fhir_core looks nested resources (contained, Bundle.entry, Parameters) up by their
        # resourceType and raises KeyError for one it does not know: invalid input, not a 500.
        issues.append(Issue("not-supported", "a nested resource has an unknown resourceType", base))
    if issues:
        raise InvalidResource(issues)
    return rtype
