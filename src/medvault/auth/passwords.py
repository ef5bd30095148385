"""Password policy (NIST SP 800-63B-4) and Argon2id hashing.

Policy, following SP 800-63B-4 section 3.1.1.2:

* length counted in Unicode code points *after* NFKC normalisation: at least 15 when the password is
  the only factor, at least 8 when the account has a second factor; at most 256 (the standard asks
  that at least 64 be allowed; 256 leaves room for long passphrases and bounds the work a request can
  force on normalisation and hashing);
* no composition rules (no "one digit, one symbol"): they push users to predictable patterns;
* rejected when the password (case-insensitively) is on a list of common passwords, is a derivative
  of a context word (the service name, the login name), or is repetitive or sequential. The list is
  the 30,000-entry `passwords` frequency list shipped in the `zxcvbn` package, so the check works
  offline and never sends the password anywhere.

Hashing is Argon2id via `argon2-cffi`. Every password is NFKC-normalised before hashing and before
verifying, so the same passphrase typed on two keyboards (e.g. a full-width or ligature form)
verifies. Argon2 is deliberately slow, so the async helpers run it on the hasher's own small thread
pool (at most one hash per core but one, further ones queue): the event loop keeps serving other
requests, a burst of sign-ins queues behind itself instead of taking every core from the requests
already running, and memory stays bounded (each hash holds `memory_cost` KiB while it runs).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import re
import secrets
import threading
import unicodedata
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache, partial
from typing import Literal, TypeVar

import argon2
from argon2.exceptions import InvalidHashError, VerificationError

from medvault.auth.errors import PasswordRejected, PasswordRule

T = TypeVar("T")

# --- policy ----------------------------------------------------------------------------------------

# SP 800-63B-4 3.1.1.2: minimum 15 for single-factor passwords, 8 when used with another factor.
MIN_LENGTH = 15
MIN_LENGTH_WITH_SECOND_FACTOR = 8
# The standard requires accepting at least 64; 256 code points (at most ~1 KiB of UTF-8 in practice)
# keeps long passphrases possible while bounding the work one request can force.
MAX_LENGTH = 256
# NFKC can expand a code point into up to 18 (U+FDFA), and composition can shrink; a raw input this
# much longer than MAX_LENGTH cannot normalise to an acceptable length, so it is refused before any
# normalisation work is spent on it.
_RAW_LENGTH_FACTOR = 4
# Words that make a password guessable for *this* service whatever the user.
SERVICE_WORDS: tuple[str, ...] = ("medvault",)
# Context words shorter than this are ignored: they occur by chance in random passwords, and
# removing them says nothing about how guessable the rest is.
_MIN_CONTEXT_WORD = 3
# What remains after removing the context words must be at least this long (and not itself weak);
# otherwise the password is "the login name plus a year" and an attacker targeting the account
# guesses it early.
_MIN_CONTEXT_REMAINDER = 6
# Fewer distinct characters than this ("aaaa…", "abababab…", "aaabbbccc…") is a repetition, whatever
# the length.
_MIN_DISTINCT = 4
_NON_ALNUM = re.compile(r"[\W_]+")


@cache
def common_passwords() -> frozenset[str]:
    """The blocklist: zxcvbn's shipped `passwords` frequency list (30,000 entries), case-folded.

    Loaded on first use: importing zxcvbn costs ~50 ms and a few MB that a process which never sets a
    password (a worker, the CLI's `--help`) should not pay.
    """
    from zxcvbn.frequency_lists import FREQUENCY_LISTS  # type: ignore[import-untyped]  # noqa: PLC0415

    words: list[str] = FREQUENCY_LISTS["passwords"]
    return frozenset(unicodedata.normalize("NFKC", word).casefold() for word in words)


def normalise_password(password: str) -> str:
    """NFKC, as SP 800-63B-4 recommends, so equivalent spellings of a password are the same secret.

    Used both when a password is set and at every login; it never changes case or trims spaces
    (spaces are part of passphrases, and the standard forbids truncation).
    """
    return unicodedata.normalize("NFKC", password)


@dataclass(frozen=True, slots=True)
class PasswordPolicy:
    """Length bounds and context words of the new-password check; defaults are SP 800-63B-4's."""

    min_length: int = MIN_LENGTH
    min_length_with_second_factor: int = MIN_LENGTH_WITH_SECOND_FACTOR
    max_length: int = MAX_LENGTH
    service_words: tuple[str, ...] = SERVICE_WORDS

    def __post_init__(self) -> None:
        # Refuse configurations below the standard rather than silently weakening every account.
        if self.min_length < MIN_LENGTH or self.min_length_with_second_factor < MIN_LENGTH_WITH_SECOND_FACTOR:
            raise ValueError("minimum password lengths must be at least 15 (8 with a second factor)")
        if self.max_length < 64 or self.max_length < self.min_length:
            raise ValueError("the maximum password length must allow at least 64 code points")

    def check(self, *, password: str, has_second_factor: bool, context_words: Iterable[str] = ()) -> str:
        """Return the normalised password to hash, or raise `PasswordRejected` naming the rule."""
        if len(password) > self.max_length * _RAW_LENGTH_FACTOR:
            raise PasswordRejected(f"password must be at most {self.max_length} characters", rule="too-long")
        normalised = normalise_password(password)
        if not _is_encodable(normalised):
            # Lone surrogates (possible in JSON strings) cannot be hashed as UTF-8 and are not text.
            raise PasswordRejected("password must be valid Unicode text", rule="not-text")
        minimum = self.min_length_with_second_factor if has_second_factor else self.min_length
        if len(normalised) < minimum:
            raise PasswordRejected(f"password must be at least {minimum} characters", rule="too-short")
        if len(normalised) > self.max_length:
            raise PasswordRejected(f"password must be at most {self.max_length} characters", rule="too-long")
        folded = normalised.casefold()
        if folded in common_passwords():
            raise PasswordRejected("password is on a list of commonly used passwords", rule="blocklisted")
        weakness = _weakness(folded)
        if weakness is not None:
            raise PasswordRejected(_WEAKNESS_MESSAGES[weakness], rule=weakness)
        if _derives_from_context(folded, [*self.service_words, *context_words]):
            raise PasswordRejected(
                "password must not be built from the service name or the account's own name", rule="context"
            )
        return normalised


DEFAULT_POLICY = PasswordPolicy()


def check_new_password(
    *,
    password: str,
    has_second_factor: bool,
    context_words: Iterable[str] = (),
    policy: PasswordPolicy = DEFAULT_POLICY,
) -> str:
    """Check a password being set and return its normalised form (the one to hash).

    `context_words` are the account's own names (login name, e-mail address); the service name is
    always added. Raises `PasswordRejected` whose `rule` names the rule broken; the message never
    contains the password.
    """
    return policy.check(password=password, has_second_factor=has_second_factor, context_words=context_words)


_WEAKNESS_MESSAGES: dict[PasswordRule, str] = {
    "repetitive": "password must not be a repeated character or pattern",
    "sequential": "password must not be a sequence such as 'abcdef' or '123456'",
}


def _is_encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _weakness(folded: str) -> Literal["repetitive", "sequential"] | None:
    """'repetitive' or 'sequential' when the (case-folded) text is one, else None."""
    if len(set(folded)) < _MIN_DISTINCT or _smallest_period(folded) * 2 <= len(folded):
        return "repetitive"
    if _is_run(folded):
        return "sequential"
    return None


def _smallest_period(text: str) -> int:
    """Smallest p such that text[i] == text[i + p] for all i (Knuth-Morris-Pratt failure function)."""
    if not text:
        return 0
    failure = [0] * len(text)
    k = 0
    for i in range(1, len(text)):
        while k and text[i] != text[k]:
            k = failure[k - 1]
        if text[i] == text[k]:
            k += 1
        failure[i] = k
    return len(text) - failure[-1]


def _step(a: str, b: str) -> int:
    """Code-point step from a to b; digits wrap mod 10 and ASCII letters mod 26 ('9'→'0' is +1)."""
    if a.isdigit() and b.isdigit() and a.isascii() and b.isascii():
        modulus = 10
    elif a.isalpha() and b.isalpha() and a.isascii() and b.isascii():
        modulus = 26
    else:
        return ord(b) - ord(a)
    step = (ord(b) - ord(a)) % modulus
    return step - modulus if step > modulus // 2 else step


def _is_run(folded: str) -> bool:
    """'abcdef…', '987654…', '1234567890123…': every step +1, or every step -1."""
    steps = {_step(a, b) for a, b in itertools.pairwise(folded)}
    return steps in ({1}, {-1})


def _derives_from_context(folded: str, words: Iterable[str]) -> bool:
    """True when removing the context words (and separators) leaves too little, or only weak text.

    Context words are split on non-alphanumerics too, so 'jane.doe@example.org' also contributes
    'jane', 'doe' and 'example'. Only the remainder is judged: a long passphrase that merely
    mentions the service name stays acceptable.
    """
    parts: set[str] = set()
    for word in words:
        folded_word = normalise_password(word).casefold()
        parts.add(folded_word)
        parts.update(_NON_ALNUM.split(folded_word))
    parts = {part for part in parts if len(part) >= _MIN_CONTEXT_WORD}
    if not any(part in folded for part in parts):
        return False
    remainder = folded
    # Longest first, so 'jane.doe@example.org' is removed whole before 'jane' splits it.
    for part in sorted(parts, key=len, reverse=True):
        remainder = remainder.replace(part, "")
    remainder = _NON_ALNUM.sub("", remainder)
    return (
        len(remainder) < _MIN_CONTEXT_REMAINDER or remainder in common_passwords() or _weakness(remainder) is not None
    )


# --- hashing ---------------------------------------------------------------------------------------

# Production parameters: Argon2id, t=3, m=64 MiB, p=1. OWASP's Password Storage Cheat Sheet asks for
# at least m=19 MiB with t=2 (or equivalent trade-offs, e.g. m=12 MiB with t=3); this is above both.
TIME_COST = 3
MEMORY_COST_KIB = 65536
PARALLELISM = 1
# OWASP's equivalent Argon2id minimums (p=1): time cost -> minimum memory in KiB.
_OWASP_MIN_MEMORY_KIB = {1: 47104, 2: 19456, 3: 12288, 4: 9216, 5: 7168}
# Concurrent Argon2 computations per hasher (the web app has one): one core is left to every other
# request, so a burst of sign-ins queues behind itself instead of stalling the rest (issue 3: p95 of
# other requests during 20 concurrent logins under 3x idle). It also bounds memory: 20 at once
# would hold 1.25 GiB.
MAX_CONCURRENT_HASHES = max(1, (os.cpu_count() or 2) - 1)


_shared: Hasher | None = None
_shared_lock = threading.Lock()


def shared_hasher() -> Hasher:
    """The process's hasher for the server's faces (sign-in, password change, SHL passcodes): one
    pool and one concurrency bound for all of them. Made on first use, not at start-up (making one
    costs an Argon2 hash); locked, so concurrent first uses share it."""
    global _shared  # noqa: PLW0603 - one per process, on purpose
    made = _shared
    if made is not None:
        return made  # every request after the first: no lock (the SHL responder path asks each time)
    with _shared_lock:
        if _shared is None:
            _shared = Hasher()
        return _shared


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """Outcome of a password check. `needs_rehash`: the caller should store `hash(password)` now."""

    ok: bool
    needs_rehash: bool


_REJECTED = VerifyResult(ok=False, needs_rehash=False)


def meets_owasp_minimum(*, time_cost: int, memory_cost: int) -> bool:
    """Whether (t, m KiB) is at or above one of OWASP's equivalent Argon2id configurations."""
    if time_cost < 1:
        return False
    return memory_cost >= _OWASP_MIN_MEMORY_KIB[min(time_cost, 5)]


class Hasher:
    """Argon2id hashing of NFKC-normalised passwords, with a constant-cost path for unknown accounts.

    `enforce_owasp_minimum=False` exists for tests whose subject is not the parameters (hashing at
    production cost would make the suite slow); production code never passes it.
    """

    def __init__(
        self,
        *,
        time_cost: int = TIME_COST,
        memory_cost: int = MEMORY_COST_KIB,
        parallelism: int = PARALLELISM,
        max_concurrent: int = MAX_CONCURRENT_HASHES,
        enforce_owasp_minimum: bool = True,
    ) -> None:
        if enforce_owasp_minimum and not meets_owasp_minimum(time_cost=time_cost, memory_cost=memory_cost):
            raise ValueError("Argon2id parameters are below OWASP's minimum")
        self._hasher = argon2.PasswordHasher(
            time_cost=time_cost,
            memory_cost=memory_cost,
            parallelism=parallelism,
            hash_len=32,
            salt_len=16,
            type=argon2.Type.ID,
        )
        # Made now, not on first use: a lazily built dummy would make the first unknown-account login
        # cost a hash *and* a verify, a timing difference an attacker could observe. The secret is
        # random and forgotten, so no password can match it.
        self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(32))
        if max_concurrent < 1:
            raise ValueError("max_concurrent must be at least 1")
        self.max_concurrent = max_concurrent
        # Every Argon2 call of this hasher, from its pool or from a caller's thread, takes a slot:
        # one bound on CPU and memory (64 MiB a call) whatever path the call comes by.
        self._slots = threading.BoundedSemaphore(max_concurrent)
        # Dedicated threads, made on first async use: a hash waiting for one queues in the pool
        # (no thread, no memory), and never takes a thread other requests need.
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    @property
    def parameters(self) -> argon2.Parameters:
        """The parameters new hashes are made with (hashes with others verify, then need rehash)."""
        return argon2.extract_parameters(self._dummy_hash)

    def hash(self, password: str) -> str:
        """Hash a password that passed `check_new_password` (normalised again here; NFKC is idempotent)."""
        normalised = normalise_password(password)
        if not _is_encodable(normalised):
            raise PasswordRejected("password must be valid Unicode text", rule="not-text")
        with self._slots:
            return self._hasher.hash(normalised)

    def verify(self, *, stored: str, password: str) -> VerifyResult:
        """Check `password` against `stored`; never raises for a wrong password or a damaged hash.

        Every failure path does the work of one Argon2 verification, so a damaged or non-encodable
        input answers in the same time as a wrong password.
        """
        normalised = normalise_password(password)
        if not _is_encodable(normalised):
            return self.dummy_verify("")
        with self._slots:
            try:
                self._hasher.verify(stored, normalised)
            except VerificationError:
                return _REJECTED
            except InvalidHashError:
                damaged = True
            else:
                return VerifyResult(ok=True, needs_rehash=self._hasher.check_needs_rehash(stored))
        assert damaged
        return self.dummy_verify(normalised)  # outside the slot: it takes its own

    def dummy_verify(self, password: str) -> VerifyResult:
        """Cost one verification and reject: the login path for unknown (or password-less) accounts."""
        normalised = normalise_password(password)
        secret = normalised if _is_encodable(normalised) else ""
        # The dummy's secret is random and unknown, so this always fails; the answer is "no" anyway.
        with self._slots, contextlib.suppress(VerificationError):
            self._hasher.verify(self._dummy_hash, secret)
        return _REJECTED

    async def run_async(self, work: Callable[[], T]) -> T:
        """Run Argon2 work (calls to this hasher) on its pool: off the event loop, at most
        `max_concurrent` at once, the rest queued in order. Keep database transactions out of
        `work`: a hash inside one would hold its locks (SQLite's write lock) for the whole hash."""
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self.max_concurrent, thread_name_prefix="medvault-argon2")
            pool = self._pool
        return await asyncio.wrap_future(pool.submit(work))

    async def hash_async(self, password: str) -> str:
        """`hash` on the hasher's pool, so the event loop keeps serving other requests meanwhile."""
        return await self.run_async(partial(self.hash, password))

    async def verify_async(self, *, stored: str, password: str) -> VerifyResult:
        """`verify` on the hasher's pool, so the event loop keeps serving other requests meanwhile."""
        return await self.run_async(partial(self.verify, stored=stored, password=password))

    async def dummy_verify_async(self, password: str) -> VerifyResult:
        """`dummy_verify` on the hasher's pool (same pool and bound as `verify_async`)."""
        return await self.run_async(partial(self.dummy_verify, password))
