"""Our own SMART Health Links *reader* (receiving application): payload → manifest → decrypted files.

Used by the tests against our server and by the CLI. HTTP goes through an injectable function so tests
serve fixtures without a network; `urllib_http` is the default (stdlib, no redirects, capped reads).

Protocol (SHL v1.0.0): a `U` link is one `GET url?recipient=` of the encrypted file; otherwise `POST url`
with `{recipient, passcode?, embeddedLengthMax?}` returns a manifest whose files are `embedded` JWEs or
short-lived `location` URLs to GET. `401 {"remainingAttempts": n}` is a wrong passcode, `404` a link
that is expired, revoked or spent. When a `location` fails, the manifest is fetched once more for fresh
locations (the spec: receivers SHALL be able to re-fetch).

Files that fail (bad JWE, unreachable location, type mismatch) raise by default; with
`on_file_error="collect"` the good files are returned together with the list of failures, so a
responder still sees what could be read.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlencode

from medvault.emergency import jwe
from medvault.emergency.errors import (
    ShlError,
    ShlPasscodeError,
    ShlPasscodeRequired,
    ShlPayloadError,
    ShlProtocolError,
    ShlTooLarge,
    ShlUnavailable,
    ShlVersionUnsupported,
)
from medvault.emergency.shl import SUPPORTED_VERSION, ShlPayload, check_url, parse_shlink

MAX_RECIPIENT_CHARS = 256
MAX_PASSCODE_CHARS = 256
Source = Literal["direct", "embedded", "location"]


@dataclass(frozen=True)
class HttpRequest:
    method: Literal["GET", "POST"]
    url: str
    headers: Mapping[str, str]
    body: bytes | None = field(default=None, repr=False)  # holds the passcode
    max_response_bytes: int = 1024 * 1024
    timeout_seconds: float = 10.0


@dataclass(frozen=True)
class HttpResponse:
    status: int
    body: bytes = field(default=b"", repr=False)
    headers: Mapping[str, str] = field(default_factory=dict)  # names lower-case


HttpFn = Callable[[HttpRequest], HttpResponse]


@dataclass(frozen=True)
class ReaderLimits:
    max_manifest_bytes: int = 1024 * 1024
    max_files: int = 64
    max_jwe_chars: int = jwe.MAX_JWE_CHARS
    max_plaintext_bytes: int = jwe.MAX_PLAINTEXT_BYTES
    timeout_seconds: float = 10.0


@dataclass(frozen=True)
class ResolvedFile:
    content_type: str
    plaintext: bytes = field(repr=False)  # PHI
    source: Source = "embedded"
    cty: str | None = None  # as sent in the JWE header (None: absent)
    last_updated: str | None = None
    status: str | None = None
    fhir_version: str | None = None

    def json(self) -> Any:
        try:
            return json.loads(self.plaintext)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            raise ShlProtocolError(f"a {self.content_type} file is not JSON") from None


@dataclass(frozen=True)
class FileFailure:
    index: int  # position in the manifest's `files`
    content_type: str | None
    error: ShlError


@dataclass(frozen=True)
class ResolvedLink:
    payload: ShlPayload
    files: tuple[ResolvedFile, ...]
    failures: tuple[FileFailure, ...] = ()


def resolve(
    link: str | ShlPayload,
    *,
    recipient: str,
    passcode: str | None = None,
    http: HttpFn | None = None,
    embedded_length_max: int | None = None,
    on_file_error: Literal["raise", "collect"] = "raise",
    limits: ReaderLimits | None = None,
    now: Callable[[], float] = time.time,
) -> ResolvedLink:
    """Resolve a SMART Health Link and decrypt its files. See the module docstring for the protocol."""
    payload = parse_shlink(link) if isinstance(link, str) else link
    limits = limits or ReaderLimits()
    send = http or urllib_http
    _check_text(recipient, what="recipient", max_chars=MAX_RECIPIENT_CHARS)
    if payload.version > SUPPORTED_VERSION:
        raise ShlVersionUnsupported(
            f"link uses SHL version {payload.version}; this reader supports {SUPPORTED_VERSION}"
        )
    if payload.exp is not None and payload.exp <= now():
        raise ShlUnavailable("link has expired (its exp has passed)")
    if payload.direct_file:
        return ResolvedLink(payload=payload, files=(_resolve_direct(payload, recipient, send, limits),))
    if payload.passcode_required:
        if passcode is None:
            raise ShlPasscodeRequired("link needs a passcode (P flag)")
        _check_text(passcode, what="passcode", max_chars=MAX_PASSCODE_CHARS)
    if embedded_length_max is not None and (isinstance(embedded_length_max, bool) or embedded_length_max < 0):
        raise ShlPayloadError("embeddedLengthMax must be a non-negative integer")
    body: dict[str, Any] = {"recipient": recipient}
    if payload.passcode_required:
        body["passcode"] = passcode
    if embedded_length_max is not None:
        body["embeddedLengthMax"] = embedded_length_max

    def fetch_manifest() -> list[dict[str, Any]]:
        return _fetch_manifest(payload.url, body, send, limits)

    entries = fetch_manifest()
    refetched = False
    files: list[ResolvedFile] = []
    failures: list[FileFailure] = []
    for index in range(len(entries)):
        entry = entries[index]
        try:
            try:
                files.append(_resolve_entry(entry, payload, send, limits))
            except _LocationFailed:
                if refetched:
                    raise ShlProtocolError(f"file {index}: location failed after re-fetching the manifest") from None
                # Locations are short-lived and may be single-use: ask for fresh ones, once.
                entries = fetch_manifest()
                refetched = True
                if index >= len(entries) or entries[index].get("contentType") != entry.get("contentType"):
                    raise ShlProtocolError(f"file {index}: manifest changed while reading it") from None
                entry = entries[index]
                files.append(_resolve_entry(entry, payload, send, limits))
        except _LocationFailed as exc:
            failure: ShlError = ShlProtocolError(f"file {index}: location answered HTTP {exc.status}")
            if on_file_error == "raise":
                raise failure from None
            failures.append(FileFailure(index=index, content_type=_content_type_or_none(entry), error=failure))
        except (ShlUnavailable, ShlPasscodeError):
            raise  # the link itself went away mid-read: not one file's problem
        except ShlError as exc:
            if on_file_error == "raise":
                raise type(exc)(f"file {index}: {exc.message}") from None
            failures.append(FileFailure(index=index, content_type=_content_type_or_none(entry), error=exc))
    return ResolvedLink(payload=payload, files=tuple(files), failures=tuple(failures))


class _LocationFailed(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


def _resolve_direct(payload: ShlPayload, recipient: str, send: HttpFn, limits: ReaderLimits) -> ResolvedFile:
    sep = "&" if "?" in payload.url else "?"
    url = payload.url + sep + urlencode({"recipient": recipient})
    response = send(_get(url, limits))
    if response.status == 404:
        raise ShlUnavailable("link is expired, revoked or no longer active (HTTP 404)")
    if response.status != 200:
        raise ShlProtocolError(f"file request answered HTTP {response.status}")
    decrypted = _decrypt(response.body, payload, limits)
    content_type = decrypted.content_type or _guess_content_type(decrypted.plaintext)
    return ResolvedFile(
        content_type=content_type, plaintext=decrypted.plaintext, source="direct", cty=decrypted.content_type
    )


def _fetch_manifest(url: str, body: Mapping[str, Any], send: HttpFn, limits: ReaderLimits) -> list[dict[str, Any]]:
    request = HttpRequest(
        method="POST",
        url=url,
        headers={"content-type": "application/json", "accept": "application/json"},
        body=json.dumps(body, separators=(",", ":")).encode(),
        max_response_bytes=limits.max_manifest_bytes,
        timeout_seconds=limits.timeout_seconds,
    )
    response = send(request)
    if len(response.body) > limits.max_manifest_bytes:
        raise ShlTooLarge(f"manifest is larger than {limits.max_manifest_bytes} bytes")
    if response.status == 401:
        raise ShlPasscodeError("passcode refused (HTTP 401)", remaining_attempts=_remaining_attempts(response.body))
    if response.status == 404:
        raise ShlUnavailable("link is expired, revoked or no longer active (HTTP 404)")
    if response.status == 429:
        raise ShlProtocolError("server asks to wait before the next manifest request (HTTP 429)")
    if response.status != 200:
        raise ShlProtocolError(f"manifest request answered HTTP {response.status}")
    try:
        manifest = json.loads(response.body)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise ShlProtocolError("manifest is not JSON") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), list):
        raise ShlProtocolError("manifest must be a JSON object with a 'files' array")
    files: list[dict[str, Any]] = manifest["files"]
    if not files:
        raise ShlProtocolError("manifest lists no files")
    if len(files) > limits.max_files:
        raise ShlTooLarge(f"manifest lists more than {limits.max_files} files")
    if not all(isinstance(f, dict) for f in files):
        raise ShlProtocolError("manifest 'files' entries must be JSON objects")
    return files


def _resolve_entry(entry: Mapping[str, Any], payload: ShlPayload, send: HttpFn, limits: ReaderLimits) -> ResolvedFile:
    content_type = entry.get("contentType")
    if not isinstance(content_type, str) or not content_type:
        raise ShlProtocolError("manifest entry has no contentType")
    embedded = entry.get("embedded")
    location = entry.get("location")
    source: Source
    # `embedded` wins when both are present: the spec says it is up to date as of the manifest request.
    if embedded is not None:
        if not isinstance(embedded, str):
            raise ShlProtocolError("manifest entry 'embedded' must be a string")
        token: bytes | str = embedded
        source = "embedded"
    elif location is not None:
        if not isinstance(location, str):
            raise ShlProtocolError("manifest entry 'location' must be a string")
        try:
            check_url(location, what="manifest 'location'")
        except ShlPayloadError as exc:
            raise ShlProtocolError(exc.message) from None
        response = send(_get(location, limits))
        if response.status != 200:
            raise _LocationFailed(response.status)
        token = response.body
        source = "location"
    else:
        raise ShlProtocolError("manifest entry has neither 'embedded' nor 'location'")
    decrypted = _decrypt(token, payload, limits)
    if decrypted.content_type is not None and decrypted.content_type != content_type:
        raise ShlProtocolError("JWE cty contradicts the manifest's contentType")

    def opt(name: str) -> str | None:
        value = entry.get(name)
        return value if isinstance(value, str) else None

    return ResolvedFile(
        content_type=content_type,
        plaintext=decrypted.plaintext,
        source=source,
        cty=decrypted.content_type,
        last_updated=opt("lastUpdated"),
        status=opt("status"),
        fhir_version=opt("fhirVersion"),
    )


def _decrypt(token: bytes | str, payload: ShlPayload, limits: ReaderLimits) -> jwe.DecryptedFile:
    return jwe.decrypt_file(
        token=token,
        key=payload.key_bytes,
        max_jwe_chars=limits.max_jwe_chars,
        max_plaintext_bytes=limits.max_plaintext_bytes,
    )


def _get(url: str, limits: ReaderLimits) -> HttpRequest:
    return HttpRequest(
        method="GET",
        url=url,
        headers={"accept": "application/jose"},
        max_response_bytes=limits.max_jwe_chars,
        timeout_seconds=limits.timeout_seconds,
    )


def _guess_content_type(plaintext: bytes) -> str:
    """A `U` file without `cty` (the spec's IPS vector): tell FHIR from a Health Card by its JSON shape."""
    try:
        obj = json.loads(plaintext)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise ShlProtocolError("file has no cty and is not JSON") from None
    if isinstance(obj, dict) and isinstance(obj.get("resourceType"), str):
        return "application/fhir+json"
    if isinstance(obj, dict) and isinstance(obj.get("verifiableCredential"), list):
        return "application/smart-health-card"
    if isinstance(obj, dict) and isinstance(obj.get("access_token"), str):
        return "application/smart-api-access"
    raise ShlProtocolError("file has no cty and its JSON is not a known SHL content type")


def _remaining_attempts(body: bytes) -> int | None:
    try:
        obj = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return None
    value = obj.get("remainingAttempts") if isinstance(obj, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _content_type_or_none(entry: Mapping[str, Any]) -> str | None:
    value = entry.get("contentType")
    return value if isinstance(value, str) else None


def _check_text(value: object, *, what: str, max_chars: int) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ShlPayloadError(f"{what} is required")
    if len(value) > max_chars:
        raise ShlPayloadError(f"{what} is longer than {max_chars} characters")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise ShlPayloadError(f"{what} must not contain control characters")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # A redirect could point a location at another host or scheme; the protocol has no use for one.
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def urllib_http(request: HttpRequest) -> HttpResponse:
    """Default transport: stdlib urllib, http(s) only (https except loopback), no redirects, capped reads."""
    try:
        check_url(request.url, what="request URL")
    except ShlPayloadError as exc:
        raise ShlProtocolError(exc.message) from None
    req = urllib.request.Request(  # noqa: S310 - scheme checked above: https, or http to loopback only
        request.url, data=request.body, method=request.method, headers=dict(request.headers)
    )
    try:
        with _OPENER.open(req, timeout=request.timeout_seconds) as resp:
            body = resp.read(request.max_response_bytes + 1)
            status = resp.status
            headers = {k.lower(): v for k, v in resp.headers.items()}
    except urllib.error.HTTPError as exc:
        body = exc.read(request.max_response_bytes + 1)
        status = exc.code
        headers = {k.lower(): v for k, v in exc.headers.items()}
        exc.close()
    except (urllib.error.URLError, OSError, ValueError):
        # The reason may quote the URL, which carries a manifest id: keep it out of the message.
        raise ShlProtocolError("could not reach the link's server") from None
    if len(body) > request.max_response_bytes:
        raise ShlTooLarge(f"response is larger than {request.max_response_bytes} bytes")
    return HttpResponse(status=status, body=body, headers=headers)
