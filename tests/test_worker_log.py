"""A worker's stderr in the daemon's log: a traceback is one entry, logged once."""

from __future__ import annotations

import logging

import pytest

from pipelined.daemon.worker_log import StderrLog

TRACEBACK = """Traceback (most recent call last):
  File "/x/worker.py", line 240, in run
    self.set_up()
  File "/x/invert.py", line 14, in setup
    self.context.log(f"{self.params['fmt']}")
TypeError: self.context.log is a logger, not a function
crashed in setup(): TypeError: self.context.log is a logger, not a function (invert.py, line 14)"""


def feed(log: StderrLog, text: str) -> None:
    for line in text.splitlines():
        log.line(line, {"block": "invert"})
    log.flush({"block": "invert"})


def test_a_repeated_traceback_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "pipelined.block")
    log = StderrLog("invert")
    for _ in range(3):  # three crashes in setup(), the same each time
        feed(log, TRACEBACK.replace("0x7f00", "0x7f11"))
    entries = [(r.levelname, r.getMessage()) for r in caplog.records]
    first, last = entries[0], entries[1]
    assert first[0] == "ERROR" and first[1].startswith("invert: Traceback (most recent call")
    assert first[1].endswith("TypeError: self.context.log is a logger, not a function")
    assert last == ("INFO", "invert: " + TRACEBACK.splitlines()[-1])
    repeats = [m for level, m in entries[2:] if "not repeated" in m]
    assert (
        repeats
        == [
            "invert: TypeError: self.context.log is a logger, not a function"
            " (the same traceback as before, not repeated)"
        ]
        * 2
    )
    assert len(entries) == 6  # per crash: the traceback (once, else one line), the last line


def test_the_workers_own_levels_and_an_unfinished_traceback(caplog) -> None:
    caplog.set_level(logging.INFO, "pipelined.block")
    log = StderrLog("cam")
    feed(log, "WARNING: no packet for 5 s\nINFO: reconnected\nTraceback (most recent call last):")
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", "cam: no packet for 5 s"),  # the level once, not twice
        ("INFO", "cam: reconnected"),
        ("ERROR", "cam: Traceback (most recent call last):"),  # cut short by the exit
    ]
