"""Password policy (NIST SP 800-63B-4) and Argon2id hashing: rules, properties, timing, event loop."""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
import unicodedata

import argon2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medvault.auth.errors import AuthError, PasswordRejected
from medvault.auth.passwords import (
    MEMORY_COST_KIB,
    PARALLELISM,
    TIME_COST,
    Hasher,
    PasswordPolicy,
    VerifyResult,
    check_new_password,
    common_passwords,
    meets_owasp_minimum,
    normalise_password,
)
from medvault.errors import MedvaultError

GOOD = "correct horse battery staple"
LENGTH_RULES = {"too-short", "too-long"}
CONTENT_RULES = {"blocklisted", "repetitive", "sequential", "context"}


def cheap_hasher(*, time_cost: int = 1) -> Hasher:
    # For tests whose subject is not the Argon2 cost: the production cost is tested separately.
    return Hasher(time_cost=time_cost, memory_cost=256, enforce_owasp_minimum=False)


CHEAP = cheap_hasher()


@pytest.fixture(scope="module")
def production_hasher() -> Hasher:
    return Hasher()


def rejected_rule(password: str, *, has_second_factor: bool = False, context_words: tuple[str, ...] = ()) -> str:
    with pytest.raises(PasswordRejected) as caught:
        check_new_password(password=password, has_second_factor=has_second_factor, context_words=context_words)
    # The rule is named; the password itself never appears in what gets logged or shown.
    assert password not in str(caught.value)
    assert password not in caught.value.message
    return caught.value.rule


# --- length -----------------------------------------------------------------------------------------


def test_fifteen_characters_without_a_second_factor() -> None:
    assert rejected_rule("tr0ub4dor&3xyz") == "too-short"  # 14
    assert check_new_password(password="tr0ub4dor&3xyzw", has_second_factor=False) == "tr0ub4dor&3xyzw"


def test_eight_characters_with_a_second_factor() -> None:
    assert rejected_rule("tr0ub4d", has_second_factor=True) == "too-short"
    assert check_new_password(password="tr0ub4dr", has_second_factor=True) == "tr0ub4dr"


def test_length_counts_code_points_after_nfkc() -> None:
    ligature = "correct \ufb01sh go"  # 14 code points; NFKC turns U+FB01 into "fi": 15
    assert len(ligature) == 14
    assert check_new_password(password=ligature, has_second_factor=False) == "correct fish go"
    combining = "cafe\u0301 au lait!!"  # 15 code points; NFKC composes e + U+0301 into one: 14
    assert len(combining) == 15
    assert len(normalise_password(combining)) == 14
    assert rejected_rule(combining) == "too-short"


def test_at_least_64_and_at_most_256_code_points() -> None:
    text = " ".join(f"line {i} of my long passphrase" for i in range(20))  # not periodic
    for length in (64, 256):
        password = text[:length]
        assert check_new_password(password=password, has_second_factor=False) == password
    assert rejected_rule(text[:257]) == "too-long"
    # Far too long is refused before any normalisation work.
    assert rejected_rule("x" * 100_000) == "too-long"


def test_no_composition_rules() -> None:
    for password in (GOOD, "CORRECTHORSEBATTERY", "4729183650192837", "ça va, mon vieux ?", "шифр для записи"):
        assert check_new_password(password=password, has_second_factor=False) == password


def test_lone_surrogates_are_not_text() -> None:
    assert rejected_rule(GOOD + "\ud800") == "not-text"


def test_policy_cannot_be_configured_below_the_standard() -> None:
    with pytest.raises(ValueError, match="at least 15"):
        PasswordPolicy(min_length=12)
    with pytest.raises(ValueError, match="at least 15"):
        PasswordPolicy(min_length_with_second_factor=6)
    with pytest.raises(ValueError, match="at least 64"):
        PasswordPolicy(max_length=63)


# --- blocklist and predictable passwords -----------------------------------------------------------


def test_blocklist_is_zxcvbns_password_list() -> None:
    blocklist = common_passwords()
    assert len(blocklist) == 30_000
    assert {"password", "123456", "iloveyou1", "1qaz2wsx3edc4rfv"} <= blocklist


def test_blocklisted_passwords_are_refused_case_insensitively() -> None:
    assert rejected_rule("1qaz2wsx3edc4rfv") == "blocklisted"
    assert rejected_rule("PasswordStandard") == "blocklisted"
    # Short blocklisted ones matter once a second factor lowers the minimum to 8.
    assert rejected_rule("Baseball1", has_second_factor=True) == "blocklisted"
    assert rejected_rule("ILOVEYOU1", has_second_factor=True) == "blocklisted"


@pytest.mark.parametrize(
    "password",
    [
        "aaaaaaaaaaaaaaa",
        "AaAaAaAaAaAaAaAa",
        "abababababababab",
        "abcabcabcabcabcabc",
        "aaaaaaaaaaaaaab",
        "horsehorsehorse",
    ],
)
def test_repetitive_passwords_are_refused(password: str) -> None:
    assert rejected_rule(password) == "repetitive"


@pytest.mark.parametrize(
    "password", ["123456789012345", "987654321098765", "abcdefghijklmnop", "ZYXWVUTSRQPONML", "xyzabcdefghijklm"]
)
def test_sequential_passwords_are_refused(password: str) -> None:
    assert rejected_rule(password) == "sequential"


def test_service_name_and_login_name_derivatives_are_refused() -> None:
    assert rejected_rule("medvault1234567") == "context"  # "medvault" + a blocklisted remainder
    assert rejected_rule("MedVault-MedVault") == "context"
    assert rejected_rule("medvault-2024-!!") == "context"
    login = ("jane.doe@example.org",)
    assert rejected_rule("Jane.Doe@Example.org", context_words=login) == "context"
    assert rejected_rule("JaneDoe2024!!!!!", context_words=login) == "context"
    assert rejected_rule("doe-jane-doe-jane", context_words=login) == "context"


def test_passphrases_that_merely_mention_a_context_word_are_fine() -> None:
    password = "my medvault passphrase is long enough"
    assert check_new_password(password=password, has_second_factor=False) == password
    password = "jane keeps her records tidy"
    assert check_new_password(password=password, has_second_factor=False, context_words=("jane",)) == password
    # Context words under three characters would match by chance and are ignored.
    assert check_new_password(password=GOOD, has_second_factor=False, context_words=("or",)) == GOOD


def test_password_rejected_is_an_auth_and_medvault_error() -> None:
    with pytest.raises(PasswordRejected) as caught:
        check_new_password(password="short", has_second_factor=False)
    assert isinstance(caught.value, AuthError)
    assert isinstance(caught.value, MedvaultError)
    assert caught.value.code == "invalid"
    assert caught.value.location == "password"


# --- properties --------------------------------------------------------------------------------------

# Lone surrogates are not text (tested above); the key is excluded so it stays unique in the second test.
_BODY = st.text(alphabet=st.characters(exclude_characters="\U0001f511", exclude_categories=["Cs"]), max_size=300)


@given(_BODY)
@settings(max_examples=300, deadline=None)
def test_any_text_is_accepted_as_its_nfkc_form_or_rejected_by_a_named_rule(password: str) -> None:
    normalised = unicodedata.normalize("NFKC", password)
    if len(normalised) < 15 or len(normalised) > 256:
        with pytest.raises(PasswordRejected) as caught:
            check_new_password(password=password, has_second_factor=False)
        assert caught.value.rule == ("too-short" if len(normalised) < 15 else "too-long")
        return
    try:
        assert check_new_password(password=password, has_second_factor=False) == normalised
    except PasswordRejected as exc:
        rule = exc.rule
        # In range, only what the password *is* can reject it, never what it lacks (no composition).
        assert rule in CONTENT_RULES


@given(_BODY)
@settings(max_examples=300, deadline=None)
def test_any_unpredictable_password_of_15_to_256_code_points_is_accepted(body: str) -> None:
    # "Zq7" and a final unique character make the text neither repetitive nor a run, and no entry of
    # the (ASCII) blocklist; no context words. Then length is the only thing left that could fail.
    password = "Zq7" + body + "\U0001f511"
    normalised = unicodedata.normalize("NFKC", password)
    policy = PasswordPolicy(service_words=())
    if 15 <= len(normalised) <= 256:
        assert policy.check(password=password, has_second_factor=False) == normalised
    else:
        with pytest.raises(PasswordRejected) as caught:
            policy.check(password=password, has_second_factor=False)
        assert caught.value.rule in LENGTH_RULES


@given(st.text(min_size=1, max_size=40))
@settings(max_examples=25, deadline=None)
def test_nfkc_equivalent_spellings_verify_against_the_same_hash(password: str) -> None:
    stored = CHEAP.hash(password)
    for form in ("NFC", "NFD", "NFKC", "NFKD"):
        assert CHEAP.verify(stored=stored, password=unicodedata.normalize(form, password)).ok


# --- hashing ---------------------------------------------------------------------------------------


def test_production_parameters_are_argon2id_at_or_above_owasp(production_hasher: Hasher) -> None:
    parameters = production_hasher.parameters
    assert parameters.type is argon2.Type.ID
    assert (parameters.time_cost, parameters.memory_cost, parameters.parallelism) == (3, 65536, 1)
    assert (TIME_COST, MEMORY_COST_KIB, PARALLELISM) == (3, 65536, 1)
    # OWASP Password Storage Cheat Sheet: m=19 MiB, t=2, p=1 (or m=12 MiB, t=3); ours is above both.
    assert parameters.memory_cost >= 19456
    assert parameters.time_cost >= 2
    stored = production_hasher.hash(GOOD)
    assert stored.startswith("$argon2id$v=19$m=65536,t=3,p=1$")
    assert production_hasher.verify(stored=stored, password=GOOD) == VerifyResult(ok=True, needs_rehash=False)


def test_parameters_below_owasp_are_refused() -> None:
    assert not meets_owasp_minimum(time_cost=2, memory_cost=8192)
    assert not meets_owasp_minimum(time_cost=1, memory_cost=19456)
    assert meets_owasp_minimum(time_cost=2, memory_cost=19456)
    assert meets_owasp_minimum(time_cost=3, memory_cost=12288)
    with pytest.raises(ValueError, match="OWASP"):
        Hasher(time_cost=2, memory_cost=8192)


def test_verify_matches_and_mismatches() -> None:
    stored = CHEAP.hash(GOOD)
    assert CHEAP.verify(stored=stored, password=GOOD) == VerifyResult(ok=True, needs_rehash=False)
    assert CHEAP.verify(stored=stored, password=GOOD.upper()) == VerifyResult(ok=False, needs_rehash=False)
    assert stored != CHEAP.hash(GOOD)  # salted


@pytest.mark.parametrize("stored", ["", "not a hash", "$argon2id$v=19$m=256,t=1,p=1$bad", "$2b$12$" + "x" * 53])
def test_verify_never_raises_on_a_damaged_hash(stored: str) -> None:
    assert CHEAP.verify(stored=stored, password=GOOD) == VerifyResult(ok=False, needs_rehash=False)


def test_verify_never_raises_on_a_lone_surrogate() -> None:
    stored = CHEAP.hash(GOOD)
    assert CHEAP.verify(stored=stored, password="\udc00") == VerifyResult(ok=False, needs_rehash=False)
    with pytest.raises(PasswordRejected):
        CHEAP.hash("\udc00")


def test_raised_parameters_ask_for_a_rehash_on_login() -> None:
    old = cheap_hasher(time_cost=1)
    new = cheap_hasher(time_cost=2)
    stored = old.hash(GOOD)
    assert new.verify(stored=stored, password=GOOD) == VerifyResult(ok=True, needs_rehash=True)
    rehashed = new.hash(GOOD)
    assert new.verify(stored=rehashed, password=GOOD) == VerifyResult(ok=True, needs_rehash=False)
    # A wrong password never asks for a rehash (that would tell the caller to store a wrong hash).
    assert new.verify(stored=stored, password="wrong") == VerifyResult(ok=False, needs_rehash=False)


def test_dummy_verify_rejects_and_uses_the_real_parameters() -> None:
    assert CHEAP.dummy_verify(GOOD) == VerifyResult(ok=False, needs_rehash=False)
    assert CHEAP.dummy_verify("") == VerifyResult(ok=False, needs_rehash=False)
    assert CHEAP.dummy_verify("\ud800") == VerifyResult(ok=False, needs_rehash=False)
    # `parameters` is read from the dummy hash itself: it costs what a real stored hash costs.
    assert CHEAP.parameters == argon2.extract_parameters(CHEAP.hash(GOOD))


def test_unknown_accounts_take_as_long_as_wrong_passwords(production_hasher: Hasher) -> None:
    stored = production_hasher.hash(GOOD)

    def timed(call: object) -> float:
        assert callable(call)
        start = time.perf_counter()
        call()
        return time.perf_counter() - start

    real: list[float] = []
    dummy: list[float] = []
    for _ in range(4):  # interleaved so machine load affects both alike
        real.append(timed(lambda: production_hasher.verify(stored=stored, password="wrong password")))
        dummy.append(timed(lambda: production_hasher.dummy_verify("wrong password")))
    ratio = statistics.median(dummy) / statistics.median(real)
    # Same Argon2 work: equal up to noise (a missing dummy would be ~1000x faster).
    assert 0.6 < ratio < 1.6, ratio


def test_verify_async_leaves_the_event_loop_free(production_hasher: Hasher) -> None:
    stored = production_hasher.hash(GOOD)

    async def ticks_during(work: object) -> tuple[int, object]:
        ticks = 0
        stop = False

        async def ticker() -> None:
            nonlocal ticks
            while not stop:
                ticks += 1
                await asyncio.sleep(0)

        task = asyncio.create_task(ticker())
        await asyncio.sleep(0)  # let the ticker start
        start_ticks = ticks
        assert callable(work)
        result = await work()
        stop = True
        await task
        return ticks - start_ticks, result

    async def in_thread() -> VerifyResult:
        return await production_hasher.verify_async(stored=stored, password=GOOD)

    async def on_the_loop() -> VerifyResult:
        return production_hasher.verify(stored=stored, password=GOOD)  # blocking, for contrast

    threaded_ticks, result = asyncio.run(ticks_during(in_thread))
    assert result == VerifyResult(ok=True, needs_rehash=False)
    # ~60-200 ms of Argon2: the loop keeps turning thousands of times meanwhile.
    assert threaded_ticks > 100, threaded_ticks
    blocked_ticks, _ = asyncio.run(ticks_during(on_the_loop))
    assert blocked_ticks <= 1, blocked_ticks


def test_async_hash_and_dummy_verify() -> None:
    async def main() -> tuple[VerifyResult, VerifyResult]:
        hasher = cheap_hasher()  # made per event loop: its capacity limiter binds to the loop
        stored = await hasher.hash_async(GOOD)
        return (
            await hasher.verify_async(stored=stored, password=GOOD),
            await hasher.dummy_verify_async(GOOD),
        )

    assert asyncio.run(main()) == (
        VerifyResult(ok=True, needs_rehash=False),
        VerifyResult(ok=False, needs_rehash=False),
    )


def test_concurrent_hashes_are_bounded_by_the_limiter() -> None:
    hasher = Hasher(time_cost=1, memory_cost=256, max_concurrent=2, enforce_owasp_minimum=False)
    running = 0
    peak = 0
    lock = threading.Lock()
    real_verify = hasher.verify

    def counting_verify(*, stored: str, password: str) -> VerifyResult:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.02)
        with lock:
            running -= 1
        return real_verify(stored=stored, password=password)

    hasher.verify = counting_verify  # type: ignore[method-assign]
    stored = hasher.hash(GOOD)

    async def main() -> list[VerifyResult]:
        return list(await asyncio.gather(*(hasher.verify_async(stored=stored, password=GOOD) for _ in range(8))))

    assert all(result.ok for result in asyncio.run(main()))
    assert peak == 2


def test_hashing_is_bounded_and_off_the_event_loop() -> None:
    """Five verifications at once on a hasher bounded to two: two run (in threads), three wait in
    its queue, and meanwhile the event loop still runs other work to completion, including a
    worker-thread call (the rest of a request). Synchronised by events, not by timing."""
    hasher = Hasher(time_cost=1, memory_cost=256, max_concurrent=2, enforce_owasp_minimum=False)
    stored = hasher.hash(GOOD)
    real_verify = hasher.verify
    release = threading.Event()
    lock = threading.Lock()
    running = peak = entered = 0
    threads: set[str] = set()

    async def main() -> list[VerifyResult]:
        loop = asyncio.get_running_loop()
        two_running = asyncio.Event()

        def blocking_verify(*, stored: str, password: str) -> VerifyResult:
            nonlocal running, peak, entered
            with lock:
                running += 1
                entered += 1
                peak = max(peak, running)
                threads.add(threading.current_thread().name)
                if running == 2:
                    loop.call_soon_threadsafe(two_running.set)
            try:
                assert release.wait(timeout=60), "never released"
                return real_verify(stored=stored, password=password)
            finally:
                with lock:
                    running -= 1

        hasher.verify = blocking_verify  # type: ignore[method-assign]
        pending = [asyncio.ensure_future(hasher.verify_async(stored=stored, password=GOOD)) for _ in range(5)]
        await asyncio.wait_for(two_running.wait(), timeout=60)
        # Two hashes hold their threads: the loop is free, and other requests' thread work runs.
        other = await asyncio.wait_for(asyncio.to_thread(lambda: "other request served"), timeout=60)
        assert other == "other request served"
        with lock:
            assert (running, entered) == (2, 2)  # the other three are queued, not running
        assert not any(task.done() for task in pending)
        release.set()
        return list(await asyncio.wait_for(asyncio.gather(*pending), timeout=60))

    try:
        results = asyncio.run(main())
    finally:
        release.set()
    assert all(r.ok for r in results)
    assert (peak, entered) == (2, 5)
    assert threads
    assert all(name.startswith("medvault-argon2") for name in threads)
    assert threading.main_thread().name not in threads
