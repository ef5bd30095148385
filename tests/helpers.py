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
