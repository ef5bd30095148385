"""SHL file encryption: every spec vector decrypts, our JWEs are well-formed, bombs and tampering fail."""

from __future__ import annotations

import base64
import json
import zlib
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from medvault.emergency import jwe, shl
from medvault.emergency.errors import JweError, JweTooLarge

VECTORS = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "smart-health-links" / "hl7-spec-vectors"
SPEC_KEY = shl.decode_key("rxTgYlOaKJPFtcEd0qcceN8wEU4p94SqAwIWQe6uX7Q")
FHIR = "application/fhir+json"


def _header(token: str) -> dict[str, object]:
    seg = token.split(".", maxsplit=1)[0]
    out: dict[str, object] = json.loads(base64.urlsafe_b64decode(seg + "=" * (-len(seg) % 4)))
    return out


def test_spec_example_decrypts_to_its_plaintext() -> None:
    token = (VECTORS / "spec-example-encrypted.jwe.txt").read_text(encoding="ascii")
    out = jwe.decrypt_file(token=token, key=SPEC_KEY)
    assert out.content_type == "application/smart-health-card"
    assert out.plaintext == (VECTORS / "spec-example-decrypted.smart-health-card").read_bytes()
    assert out.json()["verifiableCredential"][0].startswith("eyJ6aXAiOiJERUYi")


def test_ips_vector_without_cty_decrypts_to_the_bundle() -> None:
    token = (VECTORS / "IPS_IG-bundle-01-enc.txt").read_text(encoding="ascii")
    assert len(token) > 65536  # over joserfc's default ciphertext cap: ours must be raised
    assert "cty" not in _header(token)
    out = jwe.decrypt_file(token=token, key=SPEC_KEY)
    assert out.content_type is None
    assert out.json() == json.loads((VECTORS / "IPS_IG-bundle-01.json").read_bytes())
    assert "Bundle" not in repr(out)  # plaintext stays out of reprs


@pytest.mark.parametrize("compress", [False, True])
def test_encrypt_sets_cty_and_fresh_iv(compress: bool) -> None:
    key = shl.new_key()
    data = json.dumps({"resourceType": "Bundle", "type": "document"}).encode()
    a = jwe.encrypt_file(plaintext=data, key=key, content_type=FHIR, compress=compress)
    b = jwe.encrypt_file(plaintext=data, key=key, content_type=FHIR, compress=compress)
    header = _header(a)
    assert header["alg"] == "dir"
    assert header["enc"] == "A256GCM"
    assert header["cty"] == FHIR
    assert ("zip" in header) is compress
    assert a.split(".")[1] == ""  # dir: no encrypted key
    assert a.split(".")[2] != b.split(".")[2]  # fresh IV
    assert len(base64.urlsafe_b64decode(a.split(".")[2] + "==")) == 12
    out = jwe.decrypt_file(token=a, key=key)
    assert out.plaintext == data
    assert out.content_type == FHIR
    assert out.compressed is compress


def test_zip_is_raw_deflate() -> None:
    # Any RFC 1951 decoder (pako.inflateRaw in the spec, WebCrypto viewers) must read our files.
    key = shl.new_key()
    data = b'{"resourceType":"Bundle"}' * 50
    token = jwe.encrypt_file(plaintext=data, key=key, content_type=FHIR, compress=True)
    h, _, iv, ct, tag = token.split(".")

    def b64(s: str) -> bytes:
        return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))

    raw = AESGCM(key).decrypt(b64(iv), b64(ct) + b64(tag), h.encode())
    assert zlib.decompress(raw, wbits=-zlib.MAX_WBITS) == data


def test_zip_bomb_refused() -> None:
    key = shl.new_key()
    bomb = jwe.encrypt_file(plaintext=b"\0" * (4 * 1024 * 1024), key=key, content_type=FHIR, compress=True)
    assert len(bomb) < 10_000
    with pytest.raises(JweTooLarge, match="exceeds the cap"):
        jwe.decrypt_file(token=bomb, key=key, max_plaintext_bytes=1024 * 1024)
    # Exactly at the cap is fine.
    assert len(jwe.decrypt_file(token=bomb, key=key, max_plaintext_bytes=4 * 1024 * 1024).plaintext) == 4 * 1024 * 1024


def test_oversize_jwe_refused() -> None:
    token = (VECTORS / "IPS_IG-bundle-01-enc.txt").read_text(encoding="ascii")
    with pytest.raises(JweTooLarge, match="longer than"):
        jwe.decrypt_file(token=token, key=SPEC_KEY, max_jwe_chars=65536)
    with pytest.raises(JweTooLarge):
        jwe.decrypt_file(token=token.encode(), key=SPEC_KEY, max_jwe_chars=65536)
    with pytest.raises(JweTooLarge):
        jwe.encrypt_file(plaintext=b"x" * (jwe.MAX_PLAINTEXT_BYTES + 1), key=SPEC_KEY, content_type=FHIR)


def _token_with_header(header: dict[str, object], rest: str = "..AAAAAAAAAAAAAAAA.AAAA.AAAAAAAAAAAAAAAAAAAAAA") -> str:
    seg = base64.urlsafe_b64encode(json.dumps(header).encode()).rstrip(b"=").decode()
    return seg + rest


@pytest.mark.parametrize(
    ("token", "message"),
    [
        ("abc", "5 dot-separated parts"),
        ("a.b.c.d.e.f", "5 dot-separated parts"),
        ("eyJhbGciOiJkaXIiLCJlbmMiOiJBMjU2R0NNIn0..8zH0NmUXGwMOqEya.xdGRpgyvE9vNoKzHlr4itKKW2vo<snipped>", "5 dot"),
        ("eyJhbGciOiJkaXIiLCJlbmMiOiJBMjU2R0NNIn0..8zH0NmUXGwMOqEya.xdGRp<snipped>.AAAA", "not base64url"),
        ("e30.a.b.c.d", "empty encrypted-key"),
        ("!!!!....", "not base64url"),
        ("bm90anNvbg....", "header is not base64url JSON"),
        ("WzFd....", "JSON object"),
        (_token_with_header({"alg": "A256KW", "enc": "A256GCM"}), "must use alg 'dir'"),
        (_token_with_header({"alg": "dir", "enc": "A128GCM"}), "must use alg 'dir'"),
        (_token_with_header({"alg": "dir", "enc": "A256GCM", "zip": "GZ"}), "zip must be 'DEF'"),
        (_token_with_header({"alg": "dir", "enc": "A256GCM", "cty": 5}), "cty must be a string"),
        (_token_with_header({"alg": "dir", "enc": "A256GCM"}), "failed to decrypt"),
        (_token_with_header({"alg": "dir", "enc": "A256GCM", "crit": ["x"], "x": 1}), "failed to decrypt"),
    ],
)
def test_malformed_jwe(token: str, message: str) -> None:
    with pytest.raises(JweError, match=message):
        jwe.decrypt_file(token=token, key=SPEC_KEY)


def test_wrong_key_and_tampering_fail() -> None:
    key = shl.new_key()
    token = jwe.encrypt_file(plaintext=b'{"a":1}', key=key, content_type=FHIR)
    with pytest.raises(JweError, match="failed to decrypt"):
        jwe.decrypt_file(token=token, key=shl.new_key())
    h, ek, iv, ct, tag = token.split(".")
    flipped = ct[:-1] + ("A" if ct[-1] != "A" else "B")
    with pytest.raises(JweError, match="failed to decrypt"):
        jwe.decrypt_file(token=f"{h}.{ek}.{iv}.{flipped}.{tag}", key=key)
    # The header is authenticated (it is the AAD): swapping cty breaks the tag.
    other = _header(token) | {"cty": "application/smart-health-card"}
    h2 = base64.urlsafe_b64encode(json.dumps(other).encode()).rstrip(b"=").decode()
    with pytest.raises(JweError, match="failed to decrypt"):
        jwe.decrypt_file(token=f"{h2}.{ek}.{iv}.{ct}.{tag}", key=key)
    with pytest.raises(JweError, match="32 bytes"):
        jwe.decrypt_file(token=token, key=key[:16])


def test_unknown_content_type_refused_on_encrypt() -> None:
    with pytest.raises(JweError, match="content type"):
        jwe.encrypt_file(plaintext=b"x", key=SPEC_KEY, content_type="text/plain")


def test_non_json_plaintext_reported() -> None:
    key = shl.new_key()
    token = jwe.encrypt_file(plaintext=b"\xff not json", key=key, content_type=FHIR)
    with pytest.raises(JweError, match="not JSON"):
        jwe.decrypt_file(token=token, key=key).json()


@settings(max_examples=40, deadline=None)
@given(
    data=st.binary(max_size=4096),
    compress=st.booleans(),
    content_type=st.sampled_from(sorted(jwe.CONTENT_TYPES)),
)
def test_encrypt_decrypt_round_trip(data: bytes, compress: bool, content_type: str) -> None:
    key = shl.new_key()
    token = jwe.encrypt_file(plaintext=data, key=key, content_type=content_type, compress=compress)
    out = jwe.decrypt_file(token=token, key=key)
    assert out.plaintext == data
    assert out.content_type == content_type


_segment = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", max_size=64)
_HEADERS = [
    "eyJhbGciOiJkaXIiLCJlbmMiOiJBMjU2R0NNIn0",  # {"alg":"dir","enc":"A256GCM"}
    "eyJhbGciOiJkaXIiLCJlbmMiOiJBMjU2R0NNIiwiemlwIjoiREVGIn0",  # + zip DEF
]


@settings(max_examples=200, deadline=None)
@given(
    header=st.sampled_from(_HEADERS) | _segment,
    ek=st.just("") | _segment,
    iv=_segment,
    ct=_segment,
    tag=_segment,
    junk=st.text(max_size=40),
)
def test_any_token_fails_only_with_jwe_errors(header: str, ek: str, iv: str, ct: str, tag: str, junk: str) -> None:
    for token in (f"{header}.{ek}.{iv}.{ct}.{tag}", junk):
        with pytest.raises(JweError):
            jwe.decrypt_file(token=token, key=SPEC_KEY)


def test_deeply_nested_plaintext_json_is_a_clear_error() -> None:
    key = shl.new_key()
    token = jwe.encrypt_file(plaintext=b"[" * 100_000, key=key, content_type=FHIR, compress=True)
    with pytest.raises(JweError, match="not JSON"):
        jwe.decrypt_file(token=token, key=key).json()
