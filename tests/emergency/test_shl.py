"""SMART Health Link payloads: the spec's vectors byte for byte, strict parsing, round trips."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from medvault.emergency import shl
from medvault.emergency.errors import ShlPayloadError, ShlTooLarge

VECTORS = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "smart-health-links" / "hl7-spec-vectors"
SPEC_KEY = "rxTgYlOaKJPFtcEd0qcceN8wEU4p94SqAwIWQe6uX7Q"


def _vector(name: str) -> Any:
    return json.loads((VECTORS / name).read_text(encoding="utf-8"))


def _encode(obj: object) -> str:
    raw = json.dumps(obj, separators=(",", ":")).encode()
    return "shlink:/" + base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _valid(**changes: object) -> dict[str, object]:
    obj: dict[str, object] = {"url": "https://ehr.example.org/qr/abc/m", "key": SPEC_KEY}
    obj.update(changes)
    return obj


def test_spec_example_encodes_byte_for_byte() -> None:
    example = _vector("spec-example-shlink.json")
    p = example["payload"]
    payload = shl.build_payload(url=p["url"], key=shl.decode_key(p["key"]), flags=p["flag"], label=p["label"])
    assert shl.encode_payload(payload) == example["encodedPayload"]
    assert shl.to_shlink(payload) == example["shlinkBare"]
    assert shl.to_viewer_link(payload, viewer_url="https://viewer.example.org") == example["shlinkWithViewer"]
    # A viewer URL already ending in '#' is not doubled.
    assert shl.to_viewer_link(payload, viewer_url="https://viewer.example.org#") == example["shlinkWithViewer"]


def test_spec_example_parses_in_both_forms() -> None:
    example = _vector("spec-example-shlink.json")
    bare = shl.parse_shlink(example["shlinkBare"])
    assert shl.parse_shlink(example["shlinkWithViewer"]) == bare
    assert bare.url == example["payload"]["url"]
    assert bare.key_bytes == base64.urlsafe_b64decode(SPEC_KEY + "=")
    assert bare.flag == "LP"
    assert bare.passcode_required
    assert bare.long_term
    assert not bare.direct_file
    assert bare.label == "Back-to-school immunizations for Oliver Brown"
    assert bare.exp is None
    assert bare.version == 1


def test_ips_vector_link_round_trips() -> None:
    details = _vector("IPS_IG-bundle-01-shl-details.json")
    viewer_text = (VECTORS / "IPS_IG-bundle-01-shl.txt").read_text(encoding="utf-8")
    payload = shl.parse_shlink(viewer_text)
    assert payload == shl.parse_shlink(details["shlink"])
    assert payload.direct_file
    assert payload.long_term
    assert not payload.passcode_required
    assert shl.to_shlink(payload) == details["shlink"]
    assert shl.to_viewer_link(payload, viewer_url="https://viewer.tcpdev.org/shlink.html") == details["shlinkBare"]
    p2 = shl.payload_from_json(_vector("shl-payload-2.json"))
    assert p2 == payload


def test_odd_spec_payload_is_refused_for_its_string_exp() -> None:
    odd = _vector("shl-payload-1.json")
    with pytest.raises(ShlPayloadError, match="'exp' must be an integer"):
        shl.parse_shlink(_encode(odd))
    # The misspelt 'labelzzz' alone is an unknown property, which the spec says to ignore.
    del odd["exp"]
    payload = shl.parse_shlink(_encode(odd))
    assert payload.label is None
    assert payload.v == 1
    assert payload.passcode_required


def test_key_repr_never_shows_key() -> None:
    payload = shl.parse_shlink(_encode(_valid()))
    assert SPEC_KEY not in repr(payload)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("shlink:", "must start with"),
        ("SHLINK:/eyJ9", "must start with"),
        ("https://viewer.example.org/#shlink:", "must start with"),
        ("shlink:/", "no payload"),
        ("shlink:/eyJ1cmwi=", "not base64url"),
        ("shlink:/ab+c", "not base64url"),
        ("shlink:/a", "not base64url"),
        ("shlink:/" + base64.urlsafe_b64encode(b"\xff\xfe").decode().rstrip("="), "not UTF-8"),
        ("shlink:/" + base64.urlsafe_b64encode(b"{nope").decode().rstrip("="), "not JSON"),
        ("shlink:/" + base64.urlsafe_b64encode(b"[1,2]").decode().rstrip("="), "JSON object"),
        ("javascript:alert(1)#shlink:/eyJ9", "https URL"),
    ],
)
def test_malformed_link_text(text: str, message: str) -> None:
    with pytest.raises(ShlPayloadError, match=message):
        shl.parse_shlink(text)


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ({"key": SPEC_KEY}, "'url' is required"),
        (_valid(url=42), "'url' is required"),
        (_valid(url="ftp://ehr.example.org/m"), "https URL"),
        (_valid(url="http://ehr.example.org/m"), "https URL"),
        (_valid(url="https://ehr.example.org/" + "a" * 120), "longer than 128"),
        (_valid(url="https://ehr.example.org/a b"), "spaces"),
        (_valid(key=None), "'key' is required"),
        (_valid(key=SPEC_KEY[:-1]), "43 base64url"),
        (_valid(key=SPEC_KEY + "A"), "43 base64url"),
        (_valid(key=SPEC_KEY[:-1] + "R"), "43 base64url"),  # non-zero padding bits: not canonical
        (_valid(key="+" * 43), "43 base64url"),
        (_valid(exp="1767225600"), "'exp' must be an integer"),
        (_valid(exp=1767225600.5), "'exp' must be an integer"),
        (_valid(exp=True), "'exp' must be an integer"),
        (_valid(exp=1767225600000), "not milliseconds"),
        (_valid(exp=-1), "non-negative"),
        (_valid(flag=7), "'flag' must be a string"),
        (_valid(flag="pl"), "upper-case"),
        (_valid(flag="PL"), "alphabetical"),
        (_valid(flag="LL"), "distinct"),
        (_valid(flag="PU"), "must not combine"),
        (_valid(label="x" * 81), "longer than 80"),
        (_valid(label="a\nb"), "control"),
        (_valid(label="\U0001f691" * 41), "longer than 80"),  # 82 UTF-16 units, as JavaScript counts
        (_valid(label=5), "'label' must be a string"),
        (_valid(v="1"), "'v' must be an integer"),
        (_valid(v=0), "'v' must be 1"),
    ],
)
def test_malformed_payload_fields(obj: dict[str, object], message: str) -> None:
    with pytest.raises(ShlPayloadError, match=message):
        shl.parse_shlink(_encode(obj))


def test_duplicate_properties_and_constants_refused() -> None:
    raw = b'{"url":"https://a.example/m","key":"' + SPEC_KEY.encode() + b'","key":"' + b"A" * 43 + b'"}'
    with pytest.raises(ShlPayloadError, match="repeats"):
        shl.parse_shlink("shlink:/" + base64.urlsafe_b64encode(raw).decode().rstrip("="))
    raw = b'{"url":"https://a.example/m","key":"' + SPEC_KEY.encode() + b'","exp":NaN}'
    with pytest.raises(ShlPayloadError, match="NaN"):
        shl.parse_shlink("shlink:/" + base64.urlsafe_b64encode(raw).decode().rstrip("="))


def test_unknown_flags_and_properties_are_ignored() -> None:
    payload = shl.parse_shlink(_encode(_valid(flag="LQ", _ext="x", extension={"a": 1})))
    assert payload.flag == "LQ"
    assert payload.long_term
    assert not payload.passcode_required


def test_oversize_input_refused_before_decoding() -> None:
    with pytest.raises(ShlTooLarge):
        shl.parse_shlink("shlink:/" + "A" * shl.MAX_LINK_CHARS)


def test_loopback_http_allowed_for_tests_and_demo() -> None:
    payload = shl.parse_shlink(_encode(_valid(url="http://127.0.0.1:8765/shl/m/abc")))
    assert payload.url.startswith("http://127.0.0.1")


def test_build_normalises_flag_order_and_refuses_unknown_flags() -> None:
    key = shl.new_key()
    assert shl.build_payload(url="https://a.example/m", key=key, flags="UL").flag == "LU"
    with pytest.raises(ShlPayloadError, match="flags must be distinct"):
        shl.build_payload(url="https://a.example/m", key=key, flags="LX")
    with pytest.raises(ShlPayloadError, match="must not combine"):
        shl.build_payload(url="https://a.example/m", key=key, flags="PU")
    with pytest.raises(ShlPayloadError, match="32 bytes"):
        shl.build_payload(url="https://a.example/m", key=key[:16])
    with pytest.raises(ShlPayloadError, match="fragment"):
        shl.to_viewer_link(shl.build_payload(url="https://a.example/m", key=key), viewer_url="https://v.example/#x")


def test_new_keys_are_fresh_and_43_chars() -> None:
    keys = {shl.encode_key(shl.new_key()) for _ in range(50)}
    assert len(keys) == 50
    assert all(len(k) == 43 for k in keys)


_label_chars = st.characters(blacklist_categories=("Cc", "Cs"))


@given(
    path=st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_", max_size=80),
    key=st.binary(min_size=32, max_size=32),
    exp=st.none() | st.integers(min_value=0, max_value=shl.MAX_EXP - 1),
    flags=st.sampled_from(["", "L", "P", "U", "LP", "LU"]),
    label=st.none() | st.text(alphabet=_label_chars, max_size=80).filter(lambda t: len(t.encode("utf-16-le")) <= 160),
    v=st.none() | st.integers(min_value=1, max_value=9),
    viewer=st.booleans(),
)
def test_build_parse_round_trip(
    path: str, key: bytes, exp: int | None, flags: str, label: str | None, v: int | None, viewer: bool
) -> None:
    payload = shl.build_payload(url=f"https://ehr.example.org/{path}", key=key, exp=exp, flags=flags, label=label, v=v)
    text = shl.to_viewer_link(payload, viewer_url="https://viewer.example.org/v") if viewer else shl.to_shlink(payload)
    parsed = shl.parse_shlink(text)
    assert parsed == payload
    assert parsed.key_bytes == key
    # Encoding is deterministic: parse then re-encode gives the same text.
    assert shl.to_shlink(parsed) == shl.to_shlink(payload)


def test_deeply_nested_payload_is_a_clear_error() -> None:
    text = "shlink:/" + base64.urlsafe_b64encode(b"[" * 3000).decode().rstrip("=")
    with pytest.raises(ShlPayloadError, match="nested too deeply"):
        shl.parse_shlink(text)


def test_viewer_url_must_end_at_the_hash() -> None:
    bare = shl.to_shlink(shl.build_payload(url="https://a.example/m", key=shl.new_key()))
    with pytest.raises(ShlPayloadError, match="must end at the '#'"):
        shl.parse_shlink("https://viewer.example.org/#other" + "#" + bare)


@given(st.text(max_size=300) | st.text(max_size=300).map(lambda t: "shlink:/" + t))
def test_any_text_fails_only_with_shl_errors(text: str) -> None:
    # Bad input must end in one readable error, never a traceback (a QR scanner feeds us anything).
    outcome: shl.ShlPayload | ShlPayloadError | ShlTooLarge
    try:
        outcome = shl.parse_shlink(text)
    except (ShlPayloadError, ShlTooLarge) as exc:
        outcome = exc
    if isinstance(outcome, shl.ShlPayload):
        assert len(outcome.key_bytes) == 32
    else:
        assert outcome.message
        assert "\n" not in outcome.message


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@given(extra=st.dictionaries(st.sampled_from(["url", "key", "exp", "flag", "label", "v", "_x"]), _json, max_size=4))
def test_any_payload_object_fails_only_with_shl_errors(extra: dict[str, object]) -> None:
    obj = {"url": "https://a.example/m", "key": SPEC_KEY} | extra
    try:
        payload = shl.parse_shlink(_encode(obj))
    except (ShlPayloadError, ShlTooLarge):
        return
    assert payload.url == obj["url"]


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_encoding_matches_javascript_json_stringify() -> None:
    # Receivers are mostly JavaScript: our bytes must be what JSON.stringify + base64url give.
    for label in [
        "Notfallkarte für Jürgen Groß",
        '急救 \U0001f691 "q" / \\',
        "Irradiated blood only \u2014 fludarabine",
    ]:
        payload = shl.build_payload(
            url="https://ehr.example.org/qr/x/m", key=bytes(range(32)), exp=1767225600, flags="LP", label=label, v=1
        )
        obj = {"url": payload.url, "flag": "LP", "key": payload.key, "exp": 1767225600, "label": label, "v": 1}
        script = (
            "const o=JSON.parse(require('fs').readFileSync(0,'utf8'));"
            "process.stdout.write(Buffer.from(JSON.stringify(o),'utf8').toString('base64url'))"
        )
        node = subprocess.run(["node", "-e", script], input=json.dumps(obj), capture_output=True, text=True, check=True)
        assert shl.encode_payload(payload) == node.stdout
