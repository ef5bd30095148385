"""A labelled set of synthetic patient-forum posts for the disclosure check (issue 5 item 3).

Written and frozen BEFORE the detector (`medvault.community.disclosure`) was built, so that its figures
are not tuned to the detector: the templates, word lists and labels below were not changed after the
detector's first run. Deterministic: `posts()` is the same list on every machine (seeded `random.Random`,
no hashing of sets, no clock).

Two parts that share no template, no name, no street and no employer:

* ``dev``      — template set A, seed 1105, 360 posts: the part the detector was developed against.
* ``held-out`` — template set B, seed 2718, 200 posts: written at the same time, looked at only to
  report its figures.

Gold spans, one kind each (the detector's `FindingKind`s):

* ``email``          the address, also obfuscated ("ann dot lee at gmail dot com").
* ``phone``          the number as written, from the first digit (or "+", or "(") to the last digit;
                     spelled-out digits count too.
* ``street-address`` house number (with letter) + street name (+ suffix) (+ unit); a leading
                     "Apt 4, " / "Flat 2, " is part of it; a PO box; NOT the town, state or ZIP after it.
* ``postcode``       a ZIP / ZIP+4 / UK / Canadian / other postcode that is written as one (ZIP after a
                     state, after "zip"/"postcode", or in a shape no count has).
* ``person-name``    a personal name (first, last or both; titles such as "Dr." are outside the span),
                     incl. names that are common words ("my wife Grace"), a clinician's name, a name
                     written in lower case after "my husband". Eponyms of diseases ("Crohn's") are not.
* ``exact-date``     a date to the day (birth dates, "on 3 March 2024", "03/14/1975", "July 4th").
                     Month + year, a year, a blood pressure "130/85" or "1/2 tablet" are not.
* ``organisation``   the author's or a relative's employer or school. Hospitals where someone is
                     treated, regulators and insurers are not (they identify nobody).
* ``combination``    facts in one sentence that together narrow the author down: at least 3 of
                     {age, sex, town, rare diagnosis}, counting facts from the author's public profile
                     (`Post.context`) when the sentence holds at least one of them. The span runs from
                     the first to the last such fact in the sentence.

Negatives are mixed in everywhere: doses ("500 mg"), lab values, blood pressures, years, counts that
look like ZIP codes, fractions, "I hope", "will", "bill", "grace period", "in May", eponyms, places that
are also first names ("Austin", "Charlotte"), clinic and drug names.
"""

from __future__ import annotations

import json
import random
import string
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field

Piece = tuple[str, str | None]  # (text, kind or None)


@dataclass(frozen=True)
class Gold:
    kind: str
    start: int
    end: int


@dataclass(frozen=True)
class Post:
    id: str
    split: str
    text: str
    gold: tuple[Gold, ...]
    context: dict[str, object] | None = None


# ---------------------------------------------------------------------------------------------- lexicons
# Set A (dev) and set B (held-out) share no entry in the identifying lists.

A_FIRST = [
    "Maria",
    "James",
    "Linda",
    "Robert",
    "Jennifer",
    "Michael",
    "Susan",
    "David",
    "Karen",
    "Thomas",
    "Priya",
    "Mohammed",
    "Aoife",
    "Kwame",
    "Mei",
    "Diego",
    "Fatima",
    "Olga",
    "Tomasz",
    "Siobhan",
    "Brandon",
    "Kayla",
    "Tyler",
    "Destiny",
    "Emily",
    "Jake",
    "Nicole",
    "Carlos",
    "Ana",
    "Wei",
]
A_WORD_FIRST = ["Rose", "Hope", "Bill", "Grace", "Will", "Faith", "Joy", "Mark", "Dawn", "Frank", "Sandy", "Ruby"]
A_LAST = [
    "Smith",
    "Johnson",
    "Garcia",
    "Patel",
    "Nguyen",
    "O'Brien",
    "Kowalski",
    "Okafor",
    "Chen",
    "Rodriguez",
    "Miller",
    "Anderson",
    "Thompson",
    "Murphy",
    "Hernandez",
    "Kim",
    "Walsh",
    "Schmidt",
    "Adeyemi",
    "Brooks",
]
A_STREET = [
    "Maple",
    "Oak",
    "Elm",
    "Pine",
    "Cedar",
    "Baker",
    "Main",
    "Washington",
    "Lake",
    "Hillcrest",
    "Church",
    "Willow",
]
A_SUFFIX = ["Street", "St", "Avenue", "Ave", "Road", "Rd", "Lane", "Drive", "Court", "Blvd", "Way", "Place"]
A_COMPANY = [
    "Acme Logistics",
    "Brightwater Foods",
    "Northwind Traders",
    "Pinecrest Credit Union",
    "Halvorsen Dental Group",
    "Tri-County Transit",
    "Keystone Insurance Partners",
    "Redline Auto Parts",
    "Summit Software",
    "Greenleaf Pharmacy",
]
A_SCHOOL = [
    "Lincoln High School",
    "Jefferson Middle School",
    "Ohio State University",
    "Riverside Community College",
    "St. Anne's Primary School",
    "Westbrook Elementary",
    "the University of Leeds",
    "Franklin Academy",
]
A_TOWN = [
    ("Bozeman", "Montana", "MT", "59715"),
    ("Ithaca", "New York", "NY", "14850"),
    ("Marquette", "Michigan", "MI", "49855"),
    ("Moab", "Utah", "UT", "84532"),
    ("Taos", "New Mexico", "NM", "87571"),
    ("Kendal", None, None, "LA9 4PU"),
    ("Hexham", None, None, "NE46 1BL"),
    ("Bend", "Oregon", "OR", "97701"),
    ("Stowe", "Vermont", "VT", "05672"),
]
A_RARE = [
    "Erdheim-Chester disease",
    "Castleman disease",
    "myasthenia gravis",
    "Takayasu arteritis",
    "acromegaly",
    "neuromyelitis optica",
    "Ehlers-Danlos syndrome",
    "pulmonary arterial hypertension",
    "cystic fibrosis",
]
A_DOMAINS = ["gmail.com", "yahoo.com", "outlook.com", "protonmail.ch", "mail.example.org", "cs.uni-example.edu"]

B_FIRST = [
    "Patricia",
    "William",
    "Barbara",
    "Richard",
    "Elizabeth",
    "Joseph",
    "Jessica",
    "Charles",
    "Sarah",
    "Daniel",
    "Anjali",
    "Yusuf",
    "Niamh",
    "Chidi",
    "Hiroshi",
    "Lucia",
    "Oksana",
    "Rafael",
    "Thandiwe",
    "Magnus",
    "Courtney",
    "Dustin",
    "Brianna",
    "Austin",
    "Megan",
    "Luis",
    "Sofia",
    "Jamal",
    "Ingrid",
    "Bao",
]
B_WORD_FIRST = ["May", "June", "Amber", "Pat", "Iris", "Holly", "Penny", "Jack", "Summer", "Guy", "Chase", "Art"]
B_LAST = [
    "Williams",
    "Brown",
    "Jones",
    "Davis",
    "Wilson",
    "Lopez",
    "Shah",
    "Tran",
    "Novak",
    "Mensah",
    "Taylor",
    "Moore",
    "Clark",
    "Lewis",
    "Sullivan",
    "Park",
    "Byrne",
    "Weber",
    "Oyelaran",
    "Fitzgerald",
]
B_STREET = [
    "Magnolia",
    "Sycamore",
    "Juniper",
    "Dogwood",
    "Aspen",
    "Rosewood",
    "Fairview",
    "Highland",
    "Orchard",
    "Harbor",
    "Prospect",
    "Beacon",
]
B_SUFFIX = ["Terrace", "Circle", "Cir", "Boulevard", "Parkway", "Pkwy", "Trail", "Ct", "Ln", "Dr", "Close", "Crescent"]
B_COMPANY = [
    "Meridian Freight",
    "Bluebird Bakery",
    "Castlerock Mutual",
    "Oakridge Home Health",
    "Vantage Data Systems",
    "Kessler Tool & Die",
    "Silverline Telecom",
    "Harborview Marine Supply",
    "Lumen Print Works",
    "Cobalt Energy Co",
]
B_SCHOOL = [
    "Roosevelt High School",
    "Eastside Middle School",
    "Penn State",
    "Lakeview Community College",
    "Holy Cross Catholic School",
    "Maplewood Elementary",
    "the University of Glasgow",
    "Central Technical Institute",
]
B_TOWN = [
    ("Sedona", "Arizona", "AZ", "86336"),
    ("Hood River", "Oregon", "OR", "97031"),
    ("Bar Harbor", "Maine", "ME", "04609"),
    ("Whitby", None, None, "YO21 1DH"),
    ("Ely", "Minnesota", "MN", "55731"),
    ("Nelson", None, None, "V1L 4E4"),
    ("Paducah", "Kentucky", "KY", "42001"),
    ("Laramie", "Wyoming", "WY", "82070"),
    ("Keene", "New Hampshire", "NH", "03431"),
]
B_RARE = [
    "Gaucher disease",
    "Fabry disease",
    "Pompe disease",
    "dermatomyositis",
    "Wilson's disease",
    "stiff person syndrome",
    "granulomatosis with polyangiitis",
    "systemic mastocytosis",
    "AL amyloidosis",
]
B_DOMAINS = ["hotmail.com", "icloud.com", "yahoo.co.uk", "fastmail.fm", "alumni.example.ac.uk", "web.de"]

US_AREA = ["212", "312", "415", "617", "202", "713", "503", "404", "555", "305", "206", "720"]


@dataclass
class Lex:
    first: list[str]
    word_first: list[str]
    last: list[str]
    street: list[str]
    suffix: list[str]
    company: list[str]
    school: list[str]
    town: list[tuple[str, str | None, str | None, str]]
    rare: list[str]
    domains: list[str]
    templates: dict[str, list[str]] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------- fillers


def _d(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(string.digits) for _ in range(n))


def _sub(rng: random.Random) -> str:
    return rng.choice("23456789") + _d(rng, 6)


class Fill:
    """Slot fillers: each returns pieces with their gold kind (None for unlabelled text)."""

    def __init__(self, rng: random.Random, lex: Lex) -> None:
        self.rng = rng
        self.lex = lex

    def first(self) -> list[Piece]:
        pool = self.lex.word_first if self.rng.random() < 0.35 else self.lex.first
        return [(self.rng.choice(pool), "person-name")]

    def word_first(self) -> list[Piece]:
        return [(self.rng.choice(self.lex.word_first), "person-name")]

    def last(self) -> list[Piece]:
        return [(self.rng.choice(self.lex.last), "person-name")]

    def full(self) -> list[Piece]:
        pool = self.lex.word_first if self.rng.random() < 0.25 else self.lex.first
        return [(f"{self.rng.choice(pool)} {self.rng.choice(self.lex.last)}", "person-name")]

    def lower_first(self) -> list[Piece]:
        return [(self.rng.choice(self.lex.first).lower(), "person-name")]

    def email(self) -> list[Piece]:
        r = self.rng
        f, last = r.choice(self.lex.first).lower(), r.choice(self.lex.last).lower().replace("'", "")
        dom = r.choice(self.lex.domains)
        style = r.randrange(9)
        if style == 0:
            text = f"{f}.{last}@{dom}"
        elif style == 1:
            text = f"{f}{last}+{r.choice(['forum', 'health', 'mv', 'spam'])}@{dom}"
        elif style == 2:
            text = f"{f[0]}.{last}{r.randrange(10, 99)}@{dom}"
        elif style == 3:
            text = f"{f}_{r.randrange(1970, 2005)}@{dom}"
        elif style == 4:
            text = f"{f.capitalize()}.{last.capitalize()}@{dom}"
        elif style == 5:
            text = f"{f} dot {last} at {dom.replace('.', ' dot ')}"
        elif style == 6:
            text = f"{f}{last[0]} [at] {dom.split('.')[0]} [dot] {dom.split('.', 1)[1]}"
        elif style == 7:
            text = f"{f}.{last}(at){dom}"
        else:
            text = f"{last}{r.randrange(1, 999)}@{dom}"
        return [(text, "email")]

    def phone(self) -> list[Piece]:
        r = self.rng
        a = r.choice(US_AREA)
        x, y = _d(r, 3), _d(r, 4)
        x = r.choice("23456789") + x[1:]
        words = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
        style = r.randrange(14)
        text = [
            f"({a}) {x}-{y}",
            f"{a}.{x}.{y}",
            f"{a}-{x}-{y}",
            f"+1-{a}-{x}-{y}",
            f"1 ({a}) {x}-{y}",
            f"{a} {x} {y}",
            f"+1 {a} {x} {y}",
            f"+44 20 {_d(r, 4)} {_d(r, 4)}",
            f"07{_d(r, 3)} {_d(r, 6)}",
            f"+44 7{_d(r, 3)} {_d(r, 6)}",
            r.choice(
                [
                    f"+61 2 {_d(r, 4)} {_d(r, 4)}",
                    f"+49 30 {_d(r, 8)}",
                    f"+33 1 {_d(r, 2)} {_d(r, 2)} {_d(r, 2)} {_d(r, 2)}",
                    f"+91 9{_d(r, 4)} {_d(r, 5)}",
                    f"+353 1 {_d(r, 3)} {_d(r, 4)}",
                ]
            ),
            " ".join(a + x + y),
            ", ".join(" ".join(words[int(c)] for c in part) for part in (a, x, y)),
            f"{a}{x}{y}",
        ][style]
        return [(text, "phone")]

    def street_core(self) -> str:
        r = self.rng
        num = str(r.choice([r.randrange(1, 99), r.randrange(100, 999), r.randrange(1000, 19999)]))
        return f"{num} {r.choice(self.lex.street)} {r.choice(self.lex.suffix)}"

    def address(self) -> list[Piece]:
        r = self.rng
        style = r.randrange(8)
        if style == 0:
            return [(self.street_core(), "street-address")]
        if style == 1:
            return [(f"{r.randrange(1, 400)} {r.choice(self.lex.street)}", "street-address")]  # no suffix
        if style == 2:
            return [(f"{r.randrange(10, 400)}{r.choice('ABCD')} {r.choice(self.lex.street)}", "street-address")]
        if style == 3:
            unit = r.choice(["Apt", "Apt.", "Unit", "Flat", "#"])
            sep = "" if unit == "#" else " "
            return [
                (
                    f"{unit}{sep}{r.randrange(1, 30)}, {r.randrange(1, 200)} {r.choice(self.lex.street)}",
                    "street-address",
                )
            ]
        if style == 4:
            town, _state, st, zipc = r.choice([t for t in self.lex.town if t[2]])
            assert st is not None
            return [(self.street_core(), "street-address"), (f", {town}, {st} ", None), (zipc, "postcode")]
        if style == 5:
            return [(f"{self.street_core()}, Apt {r.randrange(1, 40)}{r.choice(['', 'B'])}", "street-address")]
        if style == 6:
            return [(f"PO Box {r.randrange(100, 9999)}", "street-address")]
        d = r.choice(["W", "E", "N", "S", "West", "East"])
        n = r.randrange(2, 120)
        suf = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
        return [(f"{r.randrange(10, 999)} {d} {n}{suf} {r.choice(['St', 'Street', 'Ave'])}", "street-address")]

    def postcode(self) -> list[Piece]:
        r = self.rng
        town, state, st, zipc = r.choice(self.lex.town)
        style = r.randrange(4)
        if style == 0 and st:
            return [(f"{town}, {st} ", None), (zipc, "postcode")]
        if style == 1 and st:
            return [(f"{town}, {state} ", None), (f"{zipc}-{_d(r, 4)}", "postcode")]
        if style == 2:
            return [(zipc, "postcode")]
        return [
            (
                r.choice(["SW1A 2AA", "M1 1AE", "EH8 9YL", "B33 8TH", "K1A 0B6", "M5V 3L9", "CF10 1EP", "H2X 1Y4"]),
                "postcode",
            )
        ]

    def date(self) -> list[Piece]:
        r = self.rng
        months = [
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
        ]
        m, d, y = r.randrange(1, 13), r.randrange(1, 29), r.randrange(1948, 2026)
        mon = months[m - 1]
        suf = "th" if 10 <= d <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(d % 10, "th")
        text = [
            f"{m:02d}/{d:02d}/{y}",
            f"{m}/{d}/{y % 100:02d}",
            f"{d} {mon} {y}",
            f"{mon} {d}, {y}",
            f"{y}-{m:02d}-{d:02d}",
            f"{mon} {d}{suf}",
            f"the {d}{suf} of {mon}",
            f"{d}.{m}.{y}",
            f"{mon[:3]} {d} {y}",
        ][r.randrange(9)]
        return [(text, "exact-date")]

    def company(self) -> list[Piece]:
        return [(self.rng.choice(self.lex.company), "organisation")]

    def school(self) -> list[Piece]:
        s = self.rng.choice(self.lex.school)
        if s.startswith("the "):
            return [("the ", None), (s[4:], "organisation")]
        return [(s, "organisation")]

    # facts for combinations: returned unlabelled, labelled by the sentence builder
    def age_sex(self) -> tuple[str, int, int]:
        r = self.rng
        age = r.randrange(19, 78)
        fem = r.random() < 0.6
        style = r.randrange(5)
        if style == 0:
            return f"{age}{'F' if fem else 'M'}", 1, 1
        if style == 1:
            return f"a {age}-year-old {'woman' if fem else 'man'}", 1, 1
        if style == 2:
            return f"{age} yo {'female' if fem else 'male'}", 1, 1
        if style == 3:
            return f"{age}, {'female' if fem else 'male'}", 1, 1
        return f"{age} years old", 1, 0

    def town(self) -> str:
        return self.rng.choice(self.lex.town)[0]


# ------------------------------------------------------------------------------------------- sentences

A_NEUTRAL = [
    "I take 500 mg of metformin twice a day and the stomach issues are finally calming down.",
    "My A1c went from 8.2 to 6.9 in about four months.",
    "Last TSH was 4.52 and free T4 1.1, so they are keeping the dose at 75 mcg.",
    "Platelets were 150,000 which my doctor said is on the low side of normal.",
    "BP was 130/85 this morning, better than last week.",
    "I hope this gets better soon, the fatigue is brutal.",
    "Hope this helps someone who is where I was in 2019.",
    "Will this ever end? Some days I honestly don't know.",
    "I will ask about it at my next appointment.",
    "The bill from the hospital was over $4,200 even after insurance.",
    "They gave me a 30 day grace period on the payment, thank goodness.",
    "By the grace of God I made it through the first round of chemo.",
    "My blood sugar rose to 240 after the steroid shot.",
    "I was diagnosed with Crohn's in 2015 and started Humira in 2017.",
    "Anyone with Hashimoto's find that Synthroid brand works better than generic?",
    "My mom had Parkinson's and I worry about it a lot.",
    "I walk 10,000 steps a day, or at least I try to.",
    "We drove about 12000 miles last year going to appointments.",
    "Took 2 Tylenol and 1 Benadryl and slept for 10 hours.",
    "Vitamin D was 18 so they put me on 50000 IU weekly for 8 weeks.",
    "I cut the pills in half (1/2 tablet) because the full dose made me dizzy.",
    "Stage 3 was the scariest word I had ever heard.",
    "I moved from Austin to a smaller place a few years ago and the heat was part of it.",
    "We went to the Mayo Clinic for a second opinion and it was worth every mile.",
    "Medicare covered most of it, the rest went on a payment plan.",
    "In May I start the new infusion every 8 weeks.",
    "My sed rate was 42 and CRP 12.5, both up from March.",
    "Honestly the support on this forum means so much to me.",
    "Does anyone else get joint pain that moves around from day to day?",
    "I lost 15 lbs without trying and that is what finally got me tested.",
    "The neurologist wants an MRI with contrast before changing anything.",
    "I keep a symptom diary now, it helps at appointments.",
    "Prednisone 40 mg tapering by 5 mg every week, day 12 today.",
    "ANA was positive at 1:160, speckled pattern.",
    "Between 2008 and 2012 I saw six different specialists.",
    "It has been a joy to finally sleep through the night.",
    "Summer is always worse for me, the heat wipes me out.",
    "Sending hugs to everyone having a rough week.",
    "My eGFR dropped to 58 so they lowered the dose to 250 mg.",
    "I was on 0.125 mg of digoxin for about a year.",
    "The waiting list here is 18 weeks for a rheumatology referral.",
    "Bell's palsy on the left side cleared up after about 3 weeks.",
]

A_TEMPLATES: dict[str, list[str]] = {
    "email": [
        "You can email me at {email} if you want to talk privately.",
        "My email is {email}, happy to share my diet plan.",
        "Feel free to reach out: {email}",
        "(I check {email} more often than this site.)",
    ],
    "phone": [
        "Call or text me at {phone} any time after 6.",
        "My cell is {phone} if you want to vent.",
        "The number I use is {phone}, leave a message.",
        "Text {phone} and I will send you the list of questions I asked.",
    ],
    "street-address": [
        "We live at {address} so the clinic is only ten minutes away.",
        "I'm at {address}, come by if you are ever nearby.",
        "Send the care package to {address} and I'll pay you back.",
        "Our house on {address} has too many stairs now.",
        "My address is {address} if anyone wants to swap seed packets.",
    ],
    "postcode": [
        "The pharmacy in {postcode} never has it in stock.",
        "My zip code is {postcode_bare} if that helps find a local group.",
        "Anyone near postcode {postcode_bare}? Looking for a walking buddy.",
    ],
    "person-name": [
        "My husband {first} has been amazing through all of this.",
        "My neurologist, Dr. {last}, says the lesions are stable.",
        "I'm {first}, 3 years into this journey.",
        "My name is {full} and I just joined.",
        "I told {first} about the new diagnosis last night and cried.",
        "{word_first} drove me to every appointment last year.",
        "My daughter {word_first} keeps me going.",
        "Dr. {full} at the clinic was the first to take me seriously.",
        "Thanks everyone, {first}",
        "my husband {lower_first} thinks I should get a second opinion",
        "{first} and I are trying to figure out the insurance.",
        "The nurse, {first}, showed me how to do the injection.",
    ],
    "exact-date": [
        "I was born on {date} so I just made the cut-off.",
        "My surgery is on {date} and I'm terrified.",
        "Diagnosed {date} after two years of tests.",
        "DOB {date}, in case the form asks.",
    ],
    "organisation": [
        "I work at {company} and they have been good about time off.",
        "My husband works for {company}, so we are on their insurance.",
        "I'm a teacher at {school} and the kids are germ factories.",
        "My son is a junior at {school} and doesn't know yet.",
        "I used to work for {company} before I went on disability.",
    ],
    "combination": [
        "I'm {agesex} in {town} with {rare}.",
        "{agesex} here, {town}, recently diagnosed with {rare}.",
        "Anyone else in {town} with {rare}?",
        "I'm {agesex} with {rare}, does anyone have advice?",
        "{agesex} living in {town}, just here to learn.",
    ],
}

B_NEUTRAL = [
    "Ferritin was 12 and hemoglobin 10.9 so iron infusions start next month.",
    "They upped my levothyroxine to 100 mcg and my energy is slowly coming back.",
    "My LDL was 190 even on 20 mg of atorvastatin.",
    "Glucose 112 fasting, which the GP called borderline.",
    "I really hope the new biologic works, I'm running out of options.",
    "Will it always be like this, or does it get easier?",
    "We will see what the specialist says on Thursday.",
    "I got a bill for 1,875 dollars for a 15 minute visit.",
    "There's a grace period of 60 days for the appeal.",
    "My heart rate rose to 150 just standing up.",
    "Graves' disease runs in my family, my aunt had it too.",
    "Addison's disease means I carry an emergency hydrocortisone kit.",
    "Sjogren's makes my eyes feel like sandpaper by noon.",
    "Cleveland Clinic has a long wait but people say it is worth it.",
    "The NHS app finally shows my blood results.",
    "I paid 15000 out of pocket last year between copays and travel.",
    "About 20000 people a year get this diagnosis, so it isn't that rare.",
    "Ozempic 0.5 mg weekly, down 22 lbs since January.",
    "My pain is 7/10 most mornings and 4/10 by the afternoon.",
    "The ratio was 3:1 in favour of the new protocol.",
    "My specialist is in Charlotte, about 2 hours from here.",
    "We drove down to Houston for the trial screening.",
    "Amber-coloured urine was my first clue something was off.",
    "In June we'll know if the scan shows progress.",
    "Mark my words, pacing is the most important skill you will learn.",
    "I keep a pill organiser with 28 slots now, 4 doses a day.",
    "Iron 325 mg every other day is easier on the stomach.",
    "Does anybody know if the 2.5 mg tablets can be split?",
    "The support group meets every second Tuesday at the library.",
    "I have had 3 flares since 2021 and each was worse.",
    "My creatinine was 1.4, up from 1.1.",
    "Hugs to all of you, this group is my lifeline.",
    "Is it normal to feel wiped out for two days after an infusion?",
    "Frankly the side effects were worse than the disease for me.",
    "The ER gave me 4 mg of morphine and sent me home.",
    "I track everything in a spreadsheet with 365 rows a year.",
]

B_TEMPLATES: dict[str, list[str]] = {
    "email": [
        "Drop me a line at {email} and I'll send the recipes.",
        "Contact: {email}",
        "best way to reach me is {email} (not the app).",
        "I set up {email} just for this group.",
    ],
    "phone": [
        "Ring me on {phone} if the forum goes down.",
        "Here's my number: {phone}.",
        "You can WhatsApp me at {phone}.",
        "My landline is {phone}, I'm home most days.",
    ],
    "street-address": [
        "I'm staying at {address} until the end of treatment.",
        "Mail it to {address}, thanks so much!",
        "We just moved to {address}, closer to the hospital.",
        "The meetup is at my place, {address}, bring a chair.",
        "Our flat at {address} is on the third floor with no lift.",
    ],
    "postcode": [
        "I'm in {postcode}, is anyone close?",
        "Postcode is {postcode_bare} for the delivery.",
        "zip {postcode_bare}, looking for a good rheumatologist nearby.",
    ],
    "person-name": [
        "My wife {first} handles all the paperwork.",
        "Dr. {last} finally ordered the right test.",
        "Hi all, {first} here, long time lurker.",
        "I am {full}, mother of two.",
        "My sister {word_first} donated her kidney to me.",
        "{word_first} says I should rest more, and she's right.",
        "I spoke with {first} from the patient advocacy office.",
        "my son {lower_first} helps me with the shots",
        "Cheers, {full}",
        "Our GP, Dr. {full}, retired last month.",
        "I met {first} at the infusion centre and we are friends now.",
        "Ask for {first} in billing, she is the only one who knows.",
    ],
    "exact-date": [
        "My birthday is {date}, the same day I was diagnosed years later.",
        "The infusion got moved to {date}.",
        "Date of birth: {date}.",
        "It started on {date} with a headache that never left.",
    ],
    "organisation": [
        "I've been at {company} for 11 years and told nobody.",
        "My wife is a nurse at {company} so she knows the system.",
        "I teach maths at {school} and hide my flares from the staff.",
        "I'm a student at {school}, finals are killing me.",
        "After {company} let me go I lost my insurance.",
    ],
    "combination": [
        "{agesex} from {town} with {rare}, AMA.",
        "Just diagnosed with {rare}, I'm {agesex} and live in {town}.",
        "Is there anyone else around {town} who has {rare}?",
        "{agesex}, {rare}, feeling very alone.",
        "I'm {agesex}, living in {town} and struggling with fatigue.",
    ],
}


# ----------------------------------------------------------------------------------------------- build


def _sentence(template: str, fill: Fill, context: dict[str, object] | None) -> list[Piece]:
    """Render one template; combination templates label the fact span when >= 3 facts (text + profile)."""
    pieces: list[Piece] = []
    facts = {"age": 0, "sex": 0, "town": 0, "rare": 0}
    for literal, name, _spec, _conv in string.Formatter().parse(template):
        if literal:
            pieces.append((literal, None))
        if name is None:
            continue
        if name == "agesex":
            text, age, sex = fill.age_sex()
            facts["age"] += age
            facts["sex"] += sex
            pieces.append((text, "fact"))
        elif name == "town":
            facts["town"] = 1
            pieces.append((fill.town(), "fact"))
        elif name == "rare":
            facts["rare"] = 1
            pieces.append((fill.rng.choice(fill.lex.rare), "fact"))
        elif name == "postcode_bare":
            pieces.append((fill.rng.choice(fill.lex.town)[3], "postcode"))
        else:
            pieces.extend(getattr(fill, name)())
    if not any(k == "fact" for _, k in pieces):
        return pieces
    in_text = sum(1 for v in facts.values() if v)
    ctx = context or {}
    from_ctx = sum(
        1
        for key, has in (("age", "age"), ("sex", "sex"), ("town", "town"), ("rare", "diagnosis"))
        if not facts[key] and ctx.get(has) and (key != "rare" or ctx.get("diagnosis_is_rare"))
    )
    label = "combination" if in_text + from_ctx >= 3 else None
    # merge from the first to the last fact into one piece
    idx = [i for i, (_, k) in enumerate(pieces) if k == "fact"]
    first, last = idx[0], idx[-1]
    merged = "".join(t for t, _ in pieces[first : last + 1])
    return [*pieces[:first], (merged, label), *pieces[last + 1 :]]


def _context(rng: random.Random, lex: Lex) -> dict[str, object] | None:
    """Some authors show profile facts publicly; the check may be told them."""
    if rng.random() < 0.7:
        return None
    ctx: dict[str, object] = {}
    if rng.random() < 0.7:
        ctx["age"] = rng.randrange(20, 80)
    if rng.random() < 0.7:
        ctx["sex"] = rng.choice(["female", "male"])
    if rng.random() < 0.3:
        ctx["town"] = rng.choice(lex.town)[0]
    if rng.random() < 0.4:
        rare = rng.random() < 0.6
        ctx["diagnosis"] = rng.choice(lex.rare) if rare else rng.choice(["asthma", "type 2 diabetes", "migraine"])
        ctx["diagnosis_is_rare"] = rare
    return ctx or None


def _posts(split: str, seed: int, count: int, lex: Lex, neutral: list[str]) -> Iterator[Post]:
    rng = random.Random(seed)
    kinds = list(lex.templates)
    for n in range(count):
        fill = Fill(rng, lex)
        context = _context(rng, lex)
        length = rng.choices(["short", "medium", "long"], weights=[4, 4, 2])[0]
        n_sent = {"short": rng.randrange(1, 3), "medium": rng.randrange(3, 7), "long": rng.randrange(10, 30)}[length]
        clean = rng.random() < 0.22  # posts with nothing to find keep precision honest
        sentences: list[list[Piece]] = []
        for _ in range(n_sent):
            if not clean and rng.random() < 0.45:
                kind = rng.choice(kinds)
                sentences.append(_sentence(rng.choice(lex.templates[kind]), fill, context))
            else:
                unused = [s for s in neutral if [(s, None)] not in sentences] or neutral
                sentences.append([(rng.choice(unused), None)])
        text, gold = "", []
        for i, sentence in enumerate(sentences):
            if i:
                text += "\n\n" if rng.random() < 0.2 else " "
            for piece, kind in sentence:
                if kind is not None and kind != "fact":
                    gold.append(Gold(kind, len(text), len(text) + len(piece)))
                text += piece
        yield Post(id=f"{split}-{n:04d}", split=split, text=text, gold=tuple(gold), context=context)


def _lex(which: str) -> Lex:
    if which == "A":
        return Lex(
            A_FIRST,
            A_WORD_FIRST,
            A_LAST,
            A_STREET,
            A_SUFFIX,
            A_COMPANY,
            A_SCHOOL,
            A_TOWN,
            A_RARE,
            A_DOMAINS,
            A_TEMPLATES,
        )
    return Lex(
        B_FIRST, B_WORD_FIRST, B_LAST, B_STREET, B_SUFFIX, B_COMPANY, B_SCHOOL, B_TOWN, B_RARE, B_DOMAINS, B_TEMPLATES
    )


def posts(split: str | None = None) -> list[Post]:
    """The labelled set (both parts, or one: "dev" / "held-out"), the same on every call."""
    out: list[Post] = []
    if split in (None, "dev"):
        out.extend(_posts("dev", 1105, 360, _lex("A"), A_NEUTRAL))
    if split in (None, "held-out"):
        out.extend(_posts("held-out", 2718, 200, _lex("B"), B_NEUTRAL))
    return out


KINDS = ("email", "phone", "street-address", "postcode", "person-name", "exact-date", "organisation", "combination")


def counts(items: list[Post]) -> dict[str, int]:
    """Gold spans per kind (for the README and a sanity test)."""
    return {k: sum(1 for p in items for g in p.gold if g.kind == k) for k in KINDS}


if __name__ == "__main__":
    # `python bench/disclosure_set.py > set.jsonl` writes the set for inspection.
    for p in posts():
        row = {
            "id": p.id,
            "split": p.split,
            "text": p.text,
            "context": p.context,
            "gold": [[g.kind, g.start, g.end, p.text[g.start : g.end]] for g in p.gold],
        }
        sys.stdout.write(json.dumps(row, ensure_ascii=False) + "\n")
