"""pipectl's side of recordings: the times people type, the table with its gaps."""

from __future__ import annotations

import datetime

import pytest

from pipelined.ctl import format as fmt
from pipelined.ctl.main import _glue_times, build_parser
from pipelined.ctl.when import parse_time

NOW = datetime.datetime(2025, 6, 1, 14, 30, 0).timestamp()  # local time


@pytest.mark.parametrize(
    "text, seconds_before_now",
    [("now", 0), ("-90s", 90), ("-15m", 900), ("-1h", 3600), ("-2d", 172800),
     ("-1h30m", 5400), ("+10m", -600), ("-0.5h", 1800)],
)  # fmt: skip
def test_relative_times_count_back_from_now(text, seconds_before_now):
    assert parse_time(text, NOW) == NOW - seconds_before_now


def test_absolute_times_are_local_unless_they_say_otherwise():
    local = datetime.datetime(2025, 6, 1, 9, 15).timestamp()
    assert parse_time("2025-06-01T09:15", NOW) == local
    assert parse_time("2025-06-01 09:15:00", NOW) == local
    assert parse_time("09:15", NOW) == local  # today
    assert parse_time("2025-06-01", NOW) == datetime.datetime(2025, 6, 1).timestamp()
    utc = datetime.datetime(2025, 6, 1, 9, 15, tzinfo=datetime.UTC).timestamp()
    assert parse_time("2025-06-01T09:15Z", NOW) == utc
    assert parse_time("2025-06-01T11:15+02:00", NOW) == utc


@pytest.mark.parametrize("text", ["yesterday", "-1x", "1h", "2025-13-01", ""])
def test_other_times_are_refused_with_the_forms_that_work(text):
    with pytest.raises(ValueError, match="not a time pipectl knows; use now, -1h"):
        parse_time(text, NOW)


def test_a_relative_time_after_since_is_not_taken_for_an_option():
    argv = _glue_times(["recordings", "cam", "--since", "-1h", "--until", "-5m"])
    assert argv == ["recordings", "cam", "--since=-1h", "--until=-5m"]
    ns = build_parser().parse_args(argv)
    assert ns.block == "cam" and ns.until - ns.since == pytest.approx(3300, abs=1)


def test_export_needs_a_range_and_a_file(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["export", "cam", "--since", "10:00", "out.mp4"])
    assert "--until" in capsys.readouterr().err


def test_the_table_shows_each_recording_and_each_gap():
    start = datetime.datetime(2025, 6, 1, 12, 0, 0).timestamp()
    entries = [
        {"block": "cam", "file": "a.mp4", "start": start, "end": start + 10, "duration": 10.0,
         "bytes": 600_000},
        {"block": "cam", "file": "b.mp4", "start": start + 10.02, "end": start + 20,
         "duration": 9.98, "bytes": 500_000},
        {"block": "cam", "file": "c.mp4", "start": start + 95, "end": start + 100,
         "duration": 5.0, "bytes": 300_000},
    ]  # fmt: skip
    text = fmt.recordings({"recorders": [{"block": "cam"}], "recordings": entries})
    assert text.splitlines() == [
        "BLOCK  START (local time)   LENGTH  SIZE  FILE",
        "cam    2025-06-01 12:00:00  10.0s   586K  a.mp4",
        "cam    2025-06-01 12:00:10  10.0s   488K  b.mp4",
        "cam    2025-06-01 12:00:20  -       -     (a gap of 1m15s)",
        "cam    2025-06-01 12:01:35  5.0s    293K  c.mp4",
    ]
    assert fmt.recordings({"recorders": [{"block": "cam"}], "recordings": []}) == (
        "no recordings (recorders: cam)"
    )
