"""Accuracy and latency of the disclosure check (issue 5 item 3) on the labelled set in disclosure_set.py.

Span match rule (documented in bench/README.md): a finding counts as correct if it OVERLAPS (shares at
least one character with) a gold span of the same kind; a gold span counts as found if some finding of
its kind overlaps it. precision = correct findings / findings, recall = found gold spans / gold spans.
The strict rule (same kind, same boundaries after trimming spaces and punctuation) is printed too.

The whole run is under a guard that makes every socket connect and name lookup fail: the check must be
offline. Targets (issue 5 acceptance): recall >= 0.90 and precision >= 0.80 for email, phone,
street-address and person-name, on the dev part and the held-out part.

    python bench/bench_disclosure.py                 # both parts, per kind, latency
    python bench/bench_disclosure.py --show-errors   # also print misses and false alarms (dev part only)
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import disclosure_set as dataset

TARGET_KINDS = ("email", "phone", "street-address", "person-name")
TARGET_RECALL, TARGET_PRECISION = 0.90, 0.80


class NetworkCall(AssertionError):
    """Raised by the guard when anything tries to reach the network."""


@contextmanager
def no_network() -> Iterator[list[str]]:
    """Every connect / name lookup raises (and is recorded): the run proves the check is offline."""
    attempts: list[str] = []
    saved = (socket.socket.connect, socket.socket.connect_ex, socket.create_connection, socket.getaddrinfo)

    def refuse(*args: Any, **kwargs: Any) -> Any:
        attempts.append(repr(args[1:2] or args[:1]))
        raise NetworkCall("network call during the disclosure check")

    socket.socket.connect = refuse  # type: ignore[method-assign]
    socket.socket.connect_ex = refuse  # type: ignore[method-assign]
    socket.create_connection = refuse
    socket.getaddrinfo = refuse
    try:
        yield attempts
    finally:
        socket.socket.connect, socket.socket.connect_ex, socket.create_connection, socket.getaddrinfo = saved


@dataclass
class Score:
    found: int = 0  # predicted spans overlapping a gold span of the kind
    predicted: int = 0
    hit: int = 0  # gold spans overlapped by a prediction of the kind
    gold: int = 0
    strict: int = 0  # predictions equal to a gold span (trimmed)
    misses: list[str] = field(default_factory=list)
    false_alarms: list[str] = field(default_factory=list)

    @property
    def precision(self) -> float:
        return self.found / self.predicted if self.predicted else 1.0

    @property
    def recall(self) -> float:
        return self.hit / self.gold if self.gold else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    @property
    def strict_f1(self) -> float:
        p = self.strict / self.predicted if self.predicted else 1.0
        r = self.strict / self.gold if self.gold else 1.0
        return 2 * p * r / (p + r) if p + r else 0.0


def _context(post: dataset.Post) -> Any:
    from medvault.community.disclosure import ProfileFacts

    if not post.context:
        return None
    c = post.context
    return ProfileFacts(
        age=c.get("age"),  # type: ignore[arg-type]
        sex=c.get("sex"),  # type: ignore[arg-type]
        town=c.get("town"),  # type: ignore[arg-type]
        diagnosis=c.get("diagnosis"),  # type: ignore[arg-type]
        diagnosis_is_rare=c.get("diagnosis_is_rare"),  # type: ignore[arg-type]
    )


def _trim(text: str, s: int, e: int) -> tuple[int, int]:
    junk = " \t\n.,;:!?()[]\"'"
    while s < e and text[s] in junk:
        s += 1
    while e > s and text[e - 1] in junk:
        e -= 1
    return s, e


def evaluate(posts: list[dataset.Post]) -> tuple[dict[str, Score], list[float]]:
    """Per-kind scores and per-post latencies (seconds) of `check` on `posts`."""
    from medvault.community import disclosure

    scores = {k: Score() for k in dataset.KINDS}
    latencies: list[float] = []
    for post in posts:
        ctx = _context(post)
        t0 = time.perf_counter()
        findings = disclosure.check(post.text, context=ctx)
        latencies.append(time.perf_counter() - t0)
        for kind, score in scores.items():
            pred = [(f.start, f.end) for f in findings if f.kind == kind]
            gold = [(g.start, g.end) for g in post.gold if g.kind == kind]
            score.predicted += len(pred)
            score.gold += len(gold)
            gold_trim = {_trim(post.text, *g) for g in gold}
            for s, e in pred:
                if any(s < ge and gs < e for gs, ge in gold):
                    score.found += 1
                else:
                    score.false_alarms.append(
                        f"{post.id}: {post.text[s:e]!r} in …{post.text[max(0, s - 40) : e + 30]!r}"
                    )
                score.strict += _trim(post.text, s, e) in gold_trim
            for gs, ge in gold:
                if any(s < ge and gs < e for s, e in pred):
                    score.hit += 1
                else:
                    score.misses.append(f"{post.id}: {post.text[gs:ge]!r} in …{post.text[max(0, gs - 40) : ge + 30]!r}")
    return scores, latencies


def table(title: str, scores: dict[str, Score]) -> list[str]:
    lines = [
        f"   {title}",
        f"   {'kind':<15}{'gold':>6}{'found':>7}{'P':>7}{'R':>7}{'F1':>7}{'strict F1':>11}  target",
    ]
    for kind, s in scores.items():
        verdict = ""
        if kind in TARGET_KINDS:
            ok = s.recall >= TARGET_RECALL and s.precision >= TARGET_PRECISION
            verdict = "ok" if ok else "MISSED"
        lines.append(
            f"   {kind:<15}{s.gold:>6}{s.predicted:>7}{s.precision:>7.3f}{s.recall:>7.3f}{s.f1:>7.3f}"
            f"{s.strict_f1:>11.3f}  {verdict}"
        )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--show-errors", action="store_true", help="print misses and false alarms of the dev part")
    parser.add_argument("--rounds", type=int, default=5, help="latency rounds over a 2,000-character post")
    args = parser.parse_args()
    from _common import banner

    banner("bench_disclosure: the disclosure check on the labelled synthetic forum posts")
    with no_network() as attempts:
        t0 = time.perf_counter()
        from medvault.community import disclosure

        t_import = time.perf_counter() - t0
        t0 = time.perf_counter()
        disclosure.check("warm up: Maria at 42 Maple St, (555) 867-5309")
        t_first = time.perf_counter() - t0
        t0 = time.perf_counter()
        disclosure.warm()
        t_warm = time.perf_counter() - t0
        dev, held = dataset.posts("dev"), dataset.posts("held-out")
        dev_scores, dev_lat = evaluate(dev)
        held_scores, held_lat = evaluate(held)
        # latency on long posts: 2,000 characters of the set's own text, identifiers included
        long_text = " ".join(p.text for p in dev)[:2000]
        long_lat = []
        for _ in range(args.rounds * 20):
            t0 = time.perf_counter()
            disclosure.check(long_text)
            long_lat.append(time.perf_counter() - t0)
    lat = sorted(dev_lat + held_lat)
    chars = statistics.mean(len(p.text) for p in dev + held)
    print(f"   set       dev {len(dev)} posts (template set A), held-out {len(held)} posts (template set B)")
    print(f"   gold      dev {dataset.counts(dev)}")
    print(f"             held-out {dataset.counts(held)}")
    print(f"   load      import {t_import * 1000:.0f} ms, first check (name lists) {t_first * 1000:.0f} ms, "
          f"rest of the lists (towns, rare diseases) {t_warm * 1000:.0f} ms")  # fmt: skip
    print(f"   latency   per post (mean {chars:.0f} chars): p50 {statistics.median(lat) * 1000:.2f} ms, "
          f"p95 {lat[int(0.95 * len(lat))] * 1000:.2f} ms, max {lat[-1] * 1000:.2f} ms")  # fmt: skip
    long_lat.sort()
    print(f"   latency   2,000-char post: p50 {statistics.median(long_lat) * 1000:.2f} ms, "
          f"p95 {long_lat[int(0.95 * len(long_lat))] * 1000:.2f} ms")  # fmt: skip
    print(f"   network   {len(attempts)} connection attempts (guard on for the whole run)")
    print("   match     overlap, same kind (strict: same trimmed boundaries)")
    for line in table("dev (template set A)", dev_scores) + table("held-out (template set B)", held_scores):
        print(line)
    if args.show_errors:
        for kind, s in dev_scores.items():
            for m in s.misses:
                print(f"   MISS  {kind:<15}{m}")
            for f in s.false_alarms:
                print(f"   FALSE {kind:<15}{f}")
    ok = not attempts and all(
        s.recall >= TARGET_RECALL and s.precision >= TARGET_PRECISION
        for scores in (dev_scores, held_scores)
        for k, s in scores.items()
        if k in TARGET_KINDS
    )
    print(f"== summary: targets {'ok' if ok else 'MISSED'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
