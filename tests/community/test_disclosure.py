"""The disclosure check (issue 5 item 3): per-kind cases incl. tricky negatives, properties, accuracy on
the labelled set (bench/disclosure_set.py), and that it never touches the network."""

from __future__ import annotations

import hashlib
import itertools
import json
import socket
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medvault.community import disclosure
from medvault.community.disclosure import Finding, ProfileFacts, check

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import bench_disclosure  # noqa: E402
import disclosure_set  # noqa: E402


def spans(text: str, kind: str, context: ProfileFacts | None = None) -> list[str]:
    return [text[f.start : f.end] for f in check(text, context=context) if f.kind == kind]


def kinds(text: str) -> set[str]:
    return {f.kind for f in check(text)}


# ------------------------------------------------------------------------------------------ e-mail


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("write to ann.lee@gmail.com today", "ann.lee@gmail.com"),
        ("mail annlee+forum@mail.example.org.", "annlee+forum@mail.example.org"),
        ("(a.lee99@cs.uni-example.edu)", "a.lee99@cs.uni-example.edu"),
        ("reach me: ann dot lee at gmail dot com thanks", "ann dot lee at gmail dot com"),
        ("annl [at] yahoo [dot] com", "annl [at] yahoo [dot] com"),
        ("email me at ann.lee(at)gmail.com if you like", "ann.lee(at)gmail.com"),
    ],
)
def test_email_addresses_are_found_also_with_tags_subdomains_and_spelled_out(text: str, expected: str) -> None:
    assert spans(text, "email") == [expected]


@pytest.mark.parametrize(
    "text", ["I was at home all day.", "Look at gmail.com for the form.", "Meet at 5 at the clinic.", "@annlee"]
)
def test_everyday_at_and_domains_are_not_email(text: str) -> None:
    assert "email" not in kinds(text)


# ------------------------------------------------------------------------------------------- phone


@pytest.mark.parametrize(
    "number",
    [
        "(555) 867-5309",
        "555.867.5309",
        "555-867-5309",
        "+44 20 7946 0958",
        "+1-202-555-0143",
        "020 7946 0958",
        "07700 900123",
        "+33 1 42 68 53 00",
        "2 0 2 5 5 5 0 1 4 3",
        "two oh two, five five five, oh one four three",
    ],
)
def test_phone_formats(number: str) -> None:
    assert spans(f"Call me on {number} after six.", "phone") == [number]


@pytest.mark.parametrize(
    "text",
    [
        "I take 500 mg of metformin, up to 1,000 mg.",
        "Born 03/14/1975, diagnosed 2019-06-15.",
        "Between 1998-2004 I saw six doctors.",
        "Platelets 150,000 and white count 4,500,000 per mL.",
        "BP 130/85, HbA1c 6.5, TSH 4.52.",
        "My zip is 90210 and the ZIP+4 78701-1234.",
        "I walk 10,000 steps and drove 12000 miles.",
        "Vitamin D 50000 IU weekly.",
    ],
)
def test_doses_lab_values_years_dates_and_zip_codes_are_not_phones(text: str) -> None:
    assert "phone" not in kinds(text)


# ----------------------------------------------------------------------------------- street address


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("I live at 42 Maple so it is close.", "42 Maple"),
        ("We are at 221B Baker these days.", "221B Baker"),
        ("Apt 4, 17 Elm is where we moved.", "Apt 4, 17 Elm"),
        ("Send it to 1600 Pennsylvania Avenue, please.", "1600 Pennsylvania Avenue"),
        ("Our flat at 12 Kings Road, Flat 3 is cold.", "12 Kings Road, Flat 3"),
        ("Mail to PO Box 1432 and I will pay.", "PO Box 1432"),
        ("I'm at 350 W 42nd St now.", "350 W 42nd St"),
    ],
)
def test_street_addresses_with_and_without_suffixes(text: str, expected: str) -> None:
    assert spans(text, "street-address") == [expected]


@pytest.mark.parametrize(
    "text",
    ["Took 2 Tylenol and 1 Benadryl.", "Stage 3 was scary.", "I take 500 mg twice a day.", "Type 2 since 2015."],
)
def test_numbers_before_capitalised_words_are_not_addresses(text: str) -> None:
    assert "street-address" not in kinds(text)


# --------------------------------------------------------------------------------------- postcodes


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Austin, TX 78701 is home.", "78701"),
        ("Postcode SW1A 1AA, London.", "SW1A 1AA"),
        ("We are in K1A 0B1.", "K1A 0B1"),
        ("my zip code is 60614 if that helps", "60614"),
        ("Bend, Oregon 97701-9177", "97701-9177"),
    ],
)
def test_postcodes(text: str, expected: str) -> None:
    assert spans(text, "postcode") == [expected]


def test_counts_and_years_are_not_postcodes() -> None:
    assert "postcode" not in kinds("In 2019 I walked 10000 steps a day and paid 15000 in copays.")


# ------------------------------------------------------------------------------------------- names


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("My husband Bill drove me.", ["Bill"]),
        ("I told Grace about it last night.", ["Grace"]),
        ("My daughter Hope keeps me going.", ["Hope"]),
        ("My neurologist, Dr. Okafor, is kind.", ["Okafor"]),
        ("I'm Rose, three years in.", ["Rose"]),
        ("My name is Will Turner and I just joined.", ["Will Turner"]),
        ("my husband james thinks so", ["james"]),
        ("Thanks everyone, Siobhan", ["Siobhan"]),
        ("Maria Garcia said the same.", ["Maria Garcia"]),
    ],
)
def test_personal_names_including_common_words_by_context(text: str, expected: list[str]) -> None:
    assert spans(text, "person-name") == expected


@pytest.mark.parametrize(
    "text",
    [
        "I hope this gets better. I will ask my doctor.",
        "Hope this helps someone.",
        "Will this ever end?",
        "The bill from the hospital was huge, even with a grace period.",
        "My blood sugar rose to 240. It has been a joy.",
        "In May I start the new infusion.",
        "I have Crohn's and my mom had Parkinson's disease.",
        "Graves' disease and Bell's palsy run in the family.",
        "I moved from Austin to a smaller place.",
        "My doctor said it is fine.",
    ],
)
def test_common_words_eponyms_and_places_are_not_names(text: str) -> None:
    assert spans(text, "person-name") == []


# ------------------------------------------------------------------------------------------- dates


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Born 03/14/1975 in spring.", "03/14/1975"),
        ("Surgery on 3 March 2024 went well.", "3 March 2024"),
        ("It was March 3, 2024 when it started.", "March 3, 2024"),
        ("My birthday is July 4th, funnily.", "July 4th"),
        ("Diagnosed 2021-06-15.", "2021-06-15"),
        ("It started on the 14th of March.", "the 14th of March"),
    ],
)
def test_exact_dates(text: str, expected: str) -> None:
    assert spans(text, "exact-date") == [expected]


def test_years_month_years_fractions_and_pressures_are_not_exact_dates() -> None:
    text = "In 2019, then March 2024: 1/2 tablet, pain 7/10, BP 130/85, care 24/7."
    assert "exact-date" not in kinds(text)


# ----------------------------------------------------------------------------------- organisations


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("I work at Acme Logistics and they are kind.", "Acme Logistics"),
        ("I'm a teacher at Lincoln High School.", "Lincoln High School"),
        ("My wife is a nurse at St. Mary's Hospital.", "St. Mary's Hospital"),
        ("I study at the University of Leeds.", "University of Leeds"),
    ],
)
def test_employers_and_schools(text: str, expected: str) -> None:
    assert spans(text, "organisation") == [expected]


def test_places_of_care_and_working_from_home_are_not_employers() -> None:
    assert "organisation" not in kinds("We went to the Mayo Clinic. I work from home now. Medicare paid.")


# ----------------------------------------------------------------------------------- combinations


def test_age_sex_town_and_rare_diagnosis_together_are_a_combination() -> None:
    text = "I'm a 34-year-old woman in Bozeman with Erdheim-Chester disease."
    assert spans(text, "combination") == ["34-year-old woman in Bozeman with Erdheim-Chester disease"]


def test_two_facts_or_a_common_diagnosis_are_not_a_combination() -> None:
    assert spans("34F with asthma, any tips?", "combination") == []
    assert spans("Anyone in Bozeman with Castleman disease?", "combination") == []


def test_profile_facts_complete_a_combination() -> None:
    text = "Anyone in Bozeman with Castleman disease?"
    shown = ProfileFacts(age=41, sex="female")
    assert spans(text, "combination", shown) == ["Bozeman with Castleman disease"]
    # the profile's rare diagnosis counts too; a common one does not
    assert spans("I'm 41, female.", "combination", ProfileFacts(diagnosis="myasthenia gravis")) != []
    assert spans("I'm 41, female.", "combination", ProfileFacts(diagnosis="asthma")) == []


# ------------------------------------------------------------------------------------- properties

_FRAGMENTS = st.sampled_from(
    [
        "Call (555) 867-5309.",
        "my husband Bill",
        "I live at 42 Maple",
        "ann.lee@gmail.com",
        "born 03/14/1975",
        "34F in Bozeman with Castleman disease",
        "I work at Acme Logistics",
        "SW1A 1AA",
        "500 mg",
        "Hope",
        "\u2019s",
        " ",
        "\n",
        "",
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=400), st.lists(st.one_of(_FRAGMENTS, st.text(max_size=12))).map("".join)))
def test_findings_are_sorted_in_range_non_empty_and_only_combinations_overlap(text: str) -> None:
    findings = check(text)
    assert findings == sorted(findings, key=lambda f: (f.start, f.end))
    for f in findings:
        assert 0 <= f.start < f.end <= len(text)
        assert text[f.start : f.end].strip()
    plain = [f for f in findings if f.kind != "combination"]
    for a, b in itertools.pairwise(plain):
        assert a.end <= b.start


@settings(max_examples=100, deadline=None)
@given(st.text(min_size=1, max_size=60))
def test_messages_never_echo_what_was_written(secret: str) -> None:
    text = f"My name is Maria {secret} and I live at 42 Maple, call (555) 867-5309 or {secret}@gmail.com"
    for f in check(text, context=ProfileFacts(town=secret, diagnosis=secret)):
        assert isinstance(f, Finding)
        assert f.message in disclosure._MESSAGES.values()


# --------------------------------------------------------------------------------- accuracy, offline


def test_the_labelled_set_is_the_frozen_one() -> None:
    # the set was frozen before the detector was written: a changed label must be a visible decision
    posts = disclosure_set.posts()
    rows = [(p.id, p.text, [[g.kind, g.start, g.end] for g in p.gold], p.context) for p in posts]
    digest = hashlib.sha256(json.dumps(rows).encode()).hexdigest()
    assert len(posts) == 560
    assert digest == "24310e85ef37791c3515082f8ee4f789d5d27e286b7efe2db7247ca1bdc4561b"


@pytest.mark.parametrize("part", ["dev", "held-out"])
def test_accuracy_on_the_labelled_set_meets_the_acceptance_targets(part: str) -> None:
    with bench_disclosure.no_network() as attempts:
        scores, _ = bench_disclosure.evaluate(disclosure_set.posts(part))
    assert attempts == []
    for kind in bench_disclosure.TARGET_KINDS:
        s = scores[kind]
        assert s.gold >= 50, kind
        assert s.recall >= 0.90, (kind, s.recall)
        assert s.precision >= 0.80, (kind, s.precision)


def test_the_check_loads_its_lists_and_runs_without_any_network_call() -> None:
    for cached in (disclosure._lex, disclosure._places, disclosure._rare):
        cached.cache_clear()  # the lists are read inside the guard, not before it
    with bench_disclosure.no_network() as attempts:
        findings = check("I'm a 34-year-old woman in Bozeman with Castleman disease, call (555) 867-5309.")
        with pytest.raises(bench_disclosure.NetworkCall):
            socket.create_connection(("127.0.0.1", 9))
    assert {f.kind for f in findings} == {"combination", "phone"}
    assert len(attempts) == 1  # only our own probe, which shows the guard works


# ------------------------------------------------------------------------ adversarial input (M6)

N = 20_000
ADVERSARIAL = {
    "dot dot": " dot" * (N // 4),
    "word dot": "a" + " dot a" * (N // 6),
    "at then dots": "a at " + "a dot " * (N // 6),
    "bracket dots": "a [dot] " * (N // 8),
    "paren dots": "a (dot) " * (N // 8),
    "at at": "a at " * (N // 5),
    "at dot": "a dot a at " * (N // 11),
    "bracket at": "a (at) b " * (N // 9),
    "email many dots": "a@" + "a." * (N // 2 - 1) + "1",
    "digits+spaces": "1 " * (N // 2),
    "Capitalised words": "Ann " * (N // 4),
    "street words": "12 Elm Elm Elm " * (N // 15),
}


def _cpu_seconds(fn: object, text: str) -> float:
    """CPU time of one call (process time, so other engineers' load on the shared cores does not count)."""
    assert callable(fn)
    t0 = time.process_time()
    fn(text)
    return time.process_time() - t0


@pytest.mark.parametrize("name", sorted(ADVERSARIAL))
def test_adversarial_20k_inputs_finish_in_linear_time(name: str) -> None:
    text = ADVERSARIAL[name]
    assert len(text) >= N - 20
    # The obfuscated-address search used to be quadratic: " dot" * 5000 cost ~4 s, "a dot a" ~2 s.
    # Now ~0.03 s; the bounds are generous (x15) but far below the old cost.
    assert _cpu_seconds(lambda t: list(disclosure._emails(t)), text) < 0.5
    assert _cpu_seconds(check, text) < 2.0


def test_the_obfuscated_pattern_only_runs_near_an_at() -> None:
    assert disclosure._at_windows(" dot" * 5000) == []
    text = "x " * 3000 + "ann dot lee at gmail dot com" + " y" * 3000
    [(start, end)] = disclosure._at_windows(text)
    assert end - start <= 2 * disclosure._OBFUSCATED_REACH + 10
    assert spans(text, "email") == ["ann dot lee at gmail dot com"]


@pytest.mark.parametrize("segments", [1, 3, 5])
def test_long_obfuscated_addresses_are_still_found_whole_inside_their_window(segments: int) -> None:
    label = "q" * 60
    user = " dot ".join([label] * segments)
    address = f"{user} [at] {label} dot {label} dot co dot uk"
    text = "filler " * 2000 + address + " filler" * 2000
    assert spans(text, "email") == [address]
