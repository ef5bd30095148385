"""Request bodies for every face (API, OAuth endpoints, pages): read only up to a limit, and
urlencoded forms parsed one way. Starlette's `request.body()` buffers whatever a client sends
before anyone can look at its size, which is a memory exhaustion open to anyone, signed in or not."""

from __future__ import annotations

from urllib.parse import parse_qsl

from starlette.requests import Request

FORM = "application/x-www-form-urlencoded"


class BodyRefused(Exception):
    """A body we will not read: the HTTP status and a message that quotes none of it."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


async def read_capped(request: Request, limit: int) -> bytes | None:
    """The body, or None when it is over `limit` bytes: a declared Content-Length over the limit is
    refused unread, an undeclared length is read only until it passes the limit."""
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and (len(declared) > 18 or int(declared) > limit):
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


async def read_form(request: Request, limit: int) -> list[tuple[str, str]]:
    """An urlencoded form's fields in order (repeated names kept), or BodyRefused."""
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != FORM:
        raise BodyRefused(415, f"forms are sent as {FORM}")
    raw = await read_capped(request, limit)
    if raw is None:
        raise BodyRefused(413, "form too large")
    try:
        return parse_qsl(raw.decode(), keep_blank_values=True)
    except UnicodeDecodeError:
        raise BodyRefused(400, "form is not UTF-8") from None
