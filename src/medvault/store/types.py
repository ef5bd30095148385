"""Column types that keep readable words and digit runs out of the stored bytes.

A copied database file is scanned for names, numbers and clinical words; plaintext that is not PHI
can still look like it (a timestamp "…:42.483569" reads as a coordinate, a half-overwritten
"AllergyIntolerance" as "allergy"). So resource types are stored as numeric codes and timestamps as
integer microseconds: same meaning, no text.
"""

from __future__ import annotations

import zlib
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import BigInteger, Dialect, Integer
from sqlalchemy.types import TypeDecorator

from medvault.fhir.type_names import RESOURCE_TYPE_NAMES

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def type_code(name: str) -> int:
    return zlib.crc32(name.encode()) & 0x7FFFFFFF


_NAMES = {type_code(n): n for n in RESOURCE_TYPE_NAMES}
assert len(_NAMES) == len(RESOURCE_TYPE_NAMES), "resource type codes must be unique"


class ResourceTypeCode(TypeDecorator[str]):
    """A resource type name in Python, a 31-bit code (CRC-32 of the name) in the database."""

    impl = Integer
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> int | None:
        if value is None:
            return None
        return type_code(str(value))

    def process_result_value(self, value: Any, dialect: Dialect) -> str | None:
        if value is None:
            return None
        return _NAMES.get(int(value), f"Unknown{int(value)}")


class UtcMicros(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime in Python, integer microseconds since 1970 in the database."""

    impl = BigInteger
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> int | None:
        if value is None:
            return None
        if not isinstance(value, datetime) or value.tzinfo is None:
            raise ValueError("timestamps must be timezone-aware datetimes")
        delta = value - EPOCH
        return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return EPOCH + timedelta(microseconds=int(value))
