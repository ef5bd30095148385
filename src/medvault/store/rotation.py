"""Key rotation: re-wrap every data key under a new key-encryption key, online and resumable.

Data keys themselves do not change, so ciphertexts are untouched and readers never wait: each
data key row is re-wrapped in a short transaction. The new KEK becomes active first; a crash at any
point leaves rows under either the old or the new KEK, both readable, and rerunning continues.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import func, select, text

from medvault.config import Settings
from medvault.crypto.keys import PURPOSES, KeyRing, Purpose
from medvault.db import make_engine, make_sessionmaker, unit_of_work
from medvault.store.models import DataKey


@dataclass
class RotationReport:
    new_kids: dict[str, str] = field(default_factory=dict)
    rewrapped: int = 0
    retired: list[str] = field(default_factory=list)
    resumed: bool = False


def pending(settings: Settings, purpose: Purpose) -> int:
    ring = KeyRing(settings.keys_path)
    engine = make_engine(settings)
    try:
        with unit_of_work(make_sessionmaker(engine)) as s:
            return int(
                s.execute(
                    select(func.count())
                    .select_from(DataKey)
                    .where(DataKey.purpose == purpose, DataKey.kek_id != ring.active_kid(purpose))
                ).scalar_one()
            )
    finally:
        engine.dispose()


def rotate(
    settings: Settings,
    *,
    batch: int = 200,
    on_progress: Callable[[int, int], None] | None = None,
    retire: bool = True,
) -> RotationReport:
    """Rotate both KEKs (clinical, identity). Resumes an interrupted rotation instead of starting anew."""
    ring = KeyRing(settings.keys_path)
    engine = make_engine(settings)
    factory = make_sessionmaker(engine)
    report = RotationReport()
    try:
        todo: dict[Purpose, int] = {}
        for purpose in PURPOSES:
            with unit_of_work(factory) as s:
                left = s.execute(
                    select(func.count())
                    .select_from(DataKey)
                    .where(DataKey.purpose == purpose, DataKey.kek_id != ring.active_kid(purpose))
                ).scalar_one()
            if left:
                report.resumed = True  # an earlier rotation stopped half-way: finish it
            else:
                ring.begin_rotation(purpose)
                with unit_of_work(factory) as s:
                    left = s.execute(
                        select(func.count()).select_from(DataKey).where(DataKey.purpose == purpose)
                    ).scalar_one()
            report.new_kids[purpose] = ring.active_kid(purpose)
            todo[purpose] = int(left)
        total = sum(todo.values())
        done = 0
        for purpose in PURPOSES:
            active = ring.active_kid(purpose)
            while True:
                with unit_of_work(factory) as s:
                    rows = (
                        s.execute(
                            select(DataKey)
                            .where(DataKey.purpose == purpose, DataKey.kek_id != active)
                            .order_by(DataKey.id)
                            .limit(batch)
                            .with_for_update(skip_locked=True)
                        )
                        .scalars()
                        .all()
                    )
                    for row in rows:
                        raw = ring.unwrap(purpose=purpose, owner=row.owner, kid=row.kek_id, wrapped=row.wrapped)
                        row.kek_id, row.wrapped = ring.wrap(purpose=purpose, owner=row.owner, data_key=raw, kid=active)
                if not rows:
                    break
                done += len(rows)
                report.rewrapped += len(rows)
                if on_progress:
                    on_progress(done, total)
        if retire:
            with unit_of_work(factory) as s:
                # A writer that inserted a data key under the old KEK before the switch and has not
                # committed yet is invisible here. Wait for every such writer first: PostgreSQL's
                # SHARE lock waits for open inserts; on SQLite this transaction began IMMEDIATE,
                # so no other writer is mid-transaction. Then re-wrap stragglers, then decide.
                if s.get_bind().dialect.name == "postgresql":
                    s.execute(text("LOCK TABLE data_key IN SHARE ROW EXCLUSIVE MODE"))
                for purpose in PURPOSES:
                    active = ring.active_kid(purpose)
                    for row in s.execute(
                        select(DataKey).where(DataKey.purpose == purpose, DataKey.kek_id != active)
                    ).scalars():
                        raw = ring.unwrap(purpose=purpose, owner=row.owner, kid=row.kek_id, wrapped=row.wrapped)
                        row.kek_id, row.wrapped = ring.wrap(purpose=purpose, owner=row.owner, data_key=raw, kid=active)
                        report.rewrapped += 1
                s.flush()
                in_use = set(s.execute(select(DataKey.kek_id).distinct()).scalars())
            actives = {ring.active_kid(p) for p in PURPOSES}
            for kid in ring.kek_ids():
                if kid not in in_use and kid not in actives:
                    ring.retire(kid)
                    report.retired.append(kid)
    finally:
        engine.dispose()
    return report
