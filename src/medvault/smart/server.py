"""The OAuth2 authorization server for SMART App Launch 2.0, on Authlib's generic (framework-free)
`AuthorizationServer`: authorization code with PKCE (S256 only, required for every client),
refresh tokens with rotation and reuse detection, RFC 7009 revocation, and the SMART token response
(`scope`, `patient`, `id_token`).

A face builds an `HttpRequest` from whatever framework it runs on, makes one `SmartServer` per
request around that request's database session, and turns the returned `OAuthResponse` into its
own response. The face owns the transaction (commit after the call).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from authlib.oauth2 import AuthorizationServer, OAuth2Request
from authlib.oauth2.rfc6749 import ClientMixin, grants
from authlib.oauth2.rfc6749.errors import InvalidRequestError, OAuth2Error
from authlib.oauth2.rfc6749.requests import OAuth2Payload
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oauth2.rfc7636.challenge import compare_s256_code_challenge
from sqlalchemy.orm import Session

from medvault.auth import accounts
from medvault.auth.accounts import Actor
from medvault.smart import scopes as sc
from medvault.smart import tokens
from medvault.smart.idtoken import IdTokenSigner
from medvault.store.crypto_context import CryptoContext

GRANT_TYPES = ("authorization_code", "refresh_token")
_TOKEN_AUTH = ["client_secret_basic", "client_secret_post", "none"]


@dataclass(frozen=True)
class HttpRequest:
    """What the server needs of an HTTP request, framework-free."""

    method: str
    uri: str
    headers: Mapping[str, str]
    query: Sequence[tuple[str, str]] = ()
    form: Sequence[tuple[str, str]] = ()


@dataclass(frozen=True)
class OAuthResponse:
    status: int
    body: Any
    headers: list[tuple[str, str]] = field(default_factory=list)

    @property
    def location(self) -> str | None:
        return next((v for k, v in self.headers if k.lower() == "location"), None)


@dataclass(frozen=True)
class Approval:
    """The signed-in person who approved, and the launch patient they approved for."""

    actor: Actor
    patient: str | None
    granted: datetime


class _Payload(OAuth2Payload):  # type: ignore[misc]
    def __init__(self, pairs: Sequence[tuple[str, str]]) -> None:
        self._datalist: defaultdict[str, list[str]] = defaultdict(list)
        for k, v in pairs:
            self._datalist[k].append(v)
        self._data = {k: v[0] for k, v in self._datalist.items()}

    @property
    def data(self) -> dict[str, str]:
        return self._data

    @property
    def datalist(self) -> defaultdict[str, list[str]]:
        return self._datalist


class _Request(OAuth2Request):  # type: ignore[misc]
    def __init__(self, req: HttpRequest) -> None:
        # The face's own header mapping: Starlette's is case-insensitive, and Authlib asks for "Authorization".
        super().__init__(method=req.method, uri=req.uri, headers=req.headers)
        self._args = dict(req.query)
        self._form = dict(req.form)
        self.payload = _Payload([*req.query, *req.form])

    @property
    def args(self) -> dict[str, str]:
        return self._args

    @property
    def form(self) -> dict[str, str]:
        return self._form


class Client(ClientMixin):  # type: ignore[misc]
    def __init__(self, server: SmartServer, info: tokens.AppInfo) -> None:
        self.server, self.info = server, info

    @property
    def client_id(self) -> str:
        return self.info.client_id

    def get_client_id(self) -> str:
        return self.info.client_id

    def get_default_redirect_uri(self) -> str | None:
        return None  # the redirect_uri parameter is required, and matched exactly

    def get_allowed_scope(self, scope: str | None) -> str | None:
        try:
            parsed = sc.parse(scope)
        except sc.InvalidScope:
            return None
        # A person approves for themself: system/ scopes are the operator's (CLI) alone.
        if not parsed.resources or "system" in parsed.levels:
            return None
        return parsed.text

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in self.info.redirect_uris

    def check_client_secret(self, client_secret: str) -> bool:
        return tokens.check_client_secret(
            session=self.server.session, client_id=self.info.client_id, secret=client_secret
        )

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        if self.info.confidential:
            return method in ("client_secret_basic", "client_secret_post")
        return method == "none"

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in GRANT_TYPES


class _Code:
    def __init__(self, found: tokens.CodeGrant) -> None:
        self.found = found
        self.code_challenge = found.challenge
        self.code_challenge_method = "S256"

    def get_redirect_uri(self) -> str:
        return self.found.redirect_uri

    def get_scope(self) -> str:
        return self.found.scope


class _Token:
    def __init__(self, record: tokens.TokenRecord) -> None:
        self.record = record

    def check_client(self, client: Client) -> bool:
        return self.record.client_id == client.client_id

    def get_scope(self) -> str:
        return self.record.scope


@dataclass(frozen=True)
class _User:
    actor: Actor
    patient: str | None
    granted: datetime
    family: str | None = None
    nonce: str | None = None  # OpenID Connect: echoed in the id_token of the code exchange


class S256Only(CodeChallenge):  # type: ignore[misc]
    """PKCE is required of every client, and only S256: `plain` (or no method, which RFC 7636
    reads as plain) is refused at the authorization endpoint."""

    DEFAULT_CODE_CHALLENGE_METHOD = "S256"
    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]  # noqa: RUF012 - Authlib reads class attributes
    CODE_CHALLENGE_METHODS = {"S256": compare_s256_code_challenge}  # noqa: RUF012

    def validate_code_challenge(self, grant: Any, redirect_uri: str) -> None:
        data = grant.request.payload.data
        if not data.get("code_challenge"):
            raise InvalidRequestError("PKCE is required: missing 'code_challenge'")
        if data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("PKCE 'code_challenge_method' must be S256")
        super().validate_code_challenge(grant, redirect_uri)

    def validate_code_verifier(self, grant: Any, result: Any) -> None:
        if not grant.request.form.get("code_verifier"):
            raise InvalidRequestError("Missing 'code_verifier'")
        super().validate_code_verifier(grant, result)


class CodeGrant(grants.AuthorizationCodeGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = _TOKEN_AUTH

    @property
    def smart(self) -> SmartServer:
        server: SmartServer = self.server
        return server

    def generate_authorization_code(self) -> str:
        return tokens.new_secret()

    def save_authorization_code(self, code: str, request: Any) -> None:
        approval: Approval = request.user
        tokens.save_code(
            session=self.smart.session,
            crypto=self.smart.crypto,
            code=code,
            client_id=request.client.client_id,
            account_id=approval.actor.account_id,
            redirect_uri=request.payload.redirect_uri,
            challenge=request.payload.data["code_challenge"],
            scope=request.scope,
            patient=approval.patient,
            now=approval.granted,
            nonce=(request.payload.data.get("nonce") or "")[:256] or None,
        )

    def query_authorization_code(self, code: str, client: Client) -> _Code | None:
        s = self.smart
        found = tokens.find_code(session=s.session, crypto=s.crypto, code=code, client_id=client.client_id, now=s.now)
        return _Code(found) if found else None

    def delete_authorization_code(self, authorization_code: _Code) -> None:
        tokens.use_code(session=self.smart.session, code_hash=authorization_code.found.code_hash)

    def authenticate_user(self, authorization_code: _Code) -> _User | None:
        found = authorization_code.found
        try:
            actor = accounts.actor_for(
                session=self.smart.session, crypto=self.smart.crypto, account_id=found.account_id
            )
        except accounts.AccountNotFound:
            return None
        # The family is derived from the code: a replay of the code revokes what it was exchanged for.
        return _User(actor, found.patient, found.granted, tokens.code_family(found.code_hash), nonce=found.nonce)


class RefreshGrant(grants.RefreshTokenGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = _TOKEN_AUTH
    INCLUDE_NEW_REFRESH_TOKEN = True

    @property
    def smart(self) -> SmartServer:
        server: SmartServer = self.server
        return server

    def authenticate_refresh_token(self, refresh_token: str) -> _Token | None:
        s = self.smart
        record = tokens.find_token(session=s.session, crypto=s.crypto, value=refresh_token, kind="refresh")
        if record is None:
            return None
        if record.refresh_used:
            # A rotated refresh token came back: it was copied. End the whole family (RFC 9700 4.14.2).
            tokens.revoke_family(session=s.session, family=record.family, now=s.now)
            actor = self._actor(record)
            tokens.audit(
                session=s.session,
                crypto=s.crypto,
                actor=actor,
                client_id=record.client_id,
                what="refresh-reuse",
                patient_id=record.patient,
                ok=False,
            )
            s.reuse_detected = True
            return None
        if record.revoked is not None or record.refresh_expires is None or record.refresh_expires <= s.now:
            return None
        return _Token(record)

    def _actor(self, record: tokens.TokenRecord) -> Actor | None:
        if record.account_id is None:
            return None
        try:
            return accounts.actor_for(
                session=self.smart.session, crypto=self.smart.crypto, account_id=record.account_id
            )
        except accounts.AccountNotFound:
            return None

    def authenticate_user(self, refresh_token: _Token) -> _User | None:
        actor = self._actor(refresh_token.record)
        if actor is None:
            return None
        r = refresh_token.record
        return _User(actor, r.patient, r.granted, r.family)

    def revoke_old_credential(self, refresh_token: _Token) -> None:
        tokens.mark_rotated(session=self.smart.session, token_id=refresh_token.record.id, now=self.smart.now)


class Revocation(RevocationEndpoint):  # type: ignore[misc]
    CLIENT_AUTH_METHODS = _TOKEN_AUTH

    @property
    def smart(self) -> SmartServer:
        server: SmartServer = self.server
        return server

    def query_token(self, token_string: str, token_type_hint: str | None) -> _Token | None:
        # The hint is only a hint (RFC 7009 2.1): look everywhere.
        s = self.smart
        record = tokens.find_token(session=s.session, crypto=s.crypto, value=token_string, kind="any")
        return _Token(record) if record is not None else None

    def revoke_token(self, token: _Token, request: Any) -> None:
        # Revoking either token ends the whole grant (the family): an app that signs out is out.
        s = self.smart
        tokens.revoke_family(session=s.session, family=token.record.family, now=s.now)
        actor = None
        if token.record.account_id is not None:
            try:
                actor = accounts.actor_for(session=s.session, crypto=s.crypto, account_id=token.record.account_id)
            except accounts.AccountNotFound:
                actor = None
        tokens.audit(
            session=s.session,
            crypto=s.crypto,
            actor=actor,
            client_id=token.record.client_id,
            what="revoke",
            patient_id=token.record.patient,
            ok=True,
        )


class SmartServer(AuthorizationServer):  # type: ignore[misc]
    """One per request: it works in that request's database session."""

    def __init__(
        self, *, session: Session, crypto: CryptoContext, signer: IdTokenSigner | None, issuer: str, now: datetime
    ) -> None:
        super().__init__(scopes_supported=None)
        self.session, self.crypto, self.signer, self.issuer, self.now = session, crypto, signer, issuer, now
        self.reuse_detected = False
        self.register_grant(CodeGrant, [S256Only(required=True)])
        self.register_grant(RefreshGrant)
        self.register_endpoint(Revocation)
        self.register_token_generator("default", self._generate)

    def query_client(self, client_id: str) -> Client | None:
        info = tokens.get_client(session=self.session, client_id=client_id or "")
        return Client(self, info) if info is not None else None

    def _generate(
        self,
        grant_type: str,
        client: Client,
        user: _User | None = None,
        scope: str | None = None,
        expires_in: int | None = None,
        include_refresh_token: bool = True,
    ) -> dict[str, Any]:
        parsed = sc.parse(scope)
        token: dict[str, Any] = {
            "token_type": "Bearer",
            "access_token": tokens.new_secret(),
            "expires_in": int(tokens.ACCESS_LIFETIME.total_seconds()),
            "scope": parsed.text,
        }
        # SMART: a refresh token only when the app asked to stay signed in.
        if include_refresh_token and parsed.offline:
            token["refresh_token"] = tokens.new_secret()
        if user is not None:
            if parsed.launch_patient and user.patient:
                token["patient"] = user.patient
            if parsed.openid and parsed.fhir_user and self.signer is not None:
                token["id_token"] = self.signer.sign(
                    issuer=self.issuer,
                    subject=user.actor.account_id,
                    audience=client.client_id,
                    fhir_user=_fhir_user(user.actor),
                    now=self.now,
                    nonce=user.nonce,
                )
        return token

    def save_token(self, token: dict[str, Any], request: Any) -> None:
        user: _User = request.user
        tokens.store_token(
            session=self.session,
            crypto=self.crypto,
            access_token=token["access_token"],
            refresh_token=token.get("refresh_token"),
            client_id=request.client.client_id,
            account_id=user.actor.account_id,
            scope=token["scope"],
            patient=user.patient,
            family=user.family,
            granted=user.granted,
            now=self.now,
        )
        tokens.audit(
            session=self.session,
            crypto=self.crypto,
            actor=user.actor,
            client_id=request.client.client_id,
            what="token-issue",
            patient_id=user.patient,
            ok=True,
        )

    def create_token_response(self, request: Any = None) -> OAuthResponse:
        # Authlib builds its request object (which refuses plain http to a non-loopback host)
        # before its own error handling: that refusal must be an OAuth error answer, not a 500.
        try:
            request = self.create_oauth2_request(request)
        except OAuth2Error as error:
            return self.handle_response(*error())
        result: OAuthResponse = super().create_token_response(request)
        return result

    def create_endpoint_response(self, name: str, request: Any = None) -> OAuthResponse:
        try:
            request = self.create_oauth2_request(request)
        except OAuth2Error as error:
            return self.handle_response(*error())
        result: OAuthResponse = super().create_endpoint_response(name, request)
        return result

    def create_oauth2_request(self, request: Any) -> _Request:
        if isinstance(request, _Request):
            return request
        return _Request(request)

    def create_json_request(self, request: Any) -> Any:
        raise NotImplementedError("no JSON endpoints")

    def handle_response(self, status: int, body: Any, headers: Any) -> OAuthResponse:
        return OAuthResponse(int(status), body, [(str(k), str(v)) for k, v in (headers or [])])

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        return None  # the audit entries are written where the events happen


def _fhir_user(actor: Actor) -> str | None:
    if actor.practitioner_id:
        return f"Practitioner/{actor.practitioner_id}"
    if actor.patient_id:
        return f"Patient/{actor.patient_id}"
    return None
