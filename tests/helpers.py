"""Small test helpers shared by several test modules."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from medvault.db import unit_of_work
from medvault.records.guard import Caller
from medvault.records.vault import Vault

# Storage tests act as the operator (allowed everything, still audited); tests/records/test_guard.py
# covers what other actors may do.
OPERATOR = Caller(actor=None, via="cli")

FHIR = "application/fhir+json"


@contextmanager
def open_vault(env: Any) -> Iterator[Vault]:
    with unit_of_work(env.factory) as session:
        yield Vault(session, env.crypto, caller=OPERATOR)


def strip_server_fields(doc: dict[str, Any]) -> dict[str, Any]:
    """Drop what the server assigns (meta.versionId/lastUpdated) for round-trip comparisons."""
    out = dict(doc)
    meta = dict(out.get("meta") or {})
    meta.pop("versionId", None)
    meta.pop("lastUpdated", None)
    if meta:
        out["meta"] = meta
    else:
        out.pop("meta", None)
    return out


def post_streamed(
    app: Any, path: str, *, headers: dict[str, str], chunk: int, chunks: int, content_length: int | None
) -> tuple[int, int]:
    """POST `chunks` chunks of `chunk` bytes straight into an ASGI app (a TestClient would read the
    whole body first); returns (status, chunks the app read)."""
    import anyio

    read = 0
    status: list[int] = []

    async def receive() -> dict[str, Any]:
        nonlocal read
        if read >= chunks:
            return {"type": "http.request", "body": b"", "more_body": False}
        read += 1
        return {"type": "http.request", "body": b"a" * chunk, "more_body": read < chunks}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status.append(int(message["status"]))

    raw = [(b"host", b"testserver"), *((k.lower().encode(), v.encode()) for k, v in headers.items())]
    if content_length is not None:
        raw.append((b"content-length", str(content_length).encode()))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "https",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": raw,
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 443),
    }
    anyio.run(app, scope, receive, send)
    return status[0], read
