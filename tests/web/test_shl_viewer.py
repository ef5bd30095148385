"""The responder viewer (`web/static/shl-viewer.js`, `templates/shl_viewer.html`) in a real browser.

A test-only Starlette app on 127.0.0.1 serves the viewer page under the viewer's CSP, the static files
and a SMART Health Links manifest endpoint backed by fixtures made with our own `shl.py`/`jwe.py`
from a Synthea-based summary (`summary.py`). Chromium (Debian's, via Playwright) opens links the way
a phone camera would, from the URL our QR code holds. Every request the server receives is logged
whole (path, query, headers, body) and checked never to contain a link's key.

The offline `emergency.html` from the flash-drive bundle is opened via file:// with the same browser.
"""

from __future__ import annotations

import json
import secrets
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from medvault.emergency import card, jwe, shl
from medvault.web.shl_viewer import VIEWER_HEADERS, render_viewer
from tests.emergency.card_support import (
    ALERT,
    ALLERGY,
    CONTACT,
    Summary,
    encrypt,
    needs_data,
    reyna_summary,
    zbar_decode,
)

CHROMIUM = Path("/usr/bin/chromium")
sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect

pytestmark = [
    needs_data,
    pytest.mark.skipif(not CHROMIUM.exists() and shutil.which("chromium") is None, reason="chromium not installed"),
]
RECIPIENT = "Paramedic, unit 12"
PASSCODE = "246810"
TIMEOUT_MS = 15_000


@dataclass
class FakeLink:
    token: str = field(repr=False)  # the JWE
    flags: str = ""
    passcode: str | None = None
    remaining: int = 3
    status: str = "active"
    embedded: bool = False
    stale_locations: int = 0  # hand out this many already-spent locations first


@dataclass
class FakeServer:
    base: str = ""
    links: dict[str, FakeLink] = field(default_factory=dict)
    locations: dict[str, str] = field(default_factory=dict)
    #: Every request as received: method, path, query string, headers and body, all as text.
    log: list[dict[str, str]] = field(default_factory=list)
    recipients: list[str] = field(default_factory=list)

    def add(self, link: FakeLink) -> str:
        manifest_id = secrets.token_urlsafe(32)
        self.links[manifest_id] = link
        return manifest_id

    def log_text(self) -> str:
        return json.dumps(self.log)


class _LogEverything:
    """Raw ASGI wrapper: logs each request line, headers and body before the app sees them."""

    def __init__(self, app: ASGIApp, server: FakeServer) -> None:
        self.app, self.server = app, server

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        entry = {
            "method": scope["method"],
            "path": scope["path"],
            "raw_path": scope.get("raw_path", b"").decode("latin-1"),
            "query": scope["query_string"].decode("latin-1"),
            "headers": "\n".join(f"{k.decode('latin-1')}: {v.decode('latin-1')}" for k, v in scope["headers"]),
            "body": "",
        }
        self.server.log.append(entry)

        async def logged_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                entry["body"] += message.get("body", b"").decode("latin-1")
            return message

        await self.app(scope, logged_receive, send)


def _app(server: FakeServer) -> ASGIApp:
    async def viewer(request: Request) -> Response:
        return HTMLResponse(render_viewer(), headers=VIEWER_HEADERS)

    async def manifest(request: Request) -> Response:
        link = server.links.get(request.path_params["mid"])
        if link is None or link.status != "active" or "U" in link.flags:
            return JSONResponse({}, status_code=404)
        body = await request.json()
        recipient = body.get("recipient") if isinstance(body, dict) else None
        if not isinstance(recipient, str) or not recipient:
            return JSONResponse({"error": "recipient required"}, status_code=400)
        if link.passcode is not None and body.get("passcode") != link.passcode:
            link.remaining -= 1
            if link.remaining <= 0:
                link.status = "spent"
            return JSONResponse({"remainingAttempts": link.remaining}, status_code=401)
        server.recipients.append(recipient)
        entry: dict[str, Any] = {"contentType": "application/fhir+json"}
        if link.embedded:
            entry["embedded"] = link.token
        else:
            location = secrets.token_urlsafe(32)
            if link.stale_locations > 0:
                link.stale_locations -= 1  # never registered: GET answers 404, as for a spent location
            else:
                server.locations[location] = link.token
            entry["location"] = f"{server.base}/shl/f/{location}"
        return JSONResponse({"files": [entry]})

    async def file(request: Request) -> Response:
        token = server.locations.pop(request.path_params["token"], None)  # single use
        if token is None:
            return Response(status_code=404)
        return Response(token, media_type="application/jose")

    async def direct(request: Request) -> Response:
        link = server.links.get(request.path_params["mid"])
        if link is None or link.status != "active" or "U" not in link.flags:
            return Response(status_code=404)
        server.recipients.append(request.query_params.get("recipient", ""))
        return Response(link.token, media_type="application/jose")

    app = Starlette(
        routes=[
            Route("/viewer", viewer),
            Route("/shl/view", viewer),
            Route("/shl/m/{mid}", manifest, methods=["POST"]),
            Route("/shl/m/{mid}", direct, methods=["GET"]),
            Route("/shl/f/{token}", file),
            Mount("/static", StaticFiles(packages=[("medvault.web", "static")])),
        ]
    )
    return _LogEverything(app, server)


@pytest.fixture(scope="module")
def server() -> Iterator[FakeServer]:
    fake = FakeServer()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    fake.base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    config = uvicorn.Config(_app(fake), log_level="warning", access_log=False, lifespan="off")
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not uv.started:  # uvicorn offers no event; poll its flag with a deadline
        assert thread.is_alive(), "test server failed to start"
        assert time.monotonic() < deadline, "test server did not start in 20 s"
        time.sleep(0.02)
    yield fake
    uv.should_exit = True
    thread.join(timeout=20)
    sock.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = str(CHROMIUM) if CHROMIUM.exists() else shutil.which("chromium")
    with sync_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=executable, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def summary() -> Summary:
    return reyna_summary()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context()
    pg = context.new_page()
    pg.set_default_timeout(TIMEOUT_MS)
    problems: list[str] = []
    # Any CSP violation or script error fails the test: the viewer must run under script-src 'self'.
    pg.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
    pg.on("pageerror", lambda exc: problems.append(str(exc)))
    pg.problems = problems
    yield pg
    context.close()


def _link(server: FakeServer, link: FakeLink, key: bytes, *, viewer: str = "/viewer", exp: int | None = None) -> str:
    mid = server.add(link)
    url = f"{server.base}/shl/m/{mid}"
    payload = shl.build_payload(url=url, key=key, flags=link.flags, exp=exp, label="Emergency card")
    return shl.to_viewer_link(payload, viewer_url=server.base + viewer)


def _assert_key_never_sent(server: FakeServer, key: bytes, link_text: str) -> None:
    log = server.log_text()
    assert server.log, "the test server logged nothing"
    assert shl.encode_key(key) not in log
    assert link_text.split("#", 1)[1] not in log  # nor the shlink payload that carries it
    assert "shlink" not in log


def _open(page: Any, link_text: str, *, recipient: str | None = RECIPIENT, passcode: str | None = None) -> None:
    page.goto(link_text)
    if recipient is not None:
        page.fill("#shl-recipient", recipient)
    if passcode is not None:
        page.fill("#shl-passcode", passcode)
    if recipient is not None or passcode is not None:
        page.click("#shl-start-form button[type=submit]")


def _assert_summary_shown(page: Any) -> None:
    alerts = page.locator("#shl-summary section.shl-alerts")
    expect(alerts).to_contain_text(ALERT)
    expect(page.locator("#shl-summary")).to_contain_text(ALLERGY)
    expect(page.locator("#shl-summary")).to_contain_text(CONTACT)
    # Alerts first, then allergies, problems, medications, contacts; the rest after.
    titles = page.locator("#shl-summary section.shl-section h2").all_text_contents()
    assert titles[:5] == [
        "Alerts",
        "Allergies and intolerances",
        "Active problems",
        "Medication summary",
        "Emergency contacts",
    ]
    assert "Immunizations" in titles[5:]


def test_qr_opens_the_viewer_which_decrypts_the_summary_and_never_sends_the_key(
    server: FakeServer, page: Any, summary: Summary, tmp_path: Path
) -> None:
    key = shl.new_key()
    link_text = _link(server, FakeLink(token=encrypt(summary, key, compress=True)), key)
    qr = tmp_path / "qr.png"
    qr.write_bytes(card.qr_png(link_text))
    scanned = zbar_decode(qr)  # what a phone camera would open
    assert scanned == link_text
    start = len(server.log)
    _open(page, scanned)
    _assert_summary_shown(page)
    expect(page.locator("#shl-start-form")).to_be_hidden()
    expect(page.locator(".shl-clinicians a")).to_have_attribute("href", "/break-glass")
    assert server.recipients[-1] == RECIPIENT
    requests = [
        (e["method"], e["path"].split("/")[2] if e["path"].startswith("/shl/") else e["path"])
        for e in server.log[start:]
    ]
    assert ("POST", "m") in requests  # the manifest
    assert ("GET", "f") in requests  # the file, from its location
    _assert_key_never_sent(server, key, link_text)
    assert page.problems == []


def test_a_remembered_recipient_opens_an_embedded_file_without_another_tap(
    server: FakeServer, page: Any, summary: Summary
) -> None:
    key1, key2 = shl.new_key(), shl.new_key()
    first = _link(server, FakeLink(token=encrypt(summary, key1)), key1)
    _open(page, first, recipient="Nurse, ward 3")
    _assert_summary_shown(page)
    # Same tab, another link (uncompressed, embedded in the manifest): no form to fill again.
    second = _link(
        server, FakeLink(token=encrypt(summary, key2, compress=False), embedded=True), key2, viewer="/shl/view"
    )
    _open(page, second, recipient=None)
    _assert_summary_shown(page)
    assert server.recipients[-2:] == ["Nurse, ward 3", "Nurse, ward 3"]
    _assert_key_never_sent(server, key1, first)
    _assert_key_never_sent(server, key2, second)
    assert page.problems == []


def test_a_wrong_passcode_shows_the_remaining_attempts_then_the_right_one_opens(
    server: FakeServer, page: Any, summary: Summary
) -> None:
    key = shl.new_key()
    link_text = _link(server, FakeLink(token=encrypt(summary, key), flags="P", passcode=PASSCODE), key)
    page.goto(link_text)
    expect(page.locator("#shl-passcode")).to_be_visible()
    page.fill("#shl-recipient", RECIPIENT)
    page.fill("#shl-passcode", "000000")
    page.click("#shl-start-form button[type=submit]")
    expect(page.locator("#shl-status")).to_have_text("Wrong passcode. 2 attempts remaining.")
    expect(page.locator("#shl-summary")).not_to_contain_text(ALERT)
    page.fill("#shl-passcode", PASSCODE)
    page.click("#shl-start-form button[type=submit]")
    _assert_summary_shown(page)
    _assert_key_never_sent(server, key, link_text)
    assert PASSCODE in server.log_text()  # the passcode is sent (in the POST body), the key is not
    # Chromium reports the 401 itself as a console error; nothing else may appear.
    assert [p for p in page.problems if "status of 401" not in p] == []


def test_a_spent_location_makes_the_viewer_ask_the_manifest_again(
    server: FakeServer, page: Any, summary: Summary
) -> None:
    key = shl.new_key()
    link_text = _link(server, FakeLink(token=encrypt(summary, key), stale_locations=1), key)
    start = len(server.log)
    _open(page, link_text)
    _assert_summary_shown(page)
    posts = [e for e in server.log[start:] if e["method"] == "POST"]
    files = [e for e in server.log[start:] if e["path"].startswith("/shl/f/")]
    assert (len(posts), len(files)) == (2, 2)
    expect(page.locator("button.shl-print")).to_be_visible()
    assert [p for p in page.problems if "status of 404" not in p] == []


def test_a_revoked_link_says_revoked_or_expired(server: FakeServer, page: Any, summary: Summary) -> None:
    key = shl.new_key()
    link_text = _link(server, FakeLink(token=encrypt(summary, key), status="revoked"), key)
    _open(page, link_text)
    expect(page.locator("#shl-status")).to_contain_text("revoked or has expired")
    expect(page.locator("#shl-summary")).to_be_empty()
    _assert_key_never_sent(server, key, link_text)


def test_an_expired_link_is_refused_before_any_request(server: FakeServer, page: Any, summary: Summary) -> None:
    key = shl.new_key()
    link_text = _link(server, FakeLink(token=encrypt(summary, key)), key, exp=int(time.time()) - 60)
    start = len(server.log)
    page.goto(link_text)
    expect(page.locator("#shl-status")).to_contain_text("revoked or has expired")
    expect(page.locator("#shl-start-form")).to_be_hidden()
    assert [e["path"] for e in server.log[start:] if e["path"].startswith("/shl/m/")] == []


def test_a_network_failure_is_said_plainly(server: FakeServer, page: Any, summary: Summary) -> None:
    key = shl.new_key()
    link_text = _link(server, FakeLink(token=encrypt(summary, key)), key)
    page.route("**/shl/m/**", lambda route: route.abort("internetdisconnected"))
    _open(page, link_text)
    expect(page.locator("#shl-status")).to_contain_text("Network failure")
    expect(page.locator("#shl-start-form")).to_be_visible()  # the responder can try again


def test_a_u_flag_link_is_fetched_directly_with_the_recipient(server: FakeServer, page: Any, summary: Summary) -> None:
    key = shl.new_key()
    link_text = _link(server, FakeLink(token=encrypt(summary, key), flags="U"), key)
    start = len(server.log)
    _open(page, link_text, recipient="Dr Example, A&E")
    _assert_summary_shown(page)
    gets = [e for e in server.log[start:] if e["path"].startswith("/shl/m/")]
    assert [e["method"] for e in gets] == ["GET"]
    assert parse_qs(gets[0]["query"], strict_parsing=True) == {"recipient": ["Dr Example, A&E"]}
    _assert_key_never_sent(server, key, link_text)


def test_narratives_are_rebuilt_as_text_so_nothing_in_a_summary_runs(server: FakeServer, page: Any) -> None:
    hostile = (
        '<div xmlns="http://www.w3.org/1999/xhtml"><b>Penicillin</b><img src="x" onerror="window.pwned=1"/>'
        '<script>window.pwned=2</script><a href="javascript:window.pwned=3">click</a>'
        '<table><tr><td onclick="window.pwned=4">Latex</td></tr></table></div>'
    )
    bundle = {
        "resourceType": "Bundle",
        "type": "document",
        "entry": [
            {
                "fullUrl": "urn:uuid:c",
                "resource": {
                    "resourceType": "Composition",
                    "section": [
                        {
                            "title": "Allergies and intolerances",
                            "code": {"coding": [{"system": "http://loinc.org", "code": "48765-2"}]},
                            "text": {"status": "generated", "div": hostile},
                        }
                    ],
                },
            }
        ],
    }
    key = shl.new_key()
    token = shl_token(bundle, key)
    _open(page, _link(server, FakeLink(token=token), key))
    summary_node = page.locator("#shl-summary")
    expect(summary_node).to_contain_text("Penicillin")
    expect(summary_node).to_contain_text("Latex")
    assert summary_node.locator("img, script, a, [onclick], [onerror]").count() == 0
    assert page.evaluate("window.pwned") is None


def shl_token(bundle: dict[str, Any], key: bytes) -> str:
    return jwe.encrypt_file(plaintext=json.dumps(bundle).encode(), key=key, content_type="application/fhir+json")


# ---- the offline page from the flash-drive bundle ---------------------------------------------------


def _write_bundle(tmp_path: Path, summary: Summary) -> tuple[Path, str, bytes]:
    key = shl.new_key()
    payload = shl.build_payload(url="https://medvault.example.org/shl/m/" + "A" * 43, key=key, label="Emergency card")
    link_text = shl.to_viewer_link(payload, viewer_url="https://medvault.example.org/shl/view")
    for f in card.flash_drive_bundle(link_text=link_text, summary_jwe=encrypt(summary, key)):
        (tmp_path / f.name).write_bytes(f.content)
    return tmp_path / card.HTML_FILE, link_text, key


@pytest.mark.parametrize("what", ["key", "link"])
def test_the_offline_page_decrypts_when_given_the_key_or_the_link(
    page: Any, summary: Summary, tmp_path: Path, what: str
) -> None:
    html_file, link_text, key = _write_bundle(tmp_path, summary)
    requests: list[str] = []
    page.on("request", lambda req: requests.append(req.url))
    page.goto(html_file.as_uri())
    expect(page.locator("#shl-summary")).to_be_empty()
    page.fill("#shl-key", shl.encode_key(key) if what == "key" else link_text)
    page.click("#shl-key-form button[type=submit]")
    _assert_summary_shown(page)
    assert page.input_value("#shl-key") == ""  # the key does not linger in the form
    assert requests == [html_file.as_uri()]  # nothing but the page itself: no network at all
    assert page.problems == []


def test_the_offline_page_says_so_when_the_key_is_wrong(page: Any, summary: Summary, tmp_path: Path) -> None:
    html_file, _, _ = _write_bundle(tmp_path, summary)
    page.goto(html_file.as_uri())
    page.fill("#shl-key", shl.encode_key(shl.new_key()))
    page.click("#shl-key-form button[type=submit]")
    expect(page.locator("#shl-status")).to_contain_text("key does not match")
    expect(page.locator("#shl-summary")).to_be_empty()
    page.fill("#shl-key", "not a key")
    page.click("#shl-key-form button[type=submit]")
    expect(page.locator("#shl-status")).to_contain_text("not an emergency link")


SPEC_VECTORS = (
    Path(__file__).resolve().parents[2].parent / "shared" / "data" / "smart-health-links" / "hl7-spec-vectors"
)


@pytest.mark.skipif(not SPEC_VECTORS.is_dir(), reason="shared SHL spec vectors not present")
def test_the_browser_decryptor_opens_the_specs_own_ips_vector(page: Any, tmp_path: Path) -> None:
    # An independent encryptor (the HL7 spec's 81 KB IPS file, no cty, an extra kid) checks our
    # WebCrypto path, and an IPS Bundle made elsewhere checks the renderer and the section order.
    details = json.loads((SPEC_VECTORS / "IPS_IG-bundle-01-shl-details.json").read_bytes())
    token = (SPEC_VECTORS / "IPS_IG-bundle-01-enc.txt").read_text(encoding="ascii")
    html_file = tmp_path / card.HTML_FILE
    html_file.write_text(card.offline_page(summary_jwe=token, title="Spec IPS vector"), encoding="utf-8")
    page.goto(html_file.as_uri())
    page.fill("#shl-key", details["shlinkBare"])
    page.click("#shl-key-form button[type=submit]")
    summary_node = page.locator("#shl-summary")
    expect(summary_node).to_contain_text("Allergy to penicillin, high criticality")
    expect(summary_node).to_contain_text("Hot flushes")
    titles = summary_node.locator("section.shl-section h2").all_text_contents()
    assert titles[:3] == ["Allergies and Intolerances", "Active Problems", "Medication"]
    assert page.problems == []
