"""The OpenID Connect id_token signing key (RS256, as SMART requires), kept in the key directory
next to the KEKs, and the JWKS that publishes its public half. JOSE via joserfc."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import orjson
from joserfc import jwk, jwt

from medvault.errors import MedvaultError

KEY_FILE: Final = "smart-idtoken.jwk"
ID_TOKEN_LIFETIME_S: Final = 300


def ensure_key(key_dir: Path) -> bool:
    """Make the RSA key if it is missing (0600); True when created. Never overwrites."""
    path = key_dir / KEY_FILE
    if path.exists():
        return False
    key = jwk.generate_key("RSA", 2048, private=True, auto_kid=True)
    key_dir.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False  # made concurrently by another process: keep theirs
    try:
        os.write(fd, orjson.dumps(key.as_dict(private=True)))
    finally:
        os.close(fd)
    return True


class IdTokenSigner:
    def __init__(self, key_dir: Path) -> None:
        ensure_key(key_dir)
        try:
            self._key = jwk.import_key(orjson.loads((key_dir / KEY_FILE).read_bytes()), "RSA")
        except (OSError, ValueError) as exc:
            raise MedvaultError(f"the id_token key in {key_dir} cannot be read ({exc.__class__.__name__})") from None

    def jwks(self) -> dict[str, Any]:
        public = self._key.as_dict(private=False)
        return {"keys": [{**public, "use": "sig", "alg": "RS256"}]}

    def sign(
        self,
        *,
        issuer: str,
        subject: str,
        audience: str,
        fhir_user: str | None,
        now: datetime,
        nonce: str | None = None,
    ) -> str:
        issued = int(now.timestamp())
        claims: dict[str, Any] = {
            "iss": issuer,
            "sub": subject,
            "aud": audience,
            "iat": issued,
            "exp": issued + ID_TOKEN_LIFETIME_S,
        }
        if fhir_user:
            claims["fhirUser"] = fhir_user
        if nonce:
            claims["nonce"] = nonce
        return jwt.encode({"alg": "RS256", "kid": self._key.kid}, claims, self._key)

    def public_key(self) -> Any:
        return jwk.import_key(self._key.as_dict(private=False), "RSA")
