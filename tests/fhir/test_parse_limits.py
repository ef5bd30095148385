"""parse_json's depth limit, the id rule and the static resource type list (medvault.fhir.parse/types)."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medvault.fhir.errors import InvalidResource
from medvault.fhir.parse import MAX_DEPTH, nested_too_deeply, parse_json, validate
from medvault.fhir.type_names import RESOURCE_TYPE_NAMES
from medvault.fhir.types import is_fhir_id, is_resource_type, is_version_id, resource_types
from tests.conftest import SHARED


def depth(node: Any) -> int:
    if isinstance(node, dict):
        return 1 + max((depth(v) for v in node.values()), default=0)
    if isinstance(node, list):
        return 1 + max((depth(v) for v in node), default=0)
    return 0


# Strings full of the characters the byte scan must see through: brackets, quotes, backslashes.
_TRICKY = st.text(st.sampled_from('[]{}"\\/ aé\n\t\x00'), max_size=12)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | _TRICKY,
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(_TRICKY, kids, max_size=3),
    max_leaves=40,
)


@settings(max_examples=300, deadline=None, database=None)
@given(doc=_JSON, limit=st.integers(1, 12), indent=st.booleans())
def test_depth_scan_agrees_with_the_parsed_depth(doc: Any, limit: int, indent: bool) -> None:
    raw = json.dumps(doc, indent=1 if indent else None, ensure_ascii=False).encode()
    assert nested_too_deeply(raw, limit) == (depth(doc) > limit)


@pytest.mark.parametrize("n", [MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 1, 1000, 100_000])
def test_depth_limit(n: int) -> None:
    for opener, closer in (b"[", b"]"), (b'{"a":', b"}"):
        raw = opener * n + b"1" + closer * n
        if n <= MAX_DEPTH:
            parse_json(b'{"x":' + opener * (n - 1) + b"1" + closer * (n - 1) + b"}")
        else:
            with pytest.raises(InvalidResource) as caught:
                parse_json(b'{"x":' + raw + b"}")
            assert caught.value.issues[0].code == "too-costly"


def test_brackets_in_strings_do_not_count() -> None:
    text = "[" * 500 + '\\"{' * 100 + "\\\\"
    assert not nested_too_deeply(orjson.dumps({"a": [text, {"b": text}]}))
    parse_json(orjson.dumps({"resourceType": "Patient", "x": text}))


def test_unbalanced_text_is_left_to_the_parser() -> None:
    """Not JSON: the parser names the line and column; the depth scan does not claim it."""
    with pytest.raises(InvalidResource) as caught:
        parse_json(b'{"a": ' + b"[" * 200 + b"}")
    assert caught.value.issues[0].code == "structure"


def test_the_deepest_examples_are_well_inside_the_limit() -> None:
    deepest = 0
    for path in (SHARED / "data").rglob("*.json"):
        raw = path.read_bytes()
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue
        assert not nested_too_deeply(raw), path
        deepest = max(deepest, depth(doc))
    assert 0 < deepest <= MAX_DEPTH // 2


def test_validate_survives_a_dict_too_deep_to_serialise() -> None:
    """Documents that did not come through parse_json (over orjson.dumps's 255 levels)."""
    node: Any = []
    for _ in range(600):
        node = [node]
    with pytest.raises(InvalidResource) as caught:
        validate({"resourceType": "Patient", "extension": node})
    assert any(i.code == "too-costly" for i in caught.value.issues)


# ---------------------------------------------------------------------------------------------
# ids, versions, type names


@pytest.mark.parametrize("rid", ["a", "A-1.b", "0", "-", ".", "a" * 64, "550e8400-e29b-41d4-a716-446655440000"])
def test_valid_ids(rid: str) -> None:
    assert is_fhir_id(rid)


@pytest.mark.parametrize(
    "rid", ["", "a" * 65, "a\x00", "%00", "é", "\uff41", "\u0661", "a b", "a_b", "a/b", "a\n", "\n", None, 1]
)
def test_invalid_ids(rid: object) -> None:
    assert not is_fhir_id(rid)


def test_version_ids() -> None:
    assert is_version_id(1)
    assert is_version_id(2**31 - 1)
    assert not any(is_version_id(v) for v in (0, -1, 2**31, True, "1", 1.0))


def test_resource_type_names_are_what_the_models_know() -> None:
    assert set(RESOURCE_TYPE_NAMES) == resource_types()
    assert all(is_resource_type(name) for name in RESOURCE_TYPE_NAMES)
    for name in ("Resource", "DomainResource", "patient", "HumanName", "", "Patient\x00", "Patient ", "Extension"):
        assert not is_resource_type(name)
