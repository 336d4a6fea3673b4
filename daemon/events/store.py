"""The event store: SQLite in the state directory, with its snapshots beside it.

``<state>/events.db`` holds one row per event (its latest version: a start, then the
same row updated by updates, the end and clip reports), ``<state>/events/`` the
snapshot JPEGs the workers wrote (``<id>.jpg``). Every write gives the row the next
``seq``, so ``pipectl events -f`` and the page ask for "what changed after seq N".

SQLite runs in one thread of its own (its connection belongs to that thread), never on
the event loop: an SD card that takes a second to sync stalls the store, not the
supervisor. Changes that come while a write is under way go together in the next, one
transaction for the lot. Writes the thread has not caught up with are bounded (``MAX_BACKLOG``);
past that they are dropped and counted, and the log says so.

Retention (``[events]``), checked at start and every minute: events older than
``max_age_seconds`` (by their end), the oldest beyond ``max_events``, and their
snapshots with them; then the oldest snapshots while they take more than
``max_snapshot_bytes`` (their events stay, without a picture). Snapshot files no row
names (a worker wrote one whose event the daemon never got) go after a minute.
Events left open by a daemon that died are closed at start, marked interrupted.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from .config import EventsConfig

T = TypeVar("T")
SCHEMA_VERSION = 1
MAX_BACKLOG = 1000
"""Writes waiting for the store's thread; beyond, they are dropped (and counted)."""
ORPHAN_AGE = 60.0
"""Seconds before a snapshot file that no event names is deleted."""
log = logging.getLogger("pipelined.events")

_COLUMNS = ("id", "block", "kind", "start", "end", "score", "data", "snapshot", "clips",
            "interrupted", "seq")  # fmt: skip
_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id TEXT PRIMARY KEY,
    block TEXT NOT NULL,
    kind TEXT NOT NULL,
    start REAL NOT NULL,
    "end" REAL,
    score REAL,
    data TEXT,
    snapshot TEXT,
    clips TEXT,
    interrupted INTEGER NOT NULL DEFAULT 0,
    seq INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS events_start ON events(start);
CREATE INDEX IF NOT EXISTS events_seq ON events(seq);
"""


class StoreError(Exception):
    """The store cannot be opened (a folder that cannot be made, a database that is not one)."""


class EventStore:
    """One database and its snapshot folder; every method but ``path`` runs in its thread."""

    def __init__(self, state_dir: Path, config: EventsConfig):
        self.path = state_dir / "events.db"
        self.snapshots = state_dir / "events"
        self.config = config
        self.backlog = 0  # changes asked for and not yet written
        self.dropped = 0
        self._pending: list[dict[str, Any]] = []  # the loop's: the next batch
        self._writing = False
        self.snapshot_bytes = 0
        self._db: sqlite3.Connection | None = None
        self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="events-store")

    # -- from the event loop -------------------------------------------------------------

    async def call(self, work: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, work, *args)

    def save_soon(self, record: dict[str, Any]) -> None:
        """Write ``record`` in the store's thread; dropped (counted) past MAX_BACKLOG.

        What comes while a write is under way waits, and goes in the next one, all in
        one transaction: a burst costs one commit (one sync of the card), not one each.
        """
        if self.backlog >= MAX_BACKLOG:
            self.dropped += 1
            if self.dropped in (1, 10, 100) or self.dropped % 1000 == 0:
                log.warning("the event store is %d writes behind: %d events not stored",
                            self.backlog, self.dropped)  # fmt: skip
            return
        self.backlog += 1
        self._pending.append(dict(record))
        if not self._writing:
            self._write_pending()

    def _write_pending(self) -> None:
        batch, self._pending = self._pending, []
        self._writing = True
        future = asyncio.get_running_loop().run_in_executor(self._thread, self.save_many, batch)
        future.add_done_callback(lambda done: self._written(done, len(batch)))

    def _written(self, future: asyncio.Future[None], count: int) -> None:
        """On the loop: the batch is in (or failed); the next one goes, if any came."""
        self._writing = False
        self.backlog -= count
        if not future.cancelled() and future.exception() is not None:
            log.warning("storing %d event changes failed: %s", count, future.exception())
        if self._pending:
            self._write_pending()

    def close(self) -> None:
        """Finish the writes already asked for, then close."""
        if self._pending:  # behind a write under way: after it, in the same thread
            batch, self._pending = self._pending, []
            self._thread.submit(self.save_many, batch)
        self._thread.submit(self._close)
        self._thread.shutdown(wait=True)

    # -- in the store's thread -----------------------------------------------------------

    def open(self) -> int:
        """Open (or make) the database; the highest seq in it."""
        try:
            self.snapshots.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path} was written by a newer pipelined (schema {version}); move it"
                    " away to start a new one"
                )
            db.executescript(_SCHEMA)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open the event store {self.path}: {exc}") from None
        self._db = db
        closed = db.execute(
            'UPDATE events SET "end" = start, interrupted = 1 WHERE "end" IS NULL'
        ).rowcount
        if closed:
            log.info("closed %d events the last run left open", closed)
        self.snapshot_bytes = sum(size for _, size in self._snapshot_files())
        return int(db.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0])

    def save_many(self, records: list[dict[str, Any]]) -> None:
        """``save`` each, in one transaction."""
        db = self._need()
        db.execute("BEGIN")
        try:
            for record in records:
                self.save(record)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def save(self, record: dict[str, Any]) -> None:
        db = self._need()
        row = _row(record)
        old = db.execute("SELECT snapshot FROM events WHERE id = ?", (record["id"],)).fetchone()
        db.execute(
            f"INSERT OR REPLACE INTO events ({', '.join(_quoted(_COLUMNS))})"
            f" VALUES ({', '.join('?' * len(_COLUMNS))})",
            row,
        )
        snapshot = record.get("snapshot")
        if snapshot and (old is None or old[0] != snapshot):
            self.snapshot_bytes += _size(self.snapshots / snapshot)
        if old is not None and old[0] and old[0] != snapshot:
            self._delete_snapshots([old[0]])

    def query(
        self,
        blocks: list[str],
        since: float | None,
        until: float | None,
        after: int | None,
        limit: int,
        newest: bool,
    ) -> tuple[list[dict[str, Any]], bool]:
        """Events of ``blocks`` (none: all) that overlap [since, until], or (``after``)
        changed after that seq, in seq order; at most ``limit``, and whether more."""
        where: list[str] = []
        args: list[Any] = []
        if blocks:
            where.append(f"block IN ({', '.join('?' * len(blocks))})")
            args += blocks
        if since is not None:
            where.append('coalesce("end", 1e300) >= ?')
            args.append(since)
        if until is not None:
            where.append("start <= ?")
            args.append(until)
        if after is not None:
            where.append("seq > ?")
            args.append(after)
            order = "seq"
        else:
            order = "start DESC, id DESC" if newest else "start, id"
        sql = f"SELECT {', '.join(_quoted(_COLUMNS))} FROM events"
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows = self._need().execute(f"{sql} ORDER BY {order} LIMIT ?", (*args, limit + 1))
        found = [_record(row) for row in rows]
        return found[:limit], len(found) > limit

    def get(self, event_id: str) -> dict[str, Any] | None:
        cols = ", ".join(_quoted(_COLUMNS))
        row = (
            self._need().execute(f"SELECT {cols} FROM events WHERE id = ?", (event_id,)).fetchone()
        )
        return _record(row) if row else None

    def kinds(self) -> list[tuple[str, str]]:
        """Every (block, kind) the store has seen: what discovery announces at start."""
        rows = self._need().execute("SELECT DISTINCT block, kind FROM events ORDER BY block, kind")
        return [(b, k) for b, k in rows]

    def prune(self, now: float | None = None) -> int:
        """Apply the retention; the number of events deleted."""
        db, config = self._need(), self.config
        now = time.time() if now is None else now
        gone: list[str] = []
        deleted = 0
        if config.max_age_seconds:
            limit = now - config.max_age_seconds
            where = 'coalesce("end", start) < ? AND "end" IS NOT NULL'
            gone += [
                r[0] for r in db.execute(f"SELECT snapshot FROM events WHERE {where}", (limit,))
            ]
            deleted += db.execute(f"DELETE FROM events WHERE {where}", (limit,)).rowcount
        if config.max_events:
            over = db.execute("SELECT count(*) FROM events").fetchone()[0] - config.max_events
            if over > 0:
                oldest = "SELECT id FROM events ORDER BY start, id LIMIT ?"
                gone += [r[0] for r in db.execute(
                    f"SELECT snapshot FROM events WHERE id IN ({oldest})", (over,))]  # fmt: skip
                deleted += db.execute(
                    f"DELETE FROM events WHERE id IN ({oldest})", (over,)
                ).rowcount
        self._delete_snapshots([g for g in gone if g])
        if config.max_snapshot_bytes:
            self._trim_snapshots(config.max_snapshot_bytes)
        self._delete_orphans(now)
        return deleted

    def _trim_snapshots(self, budget: int) -> None:
        db = self._need()
        while self.snapshot_bytes > budget:
            rows = db.execute(
                "SELECT id, snapshot FROM events WHERE snapshot IS NOT NULL ORDER BY start LIMIT 50"
            ).fetchall()
            if not rows:
                return
            for event_id, snapshot in rows:
                db.execute("UPDATE events SET snapshot = NULL WHERE id = ?", (event_id,))
                self._delete_snapshots([snapshot])
                if self.snapshot_bytes <= budget:
                    return

    def _delete_orphans(self, now: float) -> None:
        named = {r[0] for r in self._need().execute("SELECT snapshot FROM events") if r[0]}
        for path, size in self._snapshot_files():
            if path.name in named:
                continue
            try:
                if now - path.stat().st_mtime < ORPHAN_AGE:
                    continue
                path.unlink()
                if not path.name.startswith("."):
                    self.snapshot_bytes -= size
            except FileNotFoundError:
                pass

    def _snapshot_files(self) -> Iterable[tuple[Path, int]]:
        try:
            entries = list(os.scandir(self.snapshots))
        except FileNotFoundError:
            return []
        out = []
        for entry in entries:
            if entry.name.endswith((".jpg", ".tmp")) and entry.is_file(follow_symlinks=False):
                try:
                    out.append((Path(entry.path), entry.stat().st_size))
                except FileNotFoundError:
                    pass
        return out

    def _delete_snapshots(self, names: list[str]) -> None:
        for name in names:
            path = self.snapshots / name
            size = _size(path)
            try:
                path.unlink()
                self.snapshot_bytes -= size
            except FileNotFoundError:
                pass

    def _need(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreError("the event store is not open")
        return self._db

    def _close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


def _quoted(columns: Iterable[str]) -> list[str]:
    return [f'"{c}"' for c in columns]


def _row(record: dict[str, Any]) -> tuple[Any, ...]:
    return (
        record["id"], record["block"], record["kind"], record["start"], record.get("end"),
        record.get("score"), _json(record.get("data")), record.get("snapshot"),
        _json(record.get("clips") or None), int(bool(record.get("interrupted"))), record["seq"],
    )  # fmt: skip


def _record(row: tuple[Any, ...]) -> dict[str, Any]:
    record = dict(zip(_COLUMNS, row, strict=True))
    record["data"] = json.loads(record["data"]) if record["data"] else None
    record["clips"] = json.loads(record["clips"]) if record["clips"] else []
    record["interrupted"] = bool(record["interrupted"])
    return record


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"))


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
