"""The event store on its own: a real SQLite file and real snapshot files in tmp_path,
retention decided by a clock the test gives (``prune(now)``), never the wall clock."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from pathlib import Path

import pytest

from pipelined.daemon.events.config import EventsConfig
from pipelined.daemon.events.store import MAX_BACKLOG, ORPHAN_AGE, EventStore, StoreError

T0 = 1_700_000_000.0
DAY = 86400.0


def store_in(folder: Path, **config: float) -> EventStore:
    store = EventStore(folder, EventsConfig(**config))  # type: ignore[arg-type]
    store.open()
    return store


def record(seq: int, start: float, end: float | None, snapshot: bytes | None = None,
           folder: Path | None = None, block: str = "cam") -> dict:  # fmt: skip
    event_id = f"e{seq}"
    name = None
    if snapshot is not None:
        assert folder is not None
        name = f"{event_id}.jpg"
        (folder / "events" / name).write_bytes(snapshot)
    return {"id": event_id, "block": block, "kind": "motion", "start": start, "end": end,
            "score": 0.5, "data": {"n": seq}, "snapshot": name, "seq": seq}  # fmt: skip


def ids(store: EventStore) -> list[str]:
    found, _ = store.query([], None, None, None, 1000, newest=False)
    return [r["id"] for r in found]


def test_events_past_max_age_go_with_their_snapshots_and_open_ones_stay(tmp_path):
    store = store_in(tmp_path, max_age_seconds=DAY)
    store.save(record(1, T0, T0 + 5, b"x" * 100, tmp_path))
    store.save(record(2, T0 + DAY, T0 + DAY + 5, b"y" * 100, tmp_path))
    store.save(record(3, T0, None, b"z" * 100, tmp_path))  # open since T0: never aged out
    assert store.prune(now=T0 + DAY + 4) == 0  # e1 ended at T0+5: a day not yet past
    assert store.prune(now=T0 + DAY + 6) == 1
    assert ids(store) == ["e3", "e2"]
    assert sorted(p.name for p in (tmp_path / "events").iterdir()) == ["e2.jpg", "e3.jpg"]
    assert store.snapshot_bytes == 200
    store._close()


def test_beyond_max_events_the_oldest_go(tmp_path):
    store = store_in(tmp_path, max_events=3, max_age_seconds=0)
    for seq in range(1, 7):
        store.save(record(seq, T0 + seq, T0 + seq + 1, b"j" * 10, tmp_path))
    assert store.prune(now=T0 + 10 * DAY) == 3  # no age limit: only the count
    assert ids(store) == ["e4", "e5", "e6"]
    assert sorted(p.name for p in (tmp_path / "events").iterdir()) == [
        "e4.jpg",
        "e5.jpg",
        "e6.jpg",
    ]
    store._close()


def test_snapshots_over_their_budget_go_oldest_first_and_their_events_stay(tmp_path):
    store = store_in(tmp_path, max_snapshot_bytes=250, max_age_seconds=0)
    for seq in range(1, 5):
        store.save(record(seq, T0 + seq, T0 + seq + 1, b"s" * 100, tmp_path))
    assert store.snapshot_bytes == 400
    store.prune(now=T0 + 10)
    assert ids(store) == ["e1", "e2", "e3", "e4"]
    kept = {r["id"]: r["snapshot"] for r in store.query([], None, None, None, 10, False)[0]}
    assert kept == {"e1": None, "e2": None, "e3": "e3.jpg", "e4": "e4.jpg"}
    assert store.snapshot_bytes == 200
    assert sorted(p.name for p in (tmp_path / "events").iterdir()) == ["e3.jpg", "e4.jpg"]
    store._close()


def test_a_snapshot_no_event_names_goes_after_a_minute(tmp_path):
    store = store_in(tmp_path)
    orphan = tmp_path / "events" / "never-sent.jpg"
    orphan.write_bytes(b"o" * 10)
    mtime = orphan.stat().st_mtime
    store.prune(now=mtime + ORPHAN_AGE - 1)  # a worker may be about to send its event
    assert orphan.exists()
    store.prune(now=mtime + ORPHAN_AGE + 1)
    assert not orphan.exists()
    store._close()


def test_events_a_dead_daemon_left_open_are_ended_at_the_next_start(tmp_path):
    store = store_in(tmp_path)
    store.save(record(1, T0, None))
    store.save(record(2, T0, T0 + 3))
    store._close()  # as after a SIGKILL: nothing ended it

    again = EventStore(tmp_path, EventsConfig())
    assert again.open() == 2  # the next seq follows on
    by_id = {r["id"]: r for r in again.query([], None, None, None, 10, False)[0]}
    assert by_id["e1"]["end"] == T0 and by_id["e1"]["interrupted"] is True
    assert by_id["e2"]["end"] == T0 + 3 and by_id["e2"]["interrupted"] is False
    again._close()


def test_query_by_block_range_and_seq(tmp_path):
    store = store_in(tmp_path)
    store.save(record(1, T0, T0 + 10, block="a"))
    store.save(record(2, T0 + 20, T0 + 30, block="b"))
    store.save(record(3, T0 + 40, None, block="a"))
    assert [r["id"] for r in store.query(["a"], None, None, None, 10, True)[0]] == ["e3", "e1"]
    # overlapping [T0+5, T0+25]: e1 (ends in it) and e2 (starts in it); e3 starts after
    assert [r["id"] for r in store.query([], T0 + 5, T0 + 25, None, 10, False)[0]] == [
        "e1",
        "e2",
    ]
    # an open event overlaps every range after its start
    assert [r["id"] for r in store.query([], T0 + 1000, None, None, 10, False)[0]] == ["e3"]
    found, more = store.query([], None, None, 1, 1, False)
    assert [r["id"] for r in found] == ["e2"] and more
    store._close()


def test_a_database_of_a_newer_pipelined_is_refused_with_what_to_do(tmp_path):
    db = sqlite3.connect(tmp_path / "events.db")
    db.execute("PRAGMA user_version = 99")
    db.close()
    with pytest.raises(StoreError, match=r"newer pipelined.*move it away"):
        EventStore(tmp_path, EventsConfig()).open()


def test_a_folder_that_cannot_be_made_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(StoreError, match=f"cannot open the event store {blocker}/events.db"):
        EventStore(blocker, EventsConfig()).open()
    assert os.listdir(tmp_path) == ["file"]


def test_a_burst_is_written_in_batches_and_bounded_by_the_backlog(tmp_path):
    """From the loop: save_soon never waits; what comes while a write is under way goes
    in the next one; past MAX_BACKLOG waiting, changes are dropped and counted."""

    async def burst() -> int:
        store = EventStore(tmp_path, EventsConfig())
        await store.call(store.open)
        batches: list[int] = []
        write = store.save_many

        def counted(records: list[dict]) -> None:
            batches.append(len(records))
            write(records)

        store.save_many = counted  # type: ignore[method-assign]
        for seq in range(1, MAX_BACKLOG + 501):  # all at once: the thread cannot keep up
            store.save_soon(record(seq, T0 + seq, T0 + seq + 1))
        assert store.backlog == MAX_BACKLOG and store.dropped == 500
        while store.backlog:
            await asyncio.sleep(0.01)
        found, _ = await store.call(store.query, [], None, None, None, 5000, False)
        store.close()
        assert sum(batches) == MAX_BACKLOG and batches[0] == 1  # the first went at once
        assert len(batches) <= 3, batches  # the rest came while it was written: one more
        return len(found)

    assert asyncio.run(burst()) == MAX_BACKLOG
    again = store_in(tmp_path)
    assert len(ids(again)) == MAX_BACKLOG  # committed, not only seen by that connection
    again._close()
