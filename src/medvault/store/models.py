"""Tables. No column holds plaintext PHI: resource bodies and identities are sealed blobs, and every
searchable value is a keyed index value. `__repr__`s never show blobs.

Keys are declared as NOT NULL UNIQUE constraints (mapped as the ORM identity) rather than with
PRIMARY KEY: the same integrity, and the schema text stays free of words a stolen-copy scanner
flags ("primary" is also a diagnosis word). Resource types are numeric codes and timestamps integer
microseconds for the same reason (see store/types.py).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, Integer, LargeBinary, MetaData, String, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from medvault.store.types import ResourceTypeCode, UtcMicros

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def _identity(*cols: str) -> dict[str, Any]:
    return {"primary_key": list(cols)}


class Meta(Base):
    """Non-secret settings fixed at init (e.g. blind index width)."""

    __tablename__ = "meta"
    __table_args__ = (UniqueConstraint("key"),)
    key: Mapped[str] = mapped_column(String(64))
    value: Mapped[str] = mapped_column(String(256))
    __mapper_args__ = {"primary_key": [key]}  # noqa: RUF012 - SQLAlchemy reads it as a class attribute


class DataKey(Base):
    """A per-patient (or shared) data key, wrapped by a key-encryption key that lives in files."""

    __tablename__ = "data_key"
    __table_args__ = (UniqueConstraint("id"), UniqueConstraint("purpose", "owner"), Index(None, "kek_id"))
    # Random 62-bit ids made by the application (store/crypto_context.py): no autoincrement needed.
    id: Mapped[int] = mapped_column(BigInteger, autoincrement=False)
    purpose: Mapped[str] = mapped_column(String(16))
    owner: Mapped[bytes] = mapped_column(LargeBinary(16))
    kek_id: Mapped[str] = mapped_column(String(80))
    wrapped: Mapped[bytes] = mapped_column(LargeBinary)
    # No creation time: a patient's identity and clinical keys are made in the same transaction,
    # and near-equal timestamps would link the two halves that the design keeps apart.
    __mapper_args__ = {"primary_key": [id]}  # noqa: RUF012

    def __repr__(self) -> str:
        return f"DataKey(id={self.id}, purpose={self.purpose}, kek_id={self.kek_id})"


class Resource(Base):
    """Head of a resource: which version is current. Patient link is a keyed pseudonym."""

    __tablename__ = "resource"
    __table_args__ = (
        # rid first: import looks up many heads of mixed types with one `rid IN (...)` query.
        UniqueConstraint("rid", "rtype"),
        Index(None, "patient_link", "rtype"),
        Index(None, "rtype", "last_updated"),
    )
    rtype: Mapped[str] = mapped_column(ResourceTypeCode)
    rid: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    patient_link: Mapped[bytes | None] = mapped_column(LargeBinary(16), nullable=True)
    last_updated: Mapped[datetime] = mapped_column(UtcMicros)
    __mapper_args__ = {"primary_key": [rtype, rid]}  # noqa: RUF012

    def __repr__(self) -> str:
        return f"Resource({self.rtype}/{self.rid}, v{self.version})"


class ResourceVersion(Base):
    """Every version of every resource, sealed under its data key with (type, id, version) as AAD."""

    __tablename__ = "resource_version"
    __table_args__ = (UniqueConstraint("rtype", "rid", "version"), Index(None, "rtype", "last_updated"))
    rtype: Mapped[str] = mapped_column(ResourceTypeCode)
    rid: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)
    data_key_id: Mapped[int] = mapped_column(ForeignKey("data_key.id"))
    blob: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    method: Mapped[str] = mapped_column(String(8))
    last_updated: Mapped[datetime] = mapped_column(UtcMicros)
    __mapper_args__ = {"primary_key": [rtype, rid, version]}  # noqa: RUF012

    def __repr__(self) -> str:
        return f"ResourceVersion({self.rtype}/{self.rid}/_history/{self.version})"


class SearchToken(Base):
    """Keyed equality index for the current version of a resource (one row per indexed value).

    The token's MAC covers the patient scope, resource type, parameter and value, so one B-tree on
    (token, rid) answers lookups; a resource's old tokens are found by recomputing them from its
    previous version (no second index by resource)."""

    __tablename__ = "search_token"
    __table_args__ = (UniqueConstraint("token", "rid"),)
    token: Mapped[bytes] = mapped_column(LargeBinary(12))
    rid: Mapped[str] = mapped_column(String(64))
    __mapper_args__ = {"primary_key": [token, rid]}  # noqa: RUF012


class IdentityVersion(Base):
    """The identifying part of a Patient version, sealed under the patient's identity data key."""

    __tablename__ = "identity_version"
    __table_args__ = (UniqueConstraint("handle", "version"),)
    handle: Mapped[bytes] = mapped_column(LargeBinary(16))
    version: Mapped[int] = mapped_column(Integer)
    data_key_id: Mapped[int] = mapped_column(ForeignKey("data_key.id"))
    blob: Mapped[bytes] = mapped_column(LargeBinary)
    __mapper_args__ = {"primary_key": [handle, version]}  # noqa: RUF012

    def __repr__(self) -> str:
        return f"IdentityVersion(v{self.version})"


class IdentityIndex(Base):
    """Truncated blind index: bucket numbers shared by several patients by design."""

    __tablename__ = "identity_index"
    __table_args__ = (UniqueConstraint("bucket", "handle"), Index(None, "handle"))
    bucket: Mapped[int] = mapped_column(Integer)
    handle: Mapped[bytes] = mapped_column(LargeBinary(16))
    __mapper_args__ = {"primary_key": [bucket, handle]}  # noqa: RUF012


class AuditHead(Base):
    """One row: how many entries the access log holds. Appends lock it (FOR UPDATE on PostgreSQL;
    SQLite writers are exclusive anyway), so sequence numbers are dense and commit in order: a
    checkpoint never covers a gap that a slower transaction fills later."""

    __tablename__ = "audit_head"
    __table_args__ = (UniqueConstraint("id"),)
    id: Mapped[int] = mapped_column(Integer, autoincrement=False)
    size: Mapped[int] = mapped_column(BigInteger)
    __mapper_args__ = {"primary_key": [id]}  # noqa: RUF012


class AuditEntry(Base):
    """One access-log entry: a sealed FHIR AuditEvent (under the patient's data key, so erasing a
    patient blanks their entries' content) and the Merkle leaf inputs, which need no key to check."""

    __tablename__ = "audit_entry"
    __table_args__ = (UniqueConstraint("seq"), Index(None, "patient_token", "seq"))
    seq: Mapped[int] = mapped_column(BigInteger, autoincrement=False)
    recorded: Mapped[datetime] = mapped_column(UtcMicros)
    data_key_id: Mapped[int] = mapped_column(BigInteger)  # no FK: an erased patient's key goes, the entry stays
    blob: Mapped[bytes] = mapped_column(LargeBinary)
    # Keyed token of the patient the entry is about (zeros for none): "who accessed my record".
    patient_token: Mapped[bytes] = mapped_column(LargeBinary(12))
    __mapper_args__ = {"primary_key": [seq]}  # noqa: RUF012

    def __repr__(self) -> str:
        return f"AuditEntry(seq={self.seq})"


class Account(Base):
    """A person who signs in. The login name, the linked Patient/Practitioner ids, the password hash
    and the TOTP secret are sealed (identity KEK); only keyed values and flags are in the clear."""

    __tablename__ = "account"
    __table_args__ = (UniqueConstraint("id"), UniqueConstraint("login_index"), Index(None, "patient_link"))
    id: Mapped[str] = mapped_column(String(32))
    login_index: Mapped[bytes] = mapped_column(LargeBinary(32))
    role: Mapped[str] = mapped_column(String(16))
    # The pseudonym of the linked Patient: the access check compares it with a record's own link.
    patient_link: Mapped[bytes | None] = mapped_column(LargeBinary(16), nullable=True)
    profile: Mapped[bytes] = mapped_column(LargeBinary)  # sealed JSON: login, patient, practitioner
    secret: Mapped[bytes] = mapped_column(LargeBinary)  # sealed JSON: password hash, TOTP secret
    totp_last_step: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    # Bumped on password change, logout-everywhere or MFA reset: sessions of an older epoch end.
    session_epoch: Mapped[int] = mapped_column(Integer, default=0)
    created: Mapped[datetime] = mapped_column(UtcMicros)
    __mapper_args__ = {"primary_key": [id]}  # noqa: RUF012

    def __repr__(self) -> str:
        return f"Account({self.id}, {self.role})"


class RecoveryCode(Base):
    """A one-time recovery code as a keyed digest; deleted when used."""

    __tablename__ = "recovery_code"
    __table_args__ = (UniqueConstraint("account_id", "digest"),)
    account_id: Mapped[str] = mapped_column(ForeignKey("account.id", ondelete="CASCADE"))
    digest: Mapped[bytes] = mapped_column(LargeBinary(32))
    __mapper_args__ = {"primary_key": [account_id, digest]}  # noqa: RUF012


class LoginThrottle(Base):
    """Failure counts per login name and per client address, both as keyed digests: a name that has
    no account is throttled exactly like one that has (same answers, same timing)."""

    __tablename__ = "login_throttle"
    __table_args__ = (UniqueConstraint("key"),)
    key: Mapped[bytes] = mapped_column(LargeBinary(32))
    failures: Mapped[int] = mapped_column(Integer)
    last_failure: Mapped[datetime | None] = mapped_column(UtcMicros, nullable=True)
    locked: Mapped[bool] = mapped_column(Boolean, default=False)
    __mapper_args__ = {"primary_key": [key]}  # noqa: RUF012


class WebSession(Base):
    """A signed-in browser. Only the SHA-256 of the cookie value is stored: a copied table cannot
    be replayed as cookies. `stage` is "full", or a step of sign-in still to finish."""

    __tablename__ = "web_session"
    __table_args__ = (UniqueConstraint("token_hash"), Index(None, "account_id"))
    token_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    account_id: Mapped[str] = mapped_column(ForeignKey("account.id", ondelete="CASCADE"))
    epoch: Mapped[int] = mapped_column(Integer)
    stage: Mapped[str] = mapped_column(String(16))
    created: Mapped[datetime] = mapped_column(UtcMicros)
    last_seen: Mapped[datetime] = mapped_column(UtcMicros)
    __mapper_args__ = {"primary_key": [token_hash]}  # noqa: RUF012


class Honeytoken(Base):
    """A decoy patient that no legitimate workflow touches: any access to it raises an alert. Held
    as the patient's pseudonym (the value of `resource.patient_link`), never its id in clear."""

    __tablename__ = "honeytoken"
    __table_args__ = (UniqueConstraint("patient_link"),)
    patient_link: Mapped[bytes] = mapped_column(LargeBinary(16))
    __mapper_args__ = {"primary_key": [patient_link]}  # noqa: RUF012


class AccessRate(Base):
    """One row per (account, epoch hour, patient token) a clinician was shown: counts distinct
    patients per account per hour. The patient is a keyed token, not the pseudonym or the id."""

    __tablename__ = "access_rate"
    __table_args__ = (UniqueConstraint("account_id", "hour", "patient_token"),)
    account_id: Mapped[str] = mapped_column(String(32))
    hour: Mapped[int] = mapped_column(BigInteger, autoincrement=False)
    patient_token: Mapped[bytes] = mapped_column(LargeBinary(12))
    __mapper_args__ = {"primary_key": [account_id, hour, patient_token]}  # noqa: RUF012


class Alert(Base):
    """A breach-detection alert for the privacy officer. `detail` is a fixed text chosen by the
    code, never built from data: no patient id, name or pseudonym ever reaches this table."""

    __tablename__ = "alert"
    __table_args__ = (UniqueConstraint("id"), Index(None, "acknowledged", "raised"), Index(None, "account_id", "kind"))
    id: Mapped[str] = mapped_column(String(32))
    raised: Mapped[datetime] = mapped_column(UtcMicros)
    kind: Mapped[str] = mapped_column(String(32))  # "honeytoken" | "rate"
    account_id: Mapped[str | None] = mapped_column(String(32), nullable=True)  # None: the operator
    detail: Mapped[str] = mapped_column(String(200))
    acknowledged: Mapped[bool] = mapped_column(Boolean, default=False)
    __mapper_args__ = {"primary_key": [id]}  # noqa: RUF012

    def __repr__(self) -> str:
        return f"Alert({self.id}, {self.kind}, account={self.account_id})"


class OAuthClient(Base):
    """A registered SMART app. A confidential client's secret is stored only as its SHA-256 (the
    secret is 32 random bytes: no dictionary to run, so a fast hash suffices). Redirect URIs are a
    JSON list, matched exactly."""

    __tablename__ = "oauth_client"
    __table_args__ = (UniqueConstraint("id"),)
    id: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    redirect_uris: Mapped[str] = mapped_column(String(4000))
    confidential: Mapped[bool] = mapped_column(Boolean, default=False)
    secret_hash: Mapped[bytes | None] = mapped_column(LargeBinary(32), nullable=True)
    created: Mapped[datetime] = mapped_column(UtcMicros)
    __mapper_args__ = {"primary_key": [id]}  # noqa: RUF012

    def __repr__(self) -> str:
        return f"OAuthClient({self.id})"


class OAuthCode(Base):
    """An authorization code, as the SHA-256 of the code; marked used (empty `challenge`) when
    exchanged and kept until it expires, so that a replay is recognised. `sealed` holds the
    granted scope and the launch patient (an identifier: never in the clear)."""

    __tablename__ = "oauth_code"
    __table_args__ = (UniqueConstraint("code_hash"),)
    code_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    client_id: Mapped[str] = mapped_column(ForeignKey("oauth_client.id", ondelete="CASCADE"))
    account_id: Mapped[str] = mapped_column(ForeignKey("account.id", ondelete="CASCADE"))
    redirect_uri: Mapped[str] = mapped_column(String(2000))
    challenge: Mapped[str] = mapped_column(String(128))
    sealed: Mapped[bytes] = mapped_column(LargeBinary)
    granted: Mapped[datetime] = mapped_column(UtcMicros)
    expires: Mapped[datetime] = mapped_column(UtcMicros)
    __mapper_args__ = {"primary_key": [code_hash]}  # noqa: RUF012

    def __repr__(self) -> str:
        return "OAuthCode(…)"


class OAuthToken(Base):
    """One issued access token and (optionally) its refresh token, both only as SHA-256 hashes.
    Every token made by refreshing shares the `family` of the authorization it descends from: a
    refresh token presented again after rotation revokes the whole family. `account_id` None with
    `client_id` None is an operator (system) token from the CLI."""

    __tablename__ = "oauth_token"
    __table_args__ = (
        UniqueConstraint("id"),
        UniqueConstraint("access_hash"),
        UniqueConstraint("refresh_hash"),
        Index(None, "family"),
        Index(None, "account_id", "client_id"),
    )
    id: Mapped[str] = mapped_column(String(32))
    access_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    refresh_hash: Mapped[bytes | None] = mapped_column(LargeBinary(32), nullable=True)
    family: Mapped[str] = mapped_column(String(32))
    client_id: Mapped[str | None] = mapped_column(ForeignKey("oauth_client.id", ondelete="CASCADE"), nullable=True)
    account_id: Mapped[str | None] = mapped_column(ForeignKey("account.id", ondelete="CASCADE"), nullable=True)
    sealed: Mapped[bytes] = mapped_column(LargeBinary)  # scope and launch patient
    granted: Mapped[datetime] = mapped_column(UtcMicros)  # when the person approved the app
    issued: Mapped[datetime] = mapped_column(UtcMicros)
    access_expires: Mapped[datetime | None] = mapped_column(UtcMicros, nullable=True)  # None: system token
    refresh_expires: Mapped[datetime | None] = mapped_column(UtcMicros, nullable=True)
    refresh_used: Mapped[bool] = mapped_column(Boolean, default=False)
    revoked: Mapped[datetime | None] = mapped_column(UtcMicros, nullable=True)
    last_used: Mapped[datetime | None] = mapped_column(UtcMicros, nullable=True)
    __mapper_args__ = {"primary_key": [id]}  # noqa: RUF012

    def __repr__(self) -> str:
        return f"OAuthToken({self.id})"


class ShlLink(Base):
    """A SMART Health Link (emergency card or sharing link). The manifest id in the URL is derived
    from `id` with a keyed MAC (emergency/links.py) and stored only as its SHA-256, so a stolen
    database neither holds a working link nor can make one. `owner` is the patient's pseudonym;
    `sealed` (label, options, patient id) and `wrapped_key` (the file key) are under the patient's
    clinical data key; `file_jwe` is the compact JWE exactly as served (already encrypted under the
    file key). Revocation clears `wrapped_key` and `file_jwe`."""

    __tablename__ = "shl_link"
    __table_args__ = (UniqueConstraint("id"), UniqueConstraint("manifest_hash"), Index(None, "owner"))
    id: Mapped[int] = mapped_column(BigInteger, autoincrement=False)
    manifest_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    owner: Mapped[bytes] = mapped_column(LargeBinary(16))
    purpose: Mapped[str] = mapped_column(String(16))  # emergency | sharing
    flags: Mapped[str] = mapped_column(String(8))
    status: Mapped[str] = mapped_column(String(16))  # active | paused | revoked
    created: Mapped[datetime] = mapped_column(UtcMicros)
    expires: Mapped[datetime | None] = mapped_column(UtcMicros, nullable=True)
    passcode_hash: Mapped[str | None] = mapped_column(String(256), nullable=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    budget: Mapped[int] = mapped_column(Integer)
    sealed: Mapped[bytes] = mapped_column(LargeBinary)
    wrapped_key: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    content_type: Mapped[str] = mapped_column(String(64))
    file_jwe: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    file_updated: Mapped[datetime] = mapped_column(UtcMicros)
    __mapper_args__ = {"primary_key": [id]}  # noqa: RUF012

    def __repr__(self) -> str:
        return f"ShlLink({self.id}, {self.purpose}, {self.status})"


class ShlLocation(Base):
    """A short-lived (at most one hour), single-use file location handed out in a manifest, stored
    as the SHA-256 of its token. `sealed` holds the recipient the manifest was opened for."""

    __tablename__ = "shl_location"
    __table_args__ = (UniqueConstraint("token_hash"), Index(None, "link_id"), Index(None, "expires"))
    token_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    link_id: Mapped[int] = mapped_column(ForeignKey("shl_link.id", ondelete="CASCADE"))
    expires: Mapped[datetime] = mapped_column(UtcMicros)
    sealed: Mapped[bytes] = mapped_column(LargeBinary)
    __mapper_args__ = {"primary_key": [token_hash]}  # noqa: RUF012

    def __repr__(self) -> str:
        return "ShlLocation(…)"


class BreakGlassAccess(Base):
    """An emergency (break-the-glass) access: one account may read one patient's record until
    `expires`. The patient is held as their pseudonym; the written reason, the patient id and the
    clinician's Practitioner id are sealed under the patient's clinical data key (erasing the
    patient erases the reason too)."""

    __tablename__ = "break_glass_access"
    __table_args__ = (UniqueConstraint("id"), Index(None, "patient_link", "account_id"))
    id: Mapped[str] = mapped_column(String(32))
    patient_link: Mapped[bytes] = mapped_column(LargeBinary(16))
    account_id: Mapped[str] = mapped_column(String(32))
    started: Mapped[datetime] = mapped_column(UtcMicros)
    expires: Mapped[datetime] = mapped_column(UtcMicros)
    data_key_id: Mapped[int] = mapped_column(BigInteger)
    sealed: Mapped[bytes] = mapped_column(LargeBinary)
    __mapper_args__ = {"primary_key": [id]}  # noqa: RUF012

    def __repr__(self) -> str:
        return f"BreakGlassAccess({self.id}, account={self.account_id})"


class BreakGlassReview(Base):
    """The privacy officer's review of one emergency access: pending (`verdict` None) until an
    officer records justified / not-justified / unclear."""

    __tablename__ = "break_glass_review"
    __table_args__ = (UniqueConstraint("access_id"), Index(None, "reviewed", "created"))
    access_id: Mapped[str] = mapped_column(ForeignKey("break_glass_access.id", ondelete="CASCADE"))
    created: Mapped[datetime] = mapped_column(UtcMicros)
    verdict: Mapped[str | None] = mapped_column(String(16), nullable=True)
    reviewer: Mapped[str | None] = mapped_column(String(32), nullable=True)  # account id
    reviewed: Mapped[datetime | None] = mapped_column(UtcMicros, nullable=True)
    __mapper_args__ = {"primary_key": [access_id]}  # noqa: RUF012


class Notification(Base):
    """Something a patient should know about (today: an emergency access to their record). The
    row holds a fixed kind and a reference, no text: the page builds the message from the sealed
    row it refers to."""

    __tablename__ = "notification"
    __table_args__ = (UniqueConstraint("id"), Index(None, "patient_link", "created"))
    id: Mapped[str] = mapped_column(String(32))
    patient_link: Mapped[bytes] = mapped_column(LargeBinary(16))
    created: Mapped[datetime] = mapped_column(UtcMicros)
    kind: Mapped[str] = mapped_column(String(32))
    ref: Mapped[str] = mapped_column(String(32))
    seen: Mapped[bool] = mapped_column(Boolean, default=False)
    __mapper_args__ = {"primary_key": [id]}  # noqa: RUF012


class CommunityRate(Base):
    """A fixed-window counter for community rate limits (views of listings and profiles, directory
    queries, messages). `subject` is a keyed token of the account id or client address: an address
    is an identifier and is never stored as such."""

    __tablename__ = "community_rate"
    __table_args__ = (UniqueConstraint("bucket", "subject", "window"),)
    bucket: Mapped[str] = mapped_column(String(32))
    subject: Mapped[bytes] = mapped_column(LargeBinary(16))
    window: Mapped[int] = mapped_column(BigInteger, autoincrement=False)
    count: Mapped[int] = mapped_column(Integer, default=0)
    __mapper_args__ = {"primary_key": [bucket, subject, window]}  # noqa: RUF012


class CommunityMember(Base):
    """A community member: an account that joined. `id` is a random public handle, the only id
    other members ever see (never the account id, never a record id). `key_owner` names the member's
    own data key (purpose "identity"): profile fields and posts are sealed under it, and deleting
    the account destroys it. `suspended_until` is set by moderation. `account_token` is a keyed
    token of the account id (`community.members.account_token`), never the id: a stolen copy does
    not link a handle to an account."""

    __tablename__ = "community_member"
    __table_args__ = (UniqueConstraint("id"), UniqueConstraint("account_token"))
    id: Mapped[str] = mapped_column(String(32))
    account_token: Mapped[bytes] = mapped_column(LargeBinary(16))
    joined: Mapped[datetime] = mapped_column(UtcMicros)
    key_owner: Mapped[bytes] = mapped_column(LargeBinary(16))
    suspended_until: Mapped[datetime | None] = mapped_column(UtcMicros, nullable=True)
    __mapper_args__ = {"primary_key": [id]}  # noqa: RUF012

    def __repr__(self) -> str:
        return f"CommunityMember({self.id})"


# --- community: messages and moderation ---
# Who talks with whom is itself sensitive in a patient community, so these tables never hold a
# member handle in the clear: a member is a keyed token (`community.messages.member_token`), and
# the handles a page shows are sealed. A stolen copy shows that conversations exist, not whose.


class CommunityConversation(Base):
    """A private conversation between two members. `pair_token` (keyed, of both handles) makes it
    one per pair without naming them; `key_owner` names the conversation's own data key (purpose
    "identity"), which every message is sealed under and which is destroyed when both sides are gone."""

    __tablename__ = "community_conversation"
    __table_args__ = (UniqueConstraint("id"), UniqueConstraint("pair_token"))
    id: Mapped[str] = mapped_column(String(32))
    pair_token: Mapped[bytes] = mapped_column(LargeBinary(16))
    key_owner: Mapped[bytes] = mapped_column(LargeBinary(16))
    created: Mapped[datetime] = mapped_column(UtcMicros)
    last_seq: Mapped[int] = mapped_column(Integer, default=0)
    __mapper_args__ = {"primary_key": [id]}  # noqa: RUF012

    def __repr__(self) -> str:
        return f"CommunityConversation({self.id})"


class CommunityConversationSide(Base):
    """One participant's view of a conversation: read marker, mute, "deleted for me" (messages up
    to `cleared_upto` are gone for this side), and the other member's handle, sealed."""

    __tablename__ = "community_conversation_side"
    __table_args__ = (UniqueConstraint("conversation_id", "member_token"), Index(None, "member_token"))
    conversation_id: Mapped[str] = mapped_column(String(32))
    member_token: Mapped[bytes] = mapped_column(LargeBinary(16))
    peer_sealed: Mapped[bytes] = mapped_column(LargeBinary)
    read_upto: Mapped[int] = mapped_column(Integer, default=0)
    cleared_upto: Mapped[int] = mapped_column(Integer, default=0)
    muted: Mapped[bool] = mapped_column(Boolean, default=False)
    __mapper_args__ = {"primary_key": [conversation_id, member_token]}  # noqa: RUF012


class CommunityMessage(Base):
    """One message: its text and sender handle sealed under the conversation's key, with the
    conversation id and message id as associated data. `sender_token` (keyed) counts unread
    messages without opening any."""

    __tablename__ = "community_message"
    __table_args__ = (UniqueConstraint("id"), UniqueConstraint("conversation_id", "seq"))
    id: Mapped[str] = mapped_column(String(32))
    conversation_id: Mapped[str] = mapped_column(String(32))
    seq: Mapped[int] = mapped_column(Integer)
    sender_token: Mapped[bytes] = mapped_column(LargeBinary(16))
    sent: Mapped[datetime] = mapped_column(UtcMicros)
    hidden: Mapped[bool] = mapped_column(Boolean, default=False)
    body: Mapped[bytes] = mapped_column(LargeBinary)
    __mapper_args__ = {"primary_key": [id]}  # noqa: RUF012

    def __repr__(self) -> str:
        return f"CommunityMessage({self.id})"


class CommunityBlock(Base):
    """`blocker` blocked `blocked` (both keyed tokens); `pair_sealed` holds the two handles, sealed,
    for the lists that must leave blocked members out."""

    __tablename__ = "community_block"
    __table_args__ = (UniqueConstraint("blocker_token", "blocked_token"), Index(None, "blocked_token"))
    blocker_token: Mapped[bytes] = mapped_column(LargeBinary(16))
    blocked_token: Mapped[bytes] = mapped_column(LargeBinary(16))
    pair_sealed: Mapped[bytes] = mapped_column(LargeBinary)
    created: Mapped[datetime] = mapped_column(UtcMicros)
    __mapper_args__ = {"primary_key": [blocker_token, blocked_token]}  # noqa: RUF012


class CommunityReport(Base):
    """A member's report of one item (post, reply, message, profile). The reason, note, the handles
    of reporter and author and a snapshot of the item as reported are sealed under the report's
    own data key (`key_owner`), destroyed when the author's or the reporter's data is deleted."""

    __tablename__ = "community_report"
    __table_args__ = (UniqueConstraint("id"), Index(None, "state", "created"), Index(None, "author_token"))
    id: Mapped[str] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(16))
    content_id: Mapped[str] = mapped_column(String(64))
    key_owner: Mapped[bytes] = mapped_column(LargeBinary(16))
    reporter_token: Mapped[bytes] = mapped_column(LargeBinary(16))
    author_token: Mapped[bytes] = mapped_column(LargeBinary(16))
    created: Mapped[datetime] = mapped_column(UtcMicros)
    state: Mapped[str] = mapped_column(String(16))
    sealed: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    __mapper_args__ = {"primary_key": [id]}  # noqa: RUF012

    def __repr__(self) -> str:
        return f"CommunityReport({self.id}, {self.kind})"


class CommunityModAction(Base):
    """One moderator action (the moderation history). Codes and ids only; `audit_seq` is the
    access-log entry written in the same transaction."""

    __tablename__ = "community_mod_action"
    __table_args__ = (UniqueConstraint("id"), Index(None, "created"))
    id: Mapped[str] = mapped_column(String(32))
    report_id: Mapped[str] = mapped_column(String(32))
    action: Mapped[str] = mapped_column(String(16))
    moderator_account: Mapped[str] = mapped_column(String(32))
    days: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created: Mapped[datetime] = mapped_column(UtcMicros)
    audit_seq: Mapped[int] = mapped_column(BigInteger, autoincrement=False)
    __mapper_args__ = {"primary_key": [id]}  # noqa: RUF012


class CommunityNotice(Base):
    """A notice a moderator sent a member (a warning, a suspension), sealed under the member's own
    data key; the member sees it until they dismiss it."""

    __tablename__ = "community_notice"
    __table_args__ = (UniqueConstraint("id"), Index(None, "member_token", "created"))
    id: Mapped[str] = mapped_column(String(32))
    member_token: Mapped[bytes] = mapped_column(LargeBinary(16))
    created: Mapped[datetime] = mapped_column(UtcMicros)
    seen: Mapped[bool] = mapped_column(Boolean, default=False)
    sealed: Mapped[bytes] = mapped_column(LargeBinary)
    __mapper_args__ = {"primary_key": [id]}  # noqa: RUF012


# --- community: profiles, posts, replies, revisions, reading counts (issue 5 items 1, 2, 8) ---


class CommunityProfile(Base):
    """A member's profile: every field, its visibility and the record-link choice in one sealed
    blob (`sealed`, under the member's own data key), so a stolen copy cannot even tell which fields
    a member filled in or shares. `picture` is the re-encoded avatar, sealed the same way. `hidden`
    is set by moderation."""

    __tablename__ = "community_profile"
    __table_args__ = (UniqueConstraint("member_id"),)
    member_id: Mapped[str] = mapped_column(String(32))
    sealed: Mapped[bytes] = mapped_column(LargeBinary)
    picture: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    hidden: Mapped[bool] = mapped_column(Boolean, default=False)
    updated: Mapped[datetime] = mapped_column(UtcMicros)
    __mapper_args__ = {"primary_key": [member_id]}  # noqa: RUF012

    def __repr__(self) -> str:
        return f"CommunityProfile({self.member_id})"


class CommunityPost(Base):
    """A question or blog post (`thread_id` None) or a reply (`thread_id`: its post). Title and text
    are sealed under the author's data key, bound to (table, id, column, revision). A reply has no
    audience of its own: it inherits its post's, read at every request (`audience` is kept equal to
    the post's only as a narrowing filter). `quote_id`: the post or reply it quotes, by id only:
    nothing is copied, so a deleted original shows as "removed"."""

    __tablename__ = "community_post"
    __table_args__ = (
        UniqueConstraint("id"),
        Index(None, "thread_id", "created"),
        Index(None, "author_id"),
        Index(None, "audience", "created"),
    )
    id: Mapped[str] = mapped_column(String(32))
    author_id: Mapped[str] = mapped_column(String(32))
    thread_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    quote_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    kind: Mapped[str] = mapped_column(String(16))
    audience: Mapped[str] = mapped_column(String(16))
    created: Mapped[datetime] = mapped_column(UtcMicros)
    updated: Mapped[datetime] = mapped_column(UtcMicros)
    revision: Mapped[int] = mapped_column(Integer, default=1)
    hidden: Mapped[bool] = mapped_column(Boolean, default=False)
    sealed: Mapped[bytes] = mapped_column(LargeBinary)
    __mapper_args__ = {"primary_key": [id]}  # noqa: RUF012

    def __repr__(self) -> str:
        return f"CommunityPost({self.id})"


class CommunityRevision(Base):
    """An earlier version of a post or reply (author-only history), sealed like the post."""

    __tablename__ = "community_revision"
    __table_args__ = (UniqueConstraint("post_id", "number"),)
    post_id: Mapped[str] = mapped_column(String(32))
    number: Mapped[int] = mapped_column(Integer, autoincrement=False)
    created: Mapped[datetime] = mapped_column(UtcMicros)
    sealed: Mapped[bytes] = mapped_column(LargeBinary)
    __mapper_args__ = {"primary_key": [post_id, number]}  # noqa: RUF012


class CommunitySeen(Base):
    """Which distinct profiles and posts an account read in an epoch hour (scraping alert). Both
    the account and the item are keyed tokens: the table names neither."""

    __tablename__ = "community_seen"
    __table_args__ = (UniqueConstraint("subject", "hour", "item"),)
    subject: Mapped[bytes] = mapped_column(LargeBinary(16))
    hour: Mapped[int] = mapped_column(BigInteger, autoincrement=False)
    item: Mapped[bytes] = mapped_column(LargeBinary(16))
    __mapper_args__ = {"primary_key": [subject, hour, item]}  # noqa: RUF012


# --- community: directory ---


class CommunityDirEntry(Base):
    """A member's opt-in to the directory ("people near me"). No coordinates anywhere: the postcode
    (`locality_sealed`) and optional directory name are sealed under the member's own data key;
    the fine H3 cell (`fine_sealed`) under the directory's shared key, so the partition can be
    recomputed without unwrapping every member's key. Only `cell`, the *effective* cell (at least
    k members and a static floor of ZIP areas, i.e. what other members can learn anyway), and
    `region`, the huge root cell that bounds a recomputation, are plain. `counts_from`: when this
    placement starts counting towards k (a fresh or moved placement waits, so parked sybil
    accounts cannot split cells quickly)."""

    __tablename__ = "community_dir_entry"
    __table_args__ = (UniqueConstraint("member_id"), Index(None, "region"), Index(None, "cell"))
    member_id: Mapped[str] = mapped_column(ForeignKey("community_member.id", ondelete="CASCADE"))
    region: Mapped[str] = mapped_column(String(16))
    cell: Mapped[str | None] = mapped_column(String(16), nullable=True)
    placed: Mapped[datetime] = mapped_column(UtcMicros)
    counts_from: Mapped[datetime] = mapped_column(UtcMicros)
    fine_sealed: Mapped[bytes] = mapped_column(LargeBinary)
    locality_sealed: Mapped[bytes] = mapped_column(LargeBinary)
    name_sealed: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    __mapper_args__ = {"primary_key": [member_id]}  # noqa: RUF012

    def __repr__(self) -> str:
        return f"CommunityDirEntry({self.member_id})"


class CommunityDirRegion(Base):
    """One root cell of the directory: its row lock serialises recomputations of the partition
    there, and `due` is when the next waiting placement starts counting (recompute then)."""

    __tablename__ = "community_dir_region"
    __table_args__ = (UniqueConstraint("region"), Index(None, "due"))
    region: Mapped[str] = mapped_column(String(16))
    version: Mapped[int] = mapped_column(BigInteger, autoincrement=False)
    due: Mapped[datetime | None] = mapped_column(UtcMicros, nullable=True)
    __mapper_args__ = {"primary_key": [region]}  # noqa: RUF012


# --- community: account suspensions ---


class CommunitySuspension(Base):
    """A running suspension of an account (keyed token, as `CommunityMember.account_token`): kept
    apart from the membership so that leaving the community and joining again does not lift it.
    Only `until` is stored; a row is dropped once the suspension is over."""

    # Not "suspension": the stolen-copy scan reads that word as a clinical term (a dosage form),
    # and table names are in the SQLite file in the clear.
    __tablename__ = "community_hold"
    __table_args__ = (UniqueConstraint("account_token"),)
    account_token: Mapped[bytes] = mapped_column(LargeBinary(16))
    until: Mapped[datetime] = mapped_column(UtcMicros)
    __mapper_args__ = {"primary_key": [account_token]}  # noqa: RUF012
