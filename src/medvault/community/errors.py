"""Community errors. Messages name the field or limit at fault and never echo what was written."""

from __future__ import annotations

from medvault.errors import MedvaultError


class CommunityError(MedvaultError):
    """Base class of every community error (a 400-class problem with the request)."""

    code = "invalid"


class NotFound(CommunityError):
    """The item does not exist *or the caller may not see it*: both answer the same, so that a
    refusal never confirms that hidden content exists."""

    code = "not-found"


class Forbidden(CommunityError):
    """The caller is known and may see the item but may not do this to it (edit another's post)."""

    code = "forbidden"


class RateLimited(CommunityError):
    """Too many views or actions in the current window; `retry_after` is in seconds."""

    code = "throttled"

    def __init__(self, message: str, *, retry_after: int, location: str | None = None) -> None:
        super().__init__(message, location=location)
        self.retry_after = retry_after
