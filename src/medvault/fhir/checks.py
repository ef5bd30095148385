"""Checks the R4B models do not make but the FHIR specification (and the HL7 validator) requires.

Two kinds, both returning Issues with a location and never quoting the offending value:

* resource-level rules (ids, contained resources, local references, Bundle rules, a few cheap
  per-type invariants) look at a handful of keys, so they always run;
* value-level rules (empty or blank values, control characters, over-long strings, active content,
  narrative XHTML, Period/Range/Ratio/Attachment invariants, duplicate element ids) need a walk of
  every node. A byte-level pre-scan of the serialised resource proves most resources clean without
  that (slow) Python walk; whenever it cannot, the walk decides and locates. `_looks_clean` must
  stay a sound over-approximation of `_walk`: every issue the walk can report has a byte trigger.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterator
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit
from xml.parsers import expat

import orjson

from medvault.fhir.errors import Issue
from medvault.fhir.search import date_range
from medvault.fhir.types import is_resource_type

MAX_STRING = 1024 * 1024  # "strings SHALL NOT exceed 1MB (1024*1024 characters) in size"
MAX_ID = 64  # id: [A-Za-z0-9\-\.]{1,64} (the R4B models check the characters, not the length)
XHTML_NS = "http://www.w3.org/1999/xhtml"
XML_NS = "http://www.w3.org/XML/1998/namespace"

# Elements typed base64Binary: not text, never rendered, exempt from the string-only rules.
_BASE64_ELEMENTS = frozenset({"data", "hash", "carrierAIDC", "valueBase64Binary", "query"})

# ---------------------------------------------------------------------------------------------
# Active content in strings. `_ACTIVE` runs on decoded strings (ASCII case folding only, so that
# the byte pre-scan, which lower-cases ASCII only, sees the same thing). `_ACTIVE_BYTES` is the
# same language widened for the serialised form: whitespace may appear as a JSON escape, and the
# word boundary before `on...=` is dropped (an escape such as "\n" puts a letter before it).
_ACTIVE = re.compile(
    r"<\s*(script|iframe|object|embed|form|input|button|link|meta|style|base|frame|frameset|applet|svg|math)\b"
    r"|\bon[a-z]+\s*=|javascript\s*:|vbscript\s*:|data\s*:\s*text/html",
    re.IGNORECASE | re.ASCII,
)
_WS = rb"(?:[ \t\n\r\f\v]|\\[tnrf]|\\u000b)*"
# (hint that must be present in the lower-cased bytes, pattern): one literal-led pattern per kind is
# faster than one alternation, and the hint skips it for most resources.
_ACTIVE_BYTES = (
    (
        b"<",
        re.compile(
            rb"<"
            + _WS
            + rb"(?:script|iframe|object|embed|form|input|button|link|meta|style|base|frame|applet|svg|math)"
        ),
    ),
    (b"=", re.compile(rb"on[a-z]+" + _WS + rb"=")),
    (b"script", re.compile(rb"script" + _WS + rb":")),
    (b"data", re.compile(rb"data" + _WS + rb":" + _WS + rb"text/html")),
)

# FHIR strings: no characters below U+0020 except tab, CR and LF.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")
_XML_WS = " \t\r\n"  # FHIR's whitespace (XML's): a string needs something else

_BLANK_BYTES = re.compile(rb'"(?:[ \t]|\\[nrt])+"')
_ADJACENT_PERIOD = re.compile(rb'"start":"([^"]*)","end":"([^"]*)"|"end":"([^"]*)","start":"([^"]*)"')
_RESOURCE_ID = re.compile(rb'"resourceType":"[A-Za-z]+","id":')
_LOCAL_REFERENCE = re.compile(rb'"reference":"#([^"\\]*)"')
_REFERENCE = re.compile(rb'"reference":"([^"\\]*)"')


def extra_checks(doc: dict[str, Any], base: str) -> list[Issue]:
    """Every issue with its location."""
    try:
        raw = orjson.dumps(doc)
    except orjson.JSONEncodeError:  # over 255 levels deep (parse_json refuses such input before this)
        return [Issue("too-costly", "resource is nested too deeply to check", base)]
    issues: list[Issue] = []
    try:
        _resource(doc, base, issues, raw=raw, contained=False)
        if not _looks_clean(raw):
            _walk(doc, base, "", issues, {})
    except RecursionError:
        issues.append(Issue("too-costly", "resource is nested too deeply to check", base))
    return issues


def bundle_checks(bundle: dict[str, Any], base: str = "Bundle") -> list[Issue]:
    """The Bundle-level rules alone (no per-entry validation): for callers that validate entries
    themselves, such as transaction processing."""
    issues: list[Issue] = []
    _bundle(bundle, base, issues, standalone=True)
    return issues


# ---------------------------------------------------------------------------------------------
# Byte pre-scan


def _looks_clean(raw: bytes) -> bool:
    """True only when the serialised resource provably has none of the issues `_walk` reports."""
    if len(raw) > MAX_STRING:
        return False  # a string may be over the limit
    if b'"div":' in raw or b"[]" in raw or b"{}" in raw or b'""' in raw:
        return False
    escapes = b"\\" in raw  # orjson writes control characters only as escapes, and no raw tabs
    if (escapes or b'" ' in raw) and _BLANK_BYTES.search(raw):
        return False  # a blank string starts with a space or an escape
    if escapes and (b"\\u00" in raw or b"\\b" in raw or b"\\f" in raw):
        return False  # control characters (orjson escapes U+0000-U+001F except \t \n \r this way)
    if (
        b'"data":' in raw
        or b'"numerator":' in raw
        or b'"denominator":' in raw
        or (b'"high":' in raw and b'"low":' in raw)
    ):
        return False  # Attachment, Ratio, Range rules
    if not _only_resource_ids(raw):
        return False  # element ids: uniqueness
    low = raw.lower()
    for hint, pattern in _ACTIVE_BYTES:
        if hint in low and pattern.search(low):
            return False
    ends = raw.count(b'"end":')
    if not ends:
        return True
    pairs = _ADJACENT_PERIOD.findall(raw)
    if len(pairs) != ends:
        return False
    for a, b, c, d in pairs:
        start, end = (a, b) if a or b else (d, c)
        if _period_inverted(start.decode(), end.decode()):
            return False
    return True


def _only_resource_ids(raw: bytes) -> bool:
    """True when every "id" key is a resource's own id (written right after its resourceType)."""
    n = raw.count(b'"id":')
    if n == 0:
        return True
    if n == 1 and raw.startswith(b'{"resourceType":"'):
        # the common case: the root's own id, right after its resourceType value
        return raw.find(b'","id":', 17) == raw.find(b'"', 17)
    return n == len(_RESOURCE_ID.findall(raw))


# ---------------------------------------------------------------------------------------------
# Value-level walk


def _walk(node: Any, path: str, key: str, issues: list[Issue], ids: dict[str, str]) -> None:
    if isinstance(node, dict):
        if not node:
            issues.append(Issue("structure", "empty object is not allowed", path))
            return
        if isinstance(node.get("resourceType"), str):
            ids = {}  # element ids are unique within one resource; a nested resource starts afresh
        elif isinstance(node.get("id"), str):
            if node["id"] in ids:
                issues.append(
                    Issue(
                        "duplicate",
                        f"element id is not unique within the resource (also at {ids[node['id']]})",
                        f"{path}.id",
                    )
                )
            else:
                ids[node["id"]] = path
        _check_period(node, path, issues)
        if "low" in node and "high" in node:
            _check_range(node, path, issues)
        if "numerator" in node or "denominator" in node:
            _check_ratio(node, path, issues)
        if "data" in node:
            _check_attachment(node, path, issues)
        for k, value in node.items():
            child = f"{path}.{k}"
            if k == "div" and isinstance(value, str):
                _check_div(value, child, issues)
                continue
            _walk(value, child, k, issues, ids)
    elif isinstance(node, list):
        if not node:
            issues.append(Issue("structure", "empty array is not allowed", path))
            return
        for i, item in enumerate(node):
            _walk(item, f"{path}[{i}]", key, issues, ids)
    elif isinstance(node, str):
        _check_string(node, path, key, issues)


def _check_string(value: str, path: str, key: str, issues: list[Issue]) -> None:
    if not value.strip(_XML_WS):
        issues.append(Issue("structure", "empty or whitespace-only string is not allowed", path))
        return
    if key in _BASE64_ELEMENTS:
        return  # base64Binary: the model checks the alphabet; not text, never rendered
    if len(value) > MAX_STRING:
        issues.append(Issue("too-long", "string is longer than the 1 MB (1,048,576 characters) FHIR allows", path))
    if _CONTROL.search(value):
        issues.append(Issue("invalid", "string contains control characters (only tab, CR and LF are allowed)", path))
    if _ACTIVE.search(value):
        issues.append(Issue("security", "markup or active content is not allowed in a string", path))


def _parse_instant(text: str) -> tuple[datetime, datetime] | None:
    try:
        return date_range(text)
    except ValueError:
        return None


def _period_inverted(start: str, end: str) -> bool:
    s, e = _parse_instant(start), _parse_instant(end)
    # per-1: "If present, start SHALL have a lower value than end", compared as the ranges the two
    # values stand for at their own precision (as R5 spells it: start.lowBoundary() <= end.highBoundary()).
    return bool(s and e and e[1] <= s[0])


def _check_period(node: dict[str, Any], path: str, issues: list[Issue]) -> None:
    start, end = node.get("start"), node.get("end")
    if isinstance(start, str) and isinstance(end, str) and _period_inverted(start, end):
        issues.append(Issue("invariant", "period ends before it starts (per-1)", path))


def _quantity(node: Any) -> tuple[float, tuple[Any, Any]] | None:
    if not isinstance(node, dict):
        return None
    value = node.get("value")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    unit = (node.get("system"), node.get("code")) if node.get("code") else (None, node.get("unit"))
    return float(value), unit


def _check_range(node: dict[str, Any], path: str, issues: list[Issue]) -> None:
    low, high = _quantity(node.get("low")), _quantity(node.get("high"))
    # rng-2: "If present, low SHALL have a lower value than high" (comparable only in the same unit)
    if low and high and low[1] == high[1] and low[0] > high[0]:
        issues.append(Issue("invariant", "range low is greater than high (rng-2)", path))


_RATIO_KEYS = frozenset({"id", "extension", "numerator", "denominator"})


def _check_ratio(node: dict[str, Any], path: str, issues: list[Issue]) -> None:
    if not node.keys() <= _RATIO_KEYS:
        return  # not a Ratio (e.g. a RatioRange, whose parts are named differently anyway)
    # rat-1: "Numerator and denominator SHALL both be present, or both are absent"
    if ("numerator" in node) != ("denominator" in node):
        issues.append(Issue("invariant", "ratio needs both numerator and denominator (rat-1)", path))


_ATTACHMENT_KEYS = frozenset(
    {"id", "extension", "contentType", "language", "data", "url", "size", "hash", "title", "creation"}
)


def _check_attachment(node: dict[str, Any], path: str, issues: list[Issue]) -> None:
    if not node.keys() <= _ATTACHMENT_KEYS or not isinstance(node.get("data"), str):
        return  # not an Attachment (Binary and Signature also have `data`)
    # att-1: "If the Attachment has data, it SHALL have a contentType"
    if "contentType" not in node:
        issues.append(Issue("invariant", "attachment with data needs a contentType (att-1)", path))
    size = node.get("size")
    if isinstance(size, int) and not isinstance(size, bool):
        try:
            actual = len(base64.b64decode(node["data"], validate=True))
        except (binascii.Error, ValueError):
            return  # the model reports invalid base64
        if actual != size:
            issues.append(Issue("value", "attachment size does not match the size of its data", f"{path}.size"))


# ---------------------------------------------------------------------------------------------
# Narrative XHTML (txt-1, txt-2 and the HL7 validator's element and attribute lists)

# fmt: off
_XHTML_ELEMENTS = frozenset({
    "p", "br", "div", "h1", "h2", "h3", "h4", "h5", "h6", "a", "span", "b", "em", "i", "strong", "small", "big",
    "tt", "dfn", "q", "var", "abbr", "acronym", "cite", "blockquote", "hr", "address", "bdo", "kbd", "sub", "sup",
    "ul", "ol", "li", "dl", "dt", "dd", "pre", "table", "caption", "colgroup", "col", "thead", "tr", "tfoot",
    "tbody", "th", "td", "code", "samp", "img", "map", "area",
})
_XHTML_ATTRIBUTES = frozenset({
    "title", "style", "class", "id", "lang", "xml:lang", "dir", "accesskey", "tabindex", "span", "width", "align",
    "valign", "char", "charoff", "abbr", "axis", "headers", "scope", "rowspan", "colspan", "xml:space",
})
_XHTML_ELEMENT_ATTRIBUTES = frozenset({
    "a.href", "a.name", "img.src", "img.border", "blockquote.cite", "q.cite", "a.charset", "a.type", "a.hreflang",
    "a.rel", "a.rev", "a.shape", "a.coords", "img.alt", "img.longdesc", "img.height", "img.width", "img.usemap",
    "img.ismap", "map.name", "area.shape", "area.coords", "area.href", "area.nohref", "area.alt", "table.summary",
    "table.width", "table.border", "table.frame", "table.rules", "table.cellspacing", "table.cellpadding",
    "pre.space", "td.nowrap",
})
# Known HTML names: only these are named in messages (a name from the input is never echoed).
_ACTIVE_ELEMENTS = frozenset({
    "script", "iframe", "object", "embed", "form", "input", "button", "link", "meta", "style", "base", "frame",
    "frameset", "applet", "svg", "math", "textarea", "select", "option", "noscript", "template", "portal",
})
_KNOWN_ELEMENTS = _XHTML_ELEMENTS | _ACTIVE_ELEMENTS | frozenset({
    "html", "head", "body", "title", "font", "center", "u", "s", "strike", "del", "ins", "label", "fieldset",
    "legend", "section", "article", "nav", "aside", "header", "footer", "main", "figure", "figcaption", "mark",
    "time", "video", "audio", "source", "track", "canvas", "picture", "details", "summary", "dialog", "menu", "dir",
})
_KNOWN_ATTRIBUTES = _XHTML_ATTRIBUTES | frozenset({
    "href", "src", "name", "alt", "height", "width", "border", "target", "rel", "type", "action", "method",
    "formaction", "srcdoc", "srcset", "background", "color", "face", "size", "bgcolor", "hidden", "contenteditable",
    "draggable",
})
# fmt: on
_XHTML_URL_ATTRIBUTES = frozenset({"href", "src", "cite", "longdesc", "usemap"})
_BLOCK_ELEMENTS = frozenset({"div", "blockquote", "table", "ol", "ul", "p"})
# Any "<!" markup: DOCTYPE and entity declarations, but also comments and CDATA sections. These are
# legal XML, yet a known way to smuggle active content past HTML sanitisers (a browser's HTML parser
# reads "<![CDATA[" as a bogus comment that a later ">" closes, and old IE ran conditional comments),
# and a narrative has no use for them: refuse them rather than parse them.
_MARKUP_DECLARATIONS = (
    (re.compile(r"<!--"), "narrative contains an XML comment, which is not allowed"),
    (re.compile(r"<!\[CDATA\["), "narrative contains a CDATA section, which is not allowed"),
    (re.compile(r"<!(?!--|\[CDATA\[)"), "narrative contains a DOCTYPE or entity declaration (txt-1)"),
)
_SCHEME = re.compile(r"^([a-z][a-z0-9+.\-]*):")
_URL_NOISE = re.compile(r"[\x00-\x20]+")
_STYLE_ACTIVE = re.compile(
    r"expression\s*\(|javascript\s*:|vbscript\s*:|behavior\s*:|-moz-binding|@import", re.I | re.A
)
_SAFE_SCHEMES = frozenset({"http", "https", "mailto", "tel", "urn", "ftp", "data"})
_DATA_IMAGE = re.compile(r"^data:image/(png|gif|jpeg|jpg|bmp|webp)(;[^,]*)?,", re.I)


class _Xhtml:
    """One narrative div through expat (no DTD: declarations are refused before parsing)."""

    def __init__(self, path: str, issues: list[Issue]) -> None:
        self.path = path
        self.issues = issues
        self.seen: set[str] = set()
        self.stack: list[str] = []
        self.content = False
        self.parser = expat.ParserCreate(namespace_separator=" ")
        self.parser.StartElementHandler = self.start
        self.parser.EndElementHandler = self.end
        self.parser.CharacterDataHandler = self.text
        self.parser.ProcessingInstructionHandler = self.instruction

    def report(self, code: str, message: str) -> None:
        if message in self.seen:
            return
        self.seen.add(message)
        where = f" (line {self.parser.CurrentLineNumber}, column {self.parser.CurrentColumnNumber + 1} of the div)"
        self.issues.append(Issue(code, message + where, self.path))

    def start(self, name: str, attrs: dict[str, str]) -> None:
        ns, _, local = name.rpartition(" ")
        if not self.stack:
            if local != "div" or ns != XHTML_NS:
                self.report("invariant", "narrative must be an XHTML div element in the XHTML namespace")
        elif ns != XHTML_NS:
            self.report("invariant", "narrative elements must be in the XHTML namespace")
        elif local not in _XHTML_ELEMENTS:
            named = f"a '{local}' element" if local in _KNOWN_ELEMENTS else "an element"
            code = "security" if local in _ACTIVE_ELEMENTS else "invariant"
            self.report(code, f"narrative contains {named} that FHIR does not allow (txt-1)")
        elif local in _BLOCK_ELEMENTS and "p" in self.stack:
            self.report("invariant", f"narrative has a block element ('{local}') inside a paragraph (txt-1)")
        if local == "img":
            self.content = True
        for qname, value in attrs.items():
            self.attribute(local, qname, value)
        self.stack.append(local)

    def attribute(self, element: str, qname: str, value: str) -> None:
        ans, _, aname = qname.rpartition(" ")
        if ans == XML_NS:
            aname = f"xml:{aname}"
        elif ans:
            self.report("invariant", "narrative attribute in a foreign namespace is not allowed (txt-1)")
            return
        if aname.lower().startswith("on"):
            self.report("security", "narrative contains an event handler attribute (txt-1)")
            return
        if aname not in _XHTML_ATTRIBUTES and f"{element}.{aname}" not in _XHTML_ELEMENT_ATTRIBUTES:
            named = f"'{aname}'" if aname in _KNOWN_ATTRIBUTES else "an attribute"
            shown = f" on '{element}'" if element in _KNOWN_ELEMENTS else ""
            self.report("invariant", f"narrative has {named}{shown} that FHIR does not allow (txt-1)")
            return
        if aname in _XHTML_URL_ATTRIBUTES:
            url = _URL_NOISE.sub("", value).lower()
            scheme = _SCHEME.match(url)
            if scheme and scheme.group(1) not in _SAFE_SCHEMES:
                self.report("security", "narrative link uses a URL scheme that is not allowed (txt-1)")
            elif scheme and scheme.group(1) == "data" and not (element == "img" and _DATA_IMAGE.match(url)):
                self.report("security", "narrative data: URLs are allowed only for raster images in <img> (txt-1)")
        elif aname == "style" and _STYLE_ACTIVE.search(value):
            self.report("security", "narrative style attribute contains active content (txt-1)")

    def end(self, _name: str) -> None:
        self.stack.pop()

    def text(self, data: str) -> None:
        if not self.content and data.strip(_XML_WS):
            self.content = True

    def instruction(self, _target: str, _data: str) -> None:
        self.report("invariant", "narrative contains a processing instruction (txt-1)")


def _check_div(div: str, path: str, issues: list[Issue]) -> None:
    if not div.strip(_XML_WS):
        issues.append(Issue("structure", "narrative div is empty", path))
        return
    if "<!" in div:
        for pattern, message in _MARKUP_DECLARATIONS:
            if pattern.search(div):
                issues.append(Issue("security", message, path))
        return
    checker = _Xhtml(path, issues)
    try:
        checker.parser.Parse(div.encode("utf-8", "replace"), True)
    except expat.ExpatError as exc:
        reason = expat.ErrorString(exc.code) if exc.code is not None else "syntax error"
        issues.append(
            Issue(
                "invariant",
                f"narrative is not well-formed XHTML: {reason} (line {exc.lineno}, column {exc.offset + 1} of the div)",
                path,
            )
        )
        return
    if not checker.content:
        issues.append(Issue("invariant", "narrative has no text or image content (txt-2)", path))


# ---------------------------------------------------------------------------------------------
# Resource-level rules (always run: they touch a handful of keys)


def _resource(doc: dict[str, Any], path: str, issues: list[Issue], *, raw: bytes | None, contained: bool) -> None:
    rtype = doc.get("resourceType")
    rid = doc.get("id")
    if isinstance(rid, str) and len(rid) > MAX_ID:
        issues.append(Issue("too-long", f"resource id is longer than {MAX_ID} characters", f"{path}.id"))
    meta = doc.get("meta")
    if isinstance(meta, dict):
        version = meta.get("versionId")
        if isinstance(version, str) and len(version) > MAX_ID:
            issues.append(Issue("too-long", f"versionId is longer than {MAX_ID} characters", f"{path}.meta.versionId"))
    if contained:
        _contained_rules(doc, path, issues)
    check = _TYPE_RULES.get(rtype) if isinstance(rtype, str) else None
    if check is not None:
        check(doc, path, issues)
    if "telecom" in doc or "contact" in doc:
        _telecom(doc, path, issues)
    if rtype == "Bundle":
        _bundle(doc, path, issues, standalone=False)
        return
    if rtype == "Parameters":
        for where, res in _parameter_resources(doc.get("parameter"), f"{path}.parameter"):
            _resource(res, where, issues, raw=None, contained=False)
        return
    kids = doc.get("contained")
    if isinstance(kids, list):
        for i, kid in enumerate(kids):
            if isinstance(kid, dict):
                _resource(kid, f"{path}.contained[{i}]", issues, raw=None, contained=True)
    if not contained:
        _local_references(doc, path, issues, raw)


def _contained_rules(doc: dict[str, Any], path: str, issues: list[Issue]) -> None:
    if "contained" in doc:
        issues.append(
            Issue("invariant", "a contained resource SHALL NOT contain resources (dom-2)", f"{path}.contained")
        )
    meta = doc.get("meta")
    if isinstance(meta, dict):
        if "versionId" in meta or "lastUpdated" in meta:
            issues.append(
                Issue(
                    "invariant", "a contained resource SHALL NOT have versionId or lastUpdated (dom-4)", f"{path}.meta"
                )
            )
        if "security" in meta:
            issues.append(
                Issue(
                    "invariant", "a contained resource SHALL NOT have security labels (dom-5)", f"{path}.meta.security"
                )
            )


def _local_references(doc: dict[str, Any], path: str, issues: list[Issue], raw: bytes | None) -> None:
    """ref-1 (a '#id' reference needs that contained resource) and dom-3 (a contained resource is
    referenced from elsewhere in the resource, or refers to it)."""
    kids = doc.get("contained")
    kids = kids if isinstance(kids, list) else []
    if raw is None:
        raw = orjson.dumps(doc)
    if not kids and b'"reference":"#' not in raw:
        return
    ids = {k["id"] for k in kids if isinstance(k, dict) and isinstance(k.get("id"), str)}
    dangling = {m.decode() for m in _LOCAL_REFERENCE.findall(raw)} - ids - {""}
    if dangling:
        for where, ref in _references(doc, path):
            if ref.startswith("#") and ref[1:] in dangling:
                issues.append(
                    Issue("not-found", "local reference has no contained resource with that id (ref-1)", where)
                )
    for i, kid in enumerate(kids):
        if not isinstance(kid, dict):
            continue
        kid_id = kid.get("id")
        referenced = isinstance(kid_id, str) and b'"#' + kid_id.encode() + b'"' in raw
        if not referenced and b'"#"' not in orjson.dumps(kid):
            issues.append(
                Issue(
                    "invariant",
                    "contained resource is not referenced from the rest of the resource (dom-3)",
                    f"{path}.contained[{i}]",
                )
            )


def _references(node: Any, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str):
                yield f"{path}.reference", value
            else:
                yield from _references(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield from _references(item, f"{path}[{i}]")


def _parameter_resources(params: Any, path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    if not isinstance(params, list):
        return
    for i, p in enumerate(params):
        if not isinstance(p, dict):
            continue
        if isinstance(p.get("resource"), dict):
            yield f"{path}[{i}].resource", p["resource"]
        yield from _parameter_resources(p.get("part"), f"{path}[{i}].part")


def _telecom(doc: dict[str, Any], path: str, issues: list[Issue]) -> None:
    """cpt-2 ("A system is required if a value is provided") on the resource's and its contacts' telecom."""
    groups: list[tuple[str, Any]] = [(f"{path}.telecom", doc.get("telecom"))]
    contacts = doc.get("contact")
    if isinstance(contacts, list):
        groups += [
            (f"{path}.contact[{i}].telecom", c.get("telecom")) for i, c in enumerate(contacts) if isinstance(c, dict)
        ]
    for where, points in groups:
        if isinstance(points, list):
            for i, cp in enumerate(points):
                if isinstance(cp, dict) and "value" in cp and "system" not in cp:
                    issues.append(
                        Issue("invariant", "contact point with a value needs a system (cpt-2)", f"{where}[{i}]")
                    )


# Per-type invariants (R4 4.0.1 rules the R4B models do not enforce)


def _items(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _coded(concept: Any, system: str, codes: set[str]) -> bool:
    if not isinstance(concept, dict) or not isinstance(concept.get("coding"), list):
        return False
    return any(isinstance(c, dict) and c.get("system") == system and c.get("code") in codes for c in concept["coding"])


def _has_choice(node: dict[str, Any], prefix: str) -> bool:
    return any(k.startswith(prefix) and k[len(prefix) : len(prefix) + 1].isupper() for k in node)


def _risk_assessment(doc: dict[str, Any], path: str, issues: list[Issue]) -> None:
    for i, p in enumerate(_items(doc.get("prediction"))):
        value = p.get("probabilityDecimal") if isinstance(p, dict) else None
        if isinstance(value, int | float) and not isinstance(value, bool) and value > 100:
            issues.append(Issue("invariant", "probability must be <= 100 (ras-2)", f"{path}.prediction[{i}]"))


def _codings(concept: Any) -> set[bytes]:
    """Codings as FHIRPath compares them (whole-element equality)."""
    if not isinstance(concept, dict) or not isinstance(concept.get("coding"), list):
        return set()
    return {orjson.dumps(c, option=orjson.OPT_SORT_KEYS) for c in concept["coding"]}


def _observation(doc: dict[str, Any], path: str, issues: list[Issue]) -> None:
    has_value = _has_choice(doc, "value")
    if has_value and "dataAbsentReason" in doc:
        issues.append(
            Issue(
                "invariant",
                "dataAbsentReason SHALL only be present if there is no value (obs-6)",
                f"{path}.dataAbsentReason",
            )
        )
    components = doc.get("component")
    if has_value and isinstance(components, list):
        own = _codings(doc.get("code"))
        for i, comp in enumerate(components):
            if isinstance(comp, dict) and own & _codings(comp.get("code")):
                issues.append(
                    Issue(
                        "invariant",
                        "an observation with a component of its own code SHALL NOT have a value (obs-7)",
                        f"{path}.component[{i}]",
                    )
                )


_AI_VERIFICATION = "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification"
_CONDITION_VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
_CONDITION_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"


def _allergy(doc: dict[str, Any], path: str, issues: list[Issue]) -> None:
    erroneous = _coded(doc.get("verificationStatus"), _AI_VERIFICATION, {"entered-in-error"})
    if not erroneous and "clinicalStatus" not in doc:
        issues.append(
            Issue(
                "invariant", "clinicalStatus SHALL be present unless entered-in-error (ait-1)", f"{path}.clinicalStatus"
            )
        )
    if erroneous and "clinicalStatus" in doc:
        issues.append(
            Issue(
                "invariant", "clinicalStatus SHALL NOT be present if entered-in-error (ait-2)", f"{path}.clinicalStatus"
            )
        )


def _condition(doc: dict[str, Any], path: str, issues: list[Issue]) -> None:
    if _has_choice(doc, "abatement") and not _coded(
        doc.get("clinicalStatus"), _CONDITION_CLINICAL, {"inactive", "resolved", "remission"}
    ):
        issues.append(
            Issue(
                "invariant",
                "an abated condition's clinicalStatus must be inactive, resolved or remission (con-4)",
                f"{path}.clinicalStatus",
            )
        )
    if _coded(doc.get("verificationStatus"), _CONDITION_VERIFICATION, {"entered-in-error"}) and "clinicalStatus" in doc:
        issues.append(
            Issue(
                "invariant", "clinicalStatus SHALL NOT be present if entered-in-error (con-5)", f"{path}.clinicalStatus"
            )
        )


def _patient(doc: dict[str, Any], path: str, issues: list[Issue]) -> None:
    for i, c in enumerate(_items(doc.get("contact"))):
        if isinstance(c, dict) and not any(k in c for k in ("name", "telecom", "address", "organization")):
            issues.append(
                Issue(
                    "invariant",
                    "a contact needs a name, telecom, address or organization (pat-1)",
                    f"{path}.contact[{i}]",
                )
            )


def _sections(sections: Any, path: str, issues: list[Issue]) -> None:
    if not isinstance(sections, list):
        return
    for i, s in enumerate(sections):
        if not isinstance(s, dict):
            continue
        where = f"{path}[{i}]"
        if not any(k in s for k in ("text", "entry", "section")):
            issues.append(Issue("invariant", "a section needs text, entries or sub-sections (cmp-1)", where))
        if "emptyReason" in s and "entry" in s:
            issues.append(Issue("invariant", "a section with entries SHALL NOT have an emptyReason (cmp-2)", where))
        _sections(s.get("section"), f"{where}.section", issues)


def _composition(doc: dict[str, Any], path: str, issues: list[Issue]) -> None:
    _sections(doc.get("section"), f"{path}.section", issues)


def _qr_items(items: Any, path: str, issues: list[Issue]) -> None:
    if not isinstance(items, list):
        return
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            continue
        where = f"{path}[{i}]"
        if "answer" in item and "item" in item:
            issues.append(Issue("invariant", "an item cannot have both answers and nested items (qrs-1)", where))
        _qr_items(item.get("item"), f"{where}.item", issues)
        for j, answer in enumerate(_items(item.get("answer"))):
            if isinstance(answer, dict):
                _qr_items(answer.get("item"), f"{where}.answer[{j}].item", issues)


def _questionnaire_response(doc: dict[str, Any], path: str, issues: list[Issue]) -> None:
    _qr_items(doc.get("item"), f"{path}.item", issues)


def _care_plan(doc: dict[str, Any], path: str, issues: list[Issue]) -> None:
    for i, a in enumerate(_items(doc.get("activity"))):
        if isinstance(a, dict) and "reference" in a and "detail" in a:
            issues.append(
                Issue("invariant", "an activity has a reference or a detail, not both (cpe-1)", f"{path}.activity[{i}]")
            )


_TYPE_RULES = {
    "RiskAssessment": _risk_assessment,
    "Observation": _observation,
    "AllergyIntolerance": _allergy,
    "Condition": _condition,
    "Patient": _patient,
    "Composition": _composition,
    "QuestionnaireResponse": _questionnaire_response,
    "CarePlan": _care_plan,
}


# ---------------------------------------------------------------------------------------------
# Bundle rules (bdl-1 ... bdl-12 and the HL7 validator's fullUrl, link and search rules)

_REQUEST_TYPES = frozenset({"batch", "transaction", "history"})
_RESPONSE_TYPES = frozenset({"batch-response", "transaction-response", "history"})
_SINGLE_LINKS = frozenset({"self", "first", "previous", "prev", "next", "last"})
_ABSOLUTE = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:\S")
_RESTFUL = re.compile(r"^(?:https?://.*/)?([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})$")
_HISTORY = re.compile(r"^(.*)/_history/([^/]+)$")


def _bundle(doc: dict[str, Any], path: str, issues: list[Issue], *, standalone: bool) -> None:
    """`standalone`: called by transaction processing, which checks entries and duplicate fullUrls itself."""
    btype = doc.get("type")
    raw_entries = doc.get("entry")
    entries: list[Any] = raw_entries if isinstance(raw_entries, list) else []
    if "total" in doc and btype not in ("searchset", "history"):
        issues.append(Issue("invariant", "total only when a search or history (bdl-1)", f"{path}.total"))
    if btype == "document":
        ident = doc.get("identifier")
        if not (isinstance(ident, dict) and "system" in ident and "value" in ident):
            issues.append(
                Issue(
                    "invariant",
                    "a document must have an identifier with a system and a value (bdl-9)",
                    f"{path}.identifier",
                )
            )
        if "timestamp" not in doc:
            issues.append(Issue("invariant", "a document must have a date (bdl-10)", f"{path}.timestamp"))
    first = entries[0].get("resource") if entries and isinstance(entries[0], dict) else None
    first_type = first.get("resourceType") if isinstance(first, dict) else None
    if btype == "document" and first_type != "Composition":
        issues.append(
            Issue("invariant", "a document must have a Composition as the first resource (bdl-11)", f"{path}.entry[0]")
        )
    if btype == "message" and first_type != "MessageHeader":
        issues.append(
            Issue("invariant", "a message must have a MessageHeader as the first resource (bdl-12)", f"{path}.entry[0]")
        )
    _links(doc.get("link"), f"{path}.link", issues)
    expected = _searched_types(doc.get("link")) if btype == "searchset" else None
    seen: dict[str, list[tuple[int, Any]]] = {}
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            continue
        where = f"{path}.entry[{i}]"
        res = entry.get("resource") if isinstance(entry.get("resource"), dict) else None
        if "search" in entry and btype != "searchset":
            issues.append(Issue("invariant", "entry.search only when a search (bdl-2)", f"{where}.search"))
        if btype not in _REQUEST_TYPES and "request" in entry:
            issues.append(
                Issue("invariant", "entry.request only for a batch, transaction or history (bdl-3)", f"{where}.request")
            )
        if "request" not in entry and (btype == "history" or (btype in _REQUEST_TYPES and not standalone)):
            issues.append(
                Issue(
                    "invariant",
                    "entry.request mandatory for a batch, transaction or history (bdl-3)",
                    f"{where}.request",
                )
            )
        if btype in _RESPONSE_TYPES and "response" not in entry:
            issues.append(
                Issue("invariant", "entry.response mandatory for a response or history (bdl-4)", f"{where}.response")
            )
        if btype not in _RESPONSE_TYPES and "response" in entry:
            issues.append(
                Issue(
                    "invariant",
                    "entry.response only for a batch/transaction response or history (bdl-4)",
                    f"{where}.response",
                )
            )
        if not any(k in entry for k in ("resource", "request", "response")):
            issues.append(Issue("invariant", "an entry must have a resource, a request or a response (bdl-5)", where))
        full = entry.get("fullUrl")
        if isinstance(full, str) and full.strip(_XML_WS):
            _full_url(full, res, f"{where}.fullUrl", issues)
            meta = res.get("meta") if res else None
            seen.setdefault(full, []).append((i, meta.get("versionId") if isinstance(meta, dict) else None))
        if res is not None and btype == "searchset":
            _search_entry(entry, res, expected, where, issues)
        outcome = entry.get("response", {}).get("outcome") if isinstance(entry.get("response"), dict) else None
        if res is not None and not standalone:
            _resource(res, f"{where}.resource", issues, raw=None, contained=False)
        if isinstance(outcome, dict) and not standalone:
            _resource(outcome, f"{where}.response.outcome", issues, raw=None, contained=False)
    repeated = {url: hits for url, hits in seen.items() if len(hits) > 1}
    if repeated and btype != "history" and not (standalone and btype in ("transaction", "batch")):
        for hits in repeated.values():
            versions = [v if isinstance(v, str) else "" for _, v in hits]  # FHIRPath: fullUrl & versionId
            if len(set(versions)) != len(versions):
                for i, _ in hits[1:]:
                    issues.append(
                        Issue(
                            "invariant",
                            f"fullUrl repeats entry {hits[0][0]} without a distinct meta.versionId (bdl-7)",
                            f"{path}.entry[{i}].fullUrl",
                        )
                    )
        _ambiguous_references(entries, repeated, path, issues)


def _full_url(full: str, res: dict[str, Any] | None, where: str, issues: list[Issue]) -> None:
    if not _ABSOLUTE.match(full):
        issues.append(Issue("invalid", "fullUrl must be an absolute URL", where))
        return
    if "/_history/" in full:
        issues.append(Issue("invariant", "fullUrl cannot be a version specific reference (bdl-8)", where))
        return
    match = _RESTFUL.match(full)
    if (
        match
        and res is not None
        and is_resource_type(match.group(1))
        and isinstance(res.get("id"), str)
        and (match.group(1), match.group(2)) != (res.get("resourceType"), res["id"])
    ):
        issues.append(
            Issue("invalid", "fullUrl is a RESTful URL that does not end with the resource's type and id", where)
        )


def _links(links: Any, path: str, issues: list[Issue]) -> None:
    if not isinstance(links, list):
        return
    seen: set[str] = set()
    for i, link in enumerate(links):
        relation = link.get("relation") if isinstance(link, dict) else None
        if isinstance(relation, str) and relation in _SINGLE_LINKS:
            if relation in seen:
                issues.append(Issue("invariant", f"link relation '{relation}' can only occur once", f"{path}[{i}]"))
            seen.add(relation)


def _searched_types(links: Any) -> set[str] | None:
    """The resource types a searchset's self link asks for, when it says."""
    if not isinstance(links, list):
        return None
    for link in links:
        if isinstance(link, dict) and link.get("relation") == "self" and isinstance(link.get("url"), str):
            try:
                parts = urlsplit(link["url"])
            except ValueError:  # e.g. "http://[::1": an unclosed IPv6 literal; the url is not checked here
                return None
            types = [v for k, v in parse_qsl(parts.query) if k == "_type"]
            if types:
                return {t.strip() for t in ",".join(types).split(",") if t.strip()}
            segs = [s for s in parts.path.split("/") if s]
            if segs and segs[-1] == "_search":
                segs.pop()
            if segs and is_resource_type(segs[-1]):
                return {segs[-1]}
            return None
    return None


def _search_entry(
    entry: dict[str, Any], res: dict[str, Any], expected: set[str] | None, where: str, issues: list[Issue]
) -> None:
    search = entry.get("search")
    mode = search.get("mode") if isinstance(search, dict) else None
    if mode == "outcome" and res.get("resourceType") != "OperationOutcome":
        issues.append(
            Issue("invalid", "an entry with search mode 'outcome' must be an OperationOutcome", f"{where}.resource")
        )
    if mode == "match":
        if not isinstance(res.get("id"), str):
            issues.append(Issue("required", "search results must have ids", f"{where}.resource"))
        if expected is not None and res.get("resourceType") not in expected:
            issues.append(
                Issue("invalid", "search match is not of a resource type the search asked for", f"{where}.resource")
            )


def _ambiguous_references(
    entries: list[Any], repeated: dict[str, list[tuple[int, Any]]], path: str, issues: list[Issue]
) -> None:
    """With fullUrls repeated across versions (bdl-7), a reference must say which version it means."""
    for i, entry in enumerate(entries):
        res = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(res, dict):
            continue
        full = entry.get("fullUrl")
        base = full.rsplit("/", 2)[0] if isinstance(full, str) and _RESTFUL.match(full) else None
        refs = {m.decode() for m in _REFERENCE.findall(orjson.dumps(res))}
        bad: dict[str, str] = {}
        for ref in refs:
            target = ref if _ABSOLUTE.match(ref) else (f"{base}/{ref}" if base and not ref.startswith("#") else None)
            if target is None:
                continue
            version = None
            hist = _HISTORY.match(target)
            if hist:
                target, version = hist.group(1), hist.group(2)
            hits = repeated.get(target)
            if hits is None:
                continue
            if version is None:
                bad[ref] = "reference matches more than one entry of this Bundle (give a version)"
            elif version not in {v for _, v in hits}:
                bad[ref] = "versioned reference matches no entry of this Bundle"
        if bad:
            for where, ref in _references(res, f"{path}.entry[{i}].resource"):
                if ref in bad:
                    code = "multiple-matches" if "more than one" in bad[ref] else "not-found"
                    issues.append(Issue(code, bad[ref], where))
