"""Our SHL reader against fixture servers: spec vectors, the spec's (odd) manifest, errors and limits."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medvault.emergency import jwe, shl
from medvault.emergency.errors import (
    JweError,
    JweTooLarge,
    ShlError,
    ShlPasscodeError,
    ShlPasscodeRequired,
    ShlPayloadError,
    ShlProtocolError,
    ShlTooLarge,
    ShlUnavailable,
    ShlVersionUnsupported,
)
from medvault.emergency.reader import (
    HttpRequest,
    HttpResponse,
    ReaderLimits,
    ResolvedLink,
    resolve,
    urllib_http,
)

VECTORS = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "smart-health-links" / "hl7-spec-vectors"
SPEC_KEY = shl.decode_key("rxTgYlOaKJPFtcEd0qcceN8wEU4p94SqAwIWQe6uX7Q")
FHIR = "application/fhir+json"
SHC = "application/smart-health-card"
IPS_JWE = (VECTORS / "IPS_IG-bundle-01-enc.txt").read_bytes()
IPS_BUNDLE = json.loads((VECTORS / "IPS_IG-bundle-01.json").read_bytes())
SHC_JWE = (VECTORS / "spec-example-encrypted.jwe.txt").read_bytes()
SHC_PLAIN = (VECTORS / "spec-example-decrypted.smart-health-card").read_bytes()
MANIFEST_URL = "https://ehr.example.org/qr/Y9xwkUdtmN9wwoJoN3ffJIhX2UGvCL1JnlPVNL3kDWM/m"

Handler = Callable[[HttpRequest], HttpResponse]


class FakeHttp:
    """Routes (method, url without query) to handlers and records every request."""

    def __init__(self, routes: dict[tuple[str, str], Handler | HttpResponse]) -> None:
        self.routes = routes
        self.requests: list[HttpRequest] = []

    def __call__(self, request: HttpRequest) -> HttpResponse:
        self.requests.append(request)
        parts = urlsplit(request.url)
        route = self.routes.get((request.method, f"{parts.scheme}://{parts.netloc}{parts.path}"))
        if route is None:
            return HttpResponse(status=404)
        return route(request) if callable(route) else route


def _ok(body: bytes | str | dict[str, Any]) -> HttpResponse:
    if isinstance(body, dict):
        body = json.dumps(body)
    return HttpResponse(status=200, body=body.encode() if isinstance(body, str) else body)


def _link(**kw: Any) -> str:
    kw.setdefault("url", MANIFEST_URL)
    kw.setdefault("key", SPEC_KEY)
    return shl.to_shlink(shl.build_payload(**kw))


def test_u_flag_ips_vector_resolves_with_recipient_query() -> None:
    details = json.loads((VECTORS / "IPS_IG-bundle-01-shl-details.json").read_bytes())
    url = details["shlinkJsonPayload"]["url"]
    http = FakeHttp({("GET", url): _ok(IPS_JWE)})
    result = resolve(details["shlinkBare"], recipient="Dr. Example, ED", http=http)
    (request,) = http.requests
    assert request.method == "GET"
    assert request.body is None
    assert parse_qs(urlsplit(request.url).query) == {"recipient": ["Dr. Example, ED"]}
    (file,) = result.files
    assert file.source == "direct"
    assert file.cty is None  # the vector's header has no cty ...
    assert file.content_type == FHIR  # ... so the type comes from the JSON
    assert file.json() == IPS_BUNDLE
    assert result.failures == ()


def test_u_flag_keeps_existing_query() -> None:
    token = jwe.encrypt_file(plaintext=SHC_PLAIN, key=SPEC_KEY, content_type=SHC)
    http = FakeHttp({("GET", "https://files.example.org/f"): _ok(token)})
    result = resolve(_link(url="https://files.example.org/f?v=2", flags="U"), recipient="A & B", http=http)
    assert parse_qs(urlsplit(http.requests[0].url).query) == {"v": ["2"], "recipient": ["A & B"]}
    assert result.files[0].content_type == SHC
    assert result.files[0].plaintext == SHC_PLAIN


def _spec_manifest_http(manifest: dict[str, Any] | None = None) -> FakeHttp:
    manifest = manifest or json.loads((VECTORS / "shl-manifest-1.json").read_bytes())
    return FakeHttp(
        {
            ("POST", MANIFEST_URL): _ok(manifest),
            ("GET", "https://bucket.cloud.example.org/file1"): _ok(SHC_JWE),
            ("GET", "https://bucket.cloud.example.org/file2"): _ok(IPS_JWE),
        }
    )


def test_spec_manifest_odd_embedded_file_raises_by_default() -> None:
    # The spec's example manifest truncates its `embedded` JWE ("<snipped>"): it cannot decrypt.
    http = _spec_manifest_http()
    with pytest.raises(JweError, match="file 1: JWE must have 5 dot-separated parts"):
        resolve(_link(flags="LP", label="Back-to-school"), recipient="School nurse", passcode="1234", http=http)


def test_spec_manifest_collects_good_files_and_the_failure() -> None:
    http = _spec_manifest_http()
    result = resolve(_link(flags="LP"), recipient="School nurse", passcode="1234", http=http, on_file_error="collect")
    post = http.requests[0]
    assert post.method == "POST"
    assert post.url == MANIFEST_URL
    assert post.headers["content-type"] == "application/json"
    assert json.loads(post.body or b"") == {"recipient": "School nurse", "passcode": "1234"}
    assert [f.content_type for f in result.files] == [SHC, FHIR]
    assert [f.source for f in result.files] == ["location", "location"]
    assert result.files[0].plaintext == SHC_PLAIN
    assert result.files[1].json() == IPS_BUNDLE
    assert result.files[1].status == "finalized"
    assert result.files[1].fhir_version == "4.0.1"
    assert result.files[1].last_updated == "2025-03-09T15:29:46Z"
    (failure,) = result.failures
    assert failure.index == 1
    assert failure.content_type == SHC
    assert isinstance(failure.error, JweError)


def test_own_manifest_embedded_and_location_with_embedded_length_max() -> None:
    key = shl.new_key()
    bundle = {"resourceType": "Bundle", "type": "document", "entry": []}
    embedded = jwe.encrypt_file(plaintext=json.dumps(bundle).encode(), key=key, content_type=FHIR, compress=True)
    located = jwe.encrypt_file(plaintext=SHC_PLAIN, key=key, content_type=SHC)
    manifest = {
        "files": [
            {"contentType": FHIR, "embedded": embedded, "location": "https://x.example/never"},
            {"contentType": SHC, "location": "https://x.example/f1"},
        ],
        "list": {"resourceType": "List"},
    }
    http = FakeHttp({("POST", MANIFEST_URL): _ok(manifest), ("GET", "https://x.example/f1"): _ok(located)})
    result = resolve(_link(key=key), recipient="EMS", http=http, embedded_length_max=100_000)
    assert json.loads(http.requests[0].body or b"") == {"recipient": "EMS", "embeddedLengthMax": 100_000}
    assert [r.url for r in http.requests] == [MANIFEST_URL, "https://x.example/f1"]  # embedded wins
    assert result.files[0].json() == bundle
    assert result.files[0].source == "embedded"
    assert result.files[1].plaintext == SHC_PLAIN


def test_passcode_is_not_sent_without_p_flag() -> None:
    http = _spec_manifest_http({"files": [{"contentType": SHC, "location": "https://bucket.cloud.example.org/file1"}]})
    resolve(_link(), recipient="EMS", passcode="secret", http=http)
    assert "passcode" not in json.loads(http.requests[0].body or b"")


def test_wrong_passcode_is_typed_with_remaining_attempts() -> None:
    http = FakeHttp({("POST", MANIFEST_URL): HttpResponse(status=401, body=b'{"remainingAttempts": 3}')})
    with pytest.raises(ShlPasscodeError) as info:
        resolve(_link(flags="P"), recipient="Dr. A", passcode="0000", http=http)
    assert info.value.remaining_attempts == 3
    junk = FakeHttp({("POST", MANIFEST_URL): HttpResponse(status=401, body=b"<html>no</html>")})
    with pytest.raises(ShlPasscodeError) as info:
        resolve(_link(flags="P"), recipient="Dr. A", passcode="0000", http=junk)
    assert info.value.remaining_attempts is None


def test_missing_passcode_refused_before_any_request() -> None:
    http = FakeHttp({})
    with pytest.raises(ShlPasscodeRequired):
        resolve(_link(flags="P"), recipient="Dr. A", http=http)
    assert http.requests == []


@pytest.mark.parametrize("flags", ["", "U"])
def test_404_means_unavailable(flags: str) -> None:
    http = FakeHttp({})
    with pytest.raises(ShlUnavailable, match="HTTP 404"):
        resolve(_link(flags=flags), recipient="EMS", http=http)
    assert len(http.requests) == 1


def test_expired_and_newer_version_refused_without_request() -> None:
    http = FakeHttp({})
    with pytest.raises(ShlUnavailable, match="expired"):
        resolve(_link(exp=1_000), recipient="EMS", http=http, now=lambda: 1_000.0)
    with pytest.raises(ShlVersionUnsupported):
        resolve(_link(v=2), recipient="EMS", http=http)
    assert http.requests == []


@pytest.mark.parametrize("recipient", ["", "   ", "a\nb", "x" * 257])
def test_recipient_required_and_sane(recipient: str) -> None:
    with pytest.raises(ShlPayloadError, match="recipient"):
        resolve(_link(), recipient=recipient, http=FakeHttp({}))


@pytest.mark.parametrize(
    ("response", "error", "message"),
    [
        (HttpResponse(status=500), ShlProtocolError, "HTTP 500"),
        (HttpResponse(status=429), ShlProtocolError, "HTTP 429"),
        (_ok("not json"), ShlProtocolError, "not JSON"),
        (_ok({"nofiles": []}), ShlProtocolError, "'files' array"),
        (_ok({"files": []}), ShlProtocolError, "no files"),
        (_ok({"files": ["x"]}), ShlProtocolError, "JSON objects"),
        (_ok({"files": [{"contentType": FHIR}] * 65}), ShlTooLarge, "more than 64"),
        (_ok(b" " * (1024 * 1024 + 1)), ShlTooLarge, "manifest is larger"),
    ],
)
def test_bad_manifest_responses(response: HttpResponse, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        resolve(_link(), recipient="EMS", http=FakeHttp({("POST", MANIFEST_URL): response}))


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"location": "https://x.example/f"}, "no contentType"),
        ({"contentType": FHIR}, "neither 'embedded' nor 'location'"),
        ({"contentType": FHIR, "embedded": 5}, "'embedded' must be a string"),
        ({"contentType": FHIR, "location": "file:///etc/passwd"}, "https URL"),
        ({"contentType": FHIR, "location": "http://x.example/f"}, "https URL"),
        ({"contentType": FHIR, "embedded": jwe.encrypt_file(plaintext=b"{}", key=SPEC_KEY, content_type=SHC)}, "cty"),
    ],
)
def test_bad_manifest_entries(entry: dict[str, Any], message: str) -> None:
    http = FakeHttp({("POST", MANIFEST_URL): _ok({"files": [entry]})})
    with pytest.raises(ShlProtocolError, match=message):
        resolve(_link(), recipient="EMS", http=http)
    assert [r.method for r in http.requests] == ["POST"]  # nothing fetched from a refused location


def test_oversize_file_refused() -> None:
    http = _spec_manifest_http({"files": [{"contentType": FHIR, "location": "https://bucket.cloud.example.org/file2"}]})
    with pytest.raises(JweTooLarge):
        resolve(_link(), recipient="EMS", http=http, limits=ReaderLimits(max_jwe_chars=65536))


def test_spent_location_refetches_manifest_once() -> None:
    token = jwe.encrypt_file(plaintext=SHC_PLAIN, key=SPEC_KEY, content_type=SHC)
    manifests = iter(
        [
            {"files": [{"contentType": SHC, "location": "https://x.example/old"}]},
            {"files": [{"contentType": SHC, "location": "https://x.example/new"}]},
        ]
    )
    http = FakeHttp(
        {
            ("POST", MANIFEST_URL): lambda _r: _ok(next(manifests)),
            ("GET", "https://x.example/old"): HttpResponse(status=410),
            ("GET", "https://x.example/new"): _ok(token),
        }
    )
    result = resolve(_link(), recipient="EMS", http=http)
    assert [r.url for r in http.requests] == [
        MANIFEST_URL,
        "https://x.example/old",
        MANIFEST_URL,
        "https://x.example/new",
    ]
    assert result.files[0].plaintext == SHC_PLAIN


def test_location_failing_twice_is_a_clear_error() -> None:
    manifest = {"files": [{"contentType": SHC, "location": "https://x.example/gone"}]}
    http = FakeHttp({("POST", MANIFEST_URL): _ok(manifest)})
    with pytest.raises(ShlProtocolError, match="file 0: location answered HTTP 404"):
        resolve(_link(), recipient="EMS", http=http)
    assert len(http.requests) == 4
    result = resolve(_link(), recipient="EMS", http=http, on_file_error="collect")
    assert result.files == ()
    assert "HTTP 404" in result.failures[0].error.message


def test_revoked_between_manifest_and_refetch_is_unavailable() -> None:
    manifests = iter([_ok({"files": [{"contentType": SHC, "location": "https://x.example/old"}]}), HttpResponse(404)])
    http = FakeHttp({("POST", MANIFEST_URL): lambda _r: next(manifests)})
    with pytest.raises(ShlUnavailable):
        resolve(_link(), recipient="EMS", http=http, on_file_error="collect")


# --- the default transport, against a real loopback server ----------------------------------------


class _Server(BaseHTTPRequestHandler):
    token = b""
    seen: list[tuple[str, str, bytes]] = []  # noqa: RUF012 - one server per test module, reset per test

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        self.seen.append(("POST", self.path, body))
        if self.path == "/m":
            host = f"http://127.0.0.1:{self.server.server_address[1]}"
            self._send(200, json.dumps({"files": [{"contentType": SHC, "location": f"{host}/f"}]}).encode())
        elif self.path == "/bad":
            self._send(401, b'{"remainingAttempts": 0}')
        else:
            self._send(302, b"", {"location": "https://elsewhere.example/"})

    def do_GET(self) -> None:
        self.seen.append(("GET", self.path, b""))
        if self.path == "/big":
            self._send(200, b"A" * 70_000)
        else:
            self._send(200, self.token, {"content-type": "application/jose"})

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def loopback() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Server)
    _Server.token = jwe.encrypt_file(plaintext=SHC_PLAIN, key=SPEC_KEY, content_type=SHC).encode()
    _Server.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_default_transport_resolves_over_loopback(loopback: str) -> None:
    result = resolve(_link(url=f"{loopback}/m", flags="P"), recipient="EMS crew 7", passcode="4711")
    assert result.files[0].plaintext == SHC_PLAIN
    assert [(m, p) for m, p, _ in _Server.seen] == [("POST", "/m"), ("GET", "/f")]
    assert json.loads(_Server.seen[0][2]) == {"recipient": "EMS crew 7", "passcode": "4711"}
    direct = resolve(_link(url=f"{loopback}/d", flags="U"), recipient="EMS crew 7")
    assert direct.files[0].plaintext == SHC_PLAIN
    assert _Server.seen[-1][1] == "/d?recipient=EMS+crew+7"


def test_default_transport_errors(loopback: str) -> None:
    with pytest.raises(ShlPasscodeError) as info:
        resolve(_link(url=f"{loopback}/bad", flags="P"), recipient="EMS", passcode="x")
    assert info.value.remaining_attempts == 0
    # Redirects are not followed: the 302 surfaces as an unexpected status.
    with pytest.raises(ShlProtocolError, match="HTTP 302"):
        resolve(_link(url=f"{loopback}/redirect"), recipient="EMS")
    with pytest.raises(ShlTooLarge):
        urllib_http(HttpRequest(method="GET", url=f"{loopback}/big", headers={}, max_response_bytes=65_536))
    with pytest.raises(ShlProtocolError, match="https URL"):
        urllib_http(HttpRequest(method="GET", url="file:///etc/passwd", headers={}))


def test_unreachable_server_is_one_clear_error() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Server)
    port = server.server_address[1]
    server.server_close()  # nothing listens there now
    with pytest.raises(ShlProtocolError, match="could not reach"):
        resolve(_link(url=f"http://127.0.0.1:{port}/m"), recipient="EMS")


def test_deeply_nested_manifest_is_a_clear_error() -> None:
    http = FakeHttp({("POST", MANIFEST_URL): _ok(b"[" * 100_000)})
    with pytest.raises(ShlProtocolError, match="not JSON"):
        resolve(_link(), recipient="EMS", http=http)


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.text(max_size=30)
    | st.sampled_from([FHIR, SHC, "https://x.example/f"]),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(["files", "contentType", "location", "embedded", "list", "x"]), inner, max_size=4
        )
    ),
    max_leaves=15,
)


@settings(max_examples=150, deadline=None)
@given(manifest=_json, status=st.sampled_from([200, 200, 200, 401, 404, 500]), file_status=st.sampled_from([200, 404]))
def test_any_manifest_fails_only_with_shl_errors(manifest: object, status: int, file_status: int) -> None:
    http = FakeHttp(
        {
            ("POST", MANIFEST_URL): HttpResponse(status=status, body=json.dumps(manifest).encode()),
            ("GET", "https://x.example/f"): HttpResponse(status=file_status, body=SHC_JWE),
        }
    )
    modes: tuple[Literal["raise", "collect"], ...] = ("raise", "collect")
    for mode in modes:
        outcome: ResolvedLink | ShlError
        try:
            outcome = resolve(_link(), recipient="EMS", http=http, on_file_error=mode)
        except ShlError as exc:
            outcome = exc
        if isinstance(outcome, ResolvedLink):
            assert all(f.plaintext == SHC_PLAIN for f in outcome.files)
            assert mode == "collect" or not outcome.failures
        else:
            assert outcome.message
            assert "\n" not in outcome.message
