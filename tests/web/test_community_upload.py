"""The picture upload (review finding H1): the session and the origin are checked before the body
is read, and the multipart body is parsed by python-multipart in a worker thread with caps on
parts, header lines and header length; anything else is a 4xx. Both backends."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator
from typing import Any

import pytest
from PIL import Image

from medvault.web import community_pages, pages
from tests.web.community_support import ORIGIN, Site, site

BOUNDARY = "b0undary"
CT = f"multipart/form-data; boundary={BOUNDARY}"


@pytest.fixture
def csite(vault_env: Any) -> Iterator[Site]:
    yield from site(vault_env)


@pytest.fixture
def parsed(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Every multipart parse of the picture route: True when it ran on an event loop."""
    calls: list[bool] = []
    real = community_pages._multipart

    def spy(raw: bytes, content_type: str) -> dict[str, bytes]:
        try:
            asyncio.get_running_loop()
            calls.append(True)
        except RuntimeError:
            calls.append(False)
        return real(raw, content_type)

    monkeypatch.setattr(community_pages, "_multipart", spy)
    return calls


def _folded(lines: int) -> bytes:
    # The review's probe: one Content-Disposition folded over many lines (~90 us each in the
    # stdlib email parser, on the event loop, before authentication).
    return (
        f"--{BOUNDARY}\r\nContent-Disposition: form-data;".encode()
        + b"\r\n a=b;" * lines
        + f'name="x"\r\n\r\ny\r\n--{BOUNDARY}--\r\n'.encode()
    )


def _form(csrf: str, picture: bytes) -> bytes:
    return (
        (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="csrf"\r\n\r\n{csrf}\r\n'
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="picture"; filename="a.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + picture
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )


def _png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (40, 30), (1, 2, 3)).save(out, format="PNG")
    return out.getvalue()


def test_a_stranger_upload_is_refused_before_its_body_is_parsed(csite: Site, parsed: list[bool]) -> None:
    body = _folded(50_000)
    anonymous = csite.client.post(
        "/community/me/picture", content=body, headers={"Content-Type": CT, "Origin": ORIGIN}, follow_redirects=False
    )
    assert anonymous.status_code == 303  # to sign-in
    assert anonymous.headers["location"].startswith("/login")
    signed_in_elsewhere = csite.client.post(
        "/community/me/picture",
        content=body,
        headers={"Content-Type": CT, "Origin": "https://evil.example", **csite.people["author"].headers},
        follow_redirects=False,
    )
    assert signed_in_elsewhere.status_code == 403
    not_a_member = csite.client.post(
        "/community/me/picture",
        content=body,
        headers={"Content-Type": CT, "Origin": ORIGIN, **csite.people["admin"].headers},
        follow_redirects=False,
    )
    assert not_a_member.status_code == 403
    assert parsed == []


def test_a_members_upload_is_parsed_off_the_event_loop_and_hostile_shapes_are_400(
    csite: Site, parsed: list[bool]
) -> None:
    author = csite.people["author"]
    headers = {"Content-Type": CT, "Origin": ORIGIN, **author.headers}
    ok = csite.client.post(
        "/community/me/picture", content=_form(author.csrf, _png()), headers=headers, follow_redirects=False
    )
    assert ok.status_code == 303, ok.text
    assert csite.get(f"/community/members/{author.member_id}/picture", "author").status_code == 200
    folded = csite.client.post("/community/me/picture", content=_folded(50_000), headers=headers)
    assert folded.status_code == 400
    assert parsed == [False, False]  # both parsed, neither on the event loop
    too_big = csite.client.post(
        "/community/me/picture", content=b"x" * (3 * 1024 * 1024), headers=headers, follow_redirects=False
    )
    assert too_big.status_code == 413


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(_folded(3), id="folded header"),
        pytest.param(f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="x"\r\n\r\ny\r\n'.encode() * 5, id="parts"),
        pytest.param(f"--{BOUNDARY}\r\n".encode() + b"X: y\r\n" * 20 + b"\r\ny\r\n", id="header lines"),
        pytest.param(
            f"--{BOUNDARY}\r\nContent-Disposition: form-data; name={'a' * 5000}\r\n\r\ny\r\n".encode(),
            id="long header",
        ),
        pytest.param(b"not multipart at all", id="garbage"),
    ],
)
def test_hostile_multipart_shapes_are_refused(body: bytes) -> None:
    with pytest.raises(pages.PageRefused) as refused:
        community_pages._multipart(body, CT)
    assert refused.value.status == 400


def test_the_parser_reads_a_browser_form() -> None:
    parts = community_pages._multipart(_form("tok", b"\x00\x01binary\r\n--not-the-boundary"), CT)
    assert parts == {"csrf": b"tok", "picture": b"\x00\x01binary\r\n--not-the-boundary"}
    with pytest.raises(pages.PageRefused):
        community_pages._multipart(_form("tok", b"x"), "multipart/form-data")  # no boundary


def test_a_picture_with_a_corrupt_exif_block_is_400_not_500(csite: Site) -> None:
    # Review finding L1: ImageOps.exif_transpose raised SyntaxError ("not a TIFF file").
    corrupt = io.BytesIO()
    not_tiff = b"\x99M\x00*\x00\x00\x00\x08\x00\x01\x01\x12\x00\x03\x00\x00\x00\x01\x00\x06\x00\x00\x00\x00\x00\x00"
    Image.new("RGB", (64, 48), (200, 10, 10)).save(corrupt, format="WEBP", exif=not_tiff)
    author = csite.people["author"]
    refused = csite.client.post(
        "/community/me/picture",
        content=_form(author.csrf, corrupt.getvalue()),
        headers={"Content-Type": CT, "Origin": ORIGIN, **author.headers},
        follow_redirects=False,
    )
    assert refused.status_code == 400
    assert "not a PNG, JPEG or WebP image" in refused.text


def test_picture_uploads_are_limited_per_account_failed_ones_included(
    csite: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Review finding L2: no upload rate limit on a costly decode.
    from medvault.community import limits, profiles

    monkeypatch.setattr(profiles, "UPLOADS", limits.Limit("avatar-upload", 2, 3600))
    author = csite.people["author"]
    headers = {"Content-Type": CT, "Origin": ORIGIN, **author.headers}

    def upload(picture: bytes) -> Any:
        return csite.client.post(
            "/community/me/picture", content=_form(author.csrf, picture), headers=headers, follow_redirects=False
        )

    assert upload(b"GIF89a" + bytes(64)).status_code == 400  # not decodable: counted all the same
    assert upload(_png()).status_code == 303
    limited = upload(_png())
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) > 0
    other = csite.people["member"]
    theirs = csite.client.post(
        "/community/me/picture",
        content=_form(other.csrf, _png()),
        headers={"Content-Type": CT, "Origin": ORIGIN, **other.headers},
        follow_redirects=False,
    )
    assert theirs.status_code == 303  # per account
