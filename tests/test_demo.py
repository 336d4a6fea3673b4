"""The built-in demo graph end to end: real workers, real OpenCV, a real recording."""

from __future__ import annotations

import glob

from harness.daemon import RunningDaemon, wait_for
from video import play


def recordings(d: RunningDaemon) -> list[str]:
    return sorted(glob.glob(str(d.dir / "state" / "recordings" / "*.mp4")))


def test_demo_graph_records_the_cameras_h264_as_it_comes():
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
        [packets] = d.status()["packet_wires"]
        assert packets["name"] == "camera" and packets["readers"] == ["recorder"]
        wait_for(lambda: d.status()["packet_wires"][0]["packets"] > 30, 60, "H.264 packets")
        wait_for(lambda: (d.dir / "state" / "recordings" / "latest.jpg").exists(), 60, "snapshot")
        wait_for(lambda: len(recordings(d)) >= 2, 60, "a first finished segment")
        assert d.stop() == 0
        assert d.runs() == set()
        assert "recorder records to" in d.log_text()
        videos = recordings(d)
        _, _, frames = play(videos[0])
    finally:
        d.close()
    assert len(frames) >= 10
    frame = frames[-1]
    assert frame.shape == (480, 640, 3)  # the camera's own picture, not re-encoded
    b, g, r = (frame[..., i].astype(int) for i in range(3))
    red = (r > 120) & (g < 90) & (b < 90)
    assert red.sum() > 500, "the synthetic scene's red square is missing"
    grey = (frame.max(axis=2).astype(int) - frame.min(axis=2)) < 30
    assert grey.mean() > 0.5, "the scene's grey background is missing"
