"""The built-in demo graph end to end: real workers, real OpenCV, a real recording."""

from __future__ import annotations

import glob

import numpy as np
from harness.daemon import RunningDaemon, wait_for
from video import play


def recordings(d: RunningDaemon) -> list[str]:
    return sorted(glob.glob(str(d.dir / "state" / "recordings" / "*.avi")))


def test_demo_graph_records_filtered_and_edge_images():
    d = RunningDaemon(None).start()  # no --graph: the built-in demo
    try:
        status = d.wait_all_running()
        names = [b["name"] for b in status["blocks"]]
        assert names[:3] == ["camera", "red", "edges"] and "recorder" in names
        assert "screen" not in names  # no display here
        camera = wait_for(
            lambda: "encoding" in ((c := d.block("camera"))["detail"] or "") and c, 60, "detail"
        )
        assert camera["detail"] == (
            "640x480 at 30 fps (asked 640x480 at 30); encoding h264 with libx264 (no hardware"
            " encoder works here), 2 Mbit/s at most, a keyframe every 2 s"
        )  # the synthetic camera encoded once, as a real camera sends it
        wait_for(lambda: d.status()["packet_wires"][0]["packets"] > 30, 60, "H.264 packets")
        wait_for(lambda: (d.dir / "state" / "recordings" / "latest.jpg").exists(), 60, "snapshot")
        wait_for(lambda: d.block("recorder")["fps_in"] > 5, 60, "the recorder to get frames")
        assert d.stop() == 0
        assert d.runs() == set()
        assert "recorder records to" in d.log_text()
        videos = recordings(d)
        assert videos, "no recording was written"
        _, _, frames = play(videos[-1])
    finally:
        d.close()
    assert len(frames) >= 10
    frame = frames[-1]
    assert frame.shape == (480, 1280, 3)  # red | edges, side by side
    left, right = frame[:, :640].astype(int), frame[:, 640:].astype(int)
    b, g, r = left[..., 0], left[..., 1], left[..., 2]
    red = (r > 120) & (g < 90) & (b < 90)
    black = left.sum(axis=2) < 60
    assert red.sum() > 500, "the colour filter's red square is missing"
    assert black.mean() > 0.6, "the colour filter did not black out the rest"
    grey = right.max(axis=2) - right.min(axis=2) < 40
    bright = right.min(axis=2) > 150
    assert grey.mean() > 0.95, "the edge image should be grey"
    assert 0.002 < bright.mean() < 0.3, "the edge image should hold thin lines"
    assert np.array_equal(frame.shape, frames[0].shape)
