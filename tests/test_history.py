"""The daemon's history of each block's figures: a point every 10 s for an hour, bounded."""

from __future__ import annotations

from pipelined.daemon.history import INTERVAL, POINTS, History


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_point_is_the_mean_of_its_ten_seconds_and_the_newest_is_being_made() -> None:
    clock = Clock()
    history = History(clock)
    for second in range(25):  # 2.5 points: two made, one being made
        history.add({"cam": (float(second), 30.0, 10.0 if second < 10 else 50.0)})
        clock.now += 1.0
    series = history.series(["cam"])
    assert series["interval_s"] == INTERVAL and series["span_s"] == POINTS * INTERVAL
    cam = series["blocks"]["cam"]
    assert cam["fps"] == [30.0, 30.0, 30.0]
    assert cam["fps_in"] == [4.5, 14.5, 22.0]  # means of 0..9, 10..19, and 20..24 so far
    assert cam["cpu_percent"] == [10.0, 50.0, 50.0]


def test_an_hour_is_kept_and_no_more_whatever_the_uptime() -> None:
    clock = Clock()
    history = History(clock)
    for _ in range(3 * 3600):  # three hours, a sample a second
        history.add({"cam": (1.0, 2.0, 3.0)})
        clock.now += 1.0
    assert len(history.series(["cam"])["blocks"]["cam"]["fps"]) == POINTS + 1


def test_a_new_block_has_a_short_series_and_a_removed_one_is_forgotten() -> None:
    clock = Clock()
    history = History(clock)
    for second in range(60):
        samples = {"old": (1.0, 1.0, 1.0)}
        if second >= 40:
            samples["new"] = (2.0, 2.0, 2.0)
        history.add(samples)
        clock.now += 1.0
    blocks = history.series(["old", "new"])["blocks"]
    assert len(blocks["old"]["fps"]) == 6 and len(blocks["new"]["fps"]) == 2
    history.forget(["new"])
    assert history.series(["new"])["blocks"]["new"]["fps"] == []


def test_a_loop_that_slept_leaves_zeros_not_a_stretched_line() -> None:
    clock = Clock()
    history = History(clock)
    history.add({"cam": (5.0, 5.0, 5.0)})
    clock.now += 60.0  # the daemon was stopped (SIGSTOP) for a minute
    history.add({"cam": (5.0, 5.0, 5.0)})
    fps = history.series(["cam"])["blocks"]["cam"]["fps"]
    assert fps[0] == 5.0 and fps[1:-1] == [0.0] * (len(fps) - 2) and fps[-1] == 5.0
