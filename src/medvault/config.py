"""One settings object; refuses unsafe values (STYLE.md rule 8)."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from medvault.errors import ConfigError

# Roles that may be configured as break-glass eligible: only those that treat. An empty setting
# turns break-the-glass off; a privacy officer is never eligible (they review the accesses).
BREAK_GLASS_ELIGIBLE = frozenset({"clinician"})


class Settings(BaseSettings):
    """Runtime configuration, from `MEDVAULT_*` environment variables or CLI options."""

    model_config = SettingsConfigDict(env_prefix="MEDVAULT_", extra="ignore")

    data_dir: Path = Field(default=Path("./medvault-data"))
    database_url: str | None = None
    key_dir: Path | None = None
    environment: Literal["production", "development", "benchmark"] = "production"
    # Benchmark-only: lets bench/ measure the cost of encryption on the same code path.
    # Refused in every other environment (see the validator below).
    unsafe_disable_encryption: bool = False
    # Benchmark-only: lets bench/bench_audit.py measure what the access log costs a request.
    unsafe_disable_audit: bool = False
    # Breach detection: a clinician reading more distinct patients an hour than this raises an alert.
    alert_patients_per_hour: int = Field(default=50, ge=1, le=100_000)
    # Planned number of patients: sizes the truncated blind indexes at `medvault init`.
    expected_patients: int = Field(default=1000, ge=1, le=1_000_000_000)
    # Break-the-glass (design-emergency.md): how long an emergency access lasts, and which roles may
    # ask for one (empty: switched off). Other roles can never be made eligible (validator below).
    break_glass_hours: int = Field(default=4, ge=1, le=24)
    break_glass_roles: tuple[str, ...] = ("clinician",)
    # Community scraping guard (design-community.md): views per hour, per account and per client
    # address (a 429 with Retry-After past them), and the number of distinct profiles and posts one
    # account may read in an hour before the privacy officer gets an alert.
    community_profile_views_per_hour: int = Field(default=120, ge=1, le=1_000_000)
    community_profile_views_per_hour_address: int = Field(default=600, ge=1, le=1_000_000)
    community_listing_pages_per_hour: int = Field(default=600, ge=1, le=1_000_000)
    community_listing_pages_per_hour_address: int = Field(default=600, ge=1, le=1_000_000)
    community_alert_reads_per_hour: int = Field(default=200, ge=1, le=1_000_000)

    @model_validator(mode="after")
    def _refuse_unsafe(self) -> Settings:
        if self.unsafe_disable_encryption and self.environment != "benchmark":
            raise ConfigError(
                "MEDVAULT_UNSAFE_DISABLE_ENCRYPTION is a benchmark-only switch; "
                "it is refused unless MEDVAULT_ENVIRONMENT=benchmark"
            )
        if self.unsafe_disable_audit and self.environment != "benchmark":
            raise ConfigError(
                "MEDVAULT_UNSAFE_DISABLE_AUDIT is a benchmark-only switch; "
                "it is refused unless MEDVAULT_ENVIRONMENT=benchmark"
            )
        refused = set(self.break_glass_roles) - BREAK_GLASS_ELIGIBLE
        if refused:
            raise ConfigError(
                "MEDVAULT_BREAK_GLASS_ROLES may name only "
                + ", ".join(sorted(BREAK_GLASS_ELIGIBLE))
                + " (patients, researchers, privacy officers and admins never get emergency access)"
            )
        return self

    @cached_property
    def keys_path(self) -> Path:
        return (self.key_dir or (self.data_dir / "keys")).resolve()

    @cached_property
    def log_path(self) -> Path:
        return (self.data_dir / "logs").resolve()

    @cached_property
    def token_path(self) -> Path:
        return (self.data_dir / "operator-token").resolve()

    @cached_property
    def sqlalchemy_url(self) -> str:
        if self.database_url:
            url = self.database_url
            # Accept the libpq-style URL operators paste and use psycopg 3 for it.
            if url.startswith("postgresql://") or url.startswith("postgres://"):
                url = "postgresql+psycopg://" + url.split("://", 1)[1]
            return url
        return f"sqlite:///{(self.data_dir / 'medvault.db').resolve()}"

    @property
    def is_sqlite(self) -> bool:
        return self.sqlalchemy_url.startswith("sqlite")


def load_settings(**overrides: object) -> Settings:
    """Build settings from the environment, with CLI options taking precedence."""
    clean = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**clean)  # type: ignore[arg-type]
    except ConfigError:
        raise
    except ValueError as exc:
        # pydantic wraps our ConfigError in a ValidationError; surface the one readable line.
        cause = exc.__cause__ or exc
        raise ConfigError(f"invalid configuration: {_first_line(cause)}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    for line in text:
        if "MEDVAULT_" in line or "benchmark" in line:
            return line.strip()
    return text[0] if text else exc.__class__.__name__
