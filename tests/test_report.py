"""A worker's report record (workers/ipc/report.py): the Zenoh link writes one JSON document
after another, the daemon reads the newest whole one, never half of two."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time

import pytest

from pipelined.workers.ipc import _atomics
from pipelined.workers.ipc.names import RunNames
from pipelined.workers.ipc.report import _SEQ, MAX_DOCUMENT, Report, ReportTooLarge


def test_the_newest_document_is_read_and_one_too_large_is_refused(names: RunNames) -> None:
    record = Report.create(names, "zenoh")
    writer = Report.attach(names, "zenoh")
    try:
        assert record.read() is None  # nothing written yet
        writer.publish({"remote_wires": [{"block": "door", "frames": 1}]})
        writer.publish({"remote_wires": [{"block": "door", "frames": 2}]})
        assert record.read() == {"remote_wires": [{"block": "door", "frames": 2}]}
        with pytest.raises(ReportTooLarge, match="the record holds"):
            writer.publish({"pad": "x" * MAX_DOCUMENT})
        assert record.read() == {"remote_wires": [{"block": "door", "frames": 2}]}  # kept whole
    finally:
        writer.close()
        record.unlink()
        record.close()


def test_a_writer_caught_mid_write_gives_nothing_rather_than_half(names: RunNames) -> None:
    record = Report.create(names, "zenoh")
    try:
        Report.attach(names, "zenoh").publish({"n": 1})
        seq = _atomics.load_acquire(record._mm, _SEQ)
        _atomics.store_release(record._mm, _SEQ, seq + 1)  # a writer that died mid-write
        assert record.read() is None
    finally:
        record.unlink()
        record.close()


def test_attach_refuses_what_is_not_a_report(names: RunNames) -> None:
    with pytest.raises(FileNotFoundError):
        Report.attach(names, "zenoh")


def test_a_reader_never_sees_half_of_two_documents(names: RunNames) -> None:
    """A writer process publishes documents of changing length as fast as it can; every
    document read is whole: its check field matches its number and its padding."""
    record = Report.create(names, "zenoh")
    code = textwrap.dedent(
        f"""
        import time
        from pipelined.workers.ipc.names import RunNames
        from pipelined.workers.ipc.report import Report
        report = Report.attach(RunNames({names.instance!r}, {names.run!r}), "zenoh")
        end = time.monotonic() + 3
        n = 0
        while time.monotonic() < end:
            n += 1
            report.publish({{"n": n, "pad": "ab" * (n % 5000), "check": n * 7 + n % 5000}})
        print(n, flush=True)
        """
    )
    writer = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        seen = 0
        end = time.monotonic() + 30
        while writer.poll() is None and time.monotonic() < end:
            document = record.read()
            if document is None:
                continue
            n = document["n"]
            assert document["check"] == n * 7 + n % 5000
            assert document["pad"] == "ab" * (n % 5000)
            seen += 1
        written = int(writer.communicate(timeout=30)[0])
        assert written > 100 and seen > 100, (written, seen)
        last = record.read()
        assert last is not None and last["n"] == written
        json.dumps(last)
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
        record.unlink()
        record.close()
