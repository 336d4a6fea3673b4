"""The built-in demo graph end to end: real workers, real OpenCV, a real recording; a
second start that finds the first; addresses said only once something listens there."""

from __future__ import annotations

import glob
import socket
import subprocess

from harness.daemon import RunningDaemon, free_port, wait_for
from harness.graphs import counter, graph
from video import play


def recordings(d: RunningDaemon) -> list[str]:
    return sorted(glob.glob(str(d.dir / "state" / "recordings" / "*.mp4")))


def test_demo_graph_records_the_cameras_h264_as_it_comes():
    d = RunningDaemon(None).start()  # no --graph: the built-in demo
    try:
        status = d.wait_all_running()
        names = [b["name"] for b in status["blocks"]]
        assert names == ["camera", "red", "edges", "screen", "recorder", "preview"]
        screen = d.block("screen")  # the same graph as examples/five-blocks.toml
        assert screen["state"] == "STOPPED" and screen["autostart"] is False
        assert screen["reason"] == (
            "autostart = false: not started until asked (pipectl start screen)"
        )
        assert "screen (screen) is not started until asked (autostart = false)" in d.log_text()
        # The recorder takes in the camera's packets and says what it wrote.
        recorder = wait_for(lambda: (r := d.block("recorder"))["fps"] > 0 and r, 60, "writing")
        assert recorder["frames_out"] > 0 and recorder["fps_in"] > 0

        # A second start finds the first before it makes anything or says any address.
        runs = d.runs()
        second = subprocess.run(d.command(), capture_output=True, text=True, env=d.env,
                                cwd=d.dir, timeout=60)  # fmt: skip
        assert second.returncode == 1
        assert f"a daemon already answers at {d.socket} (instance {d.instance})" in second.stderr
        assert f"pipectl --socket {d.socket} status`" in second.stderr  # how to see it
        assert "http://" not in second.stderr and "records to" not in second.stderr
        assert d.runs() == runs and d.block("camera")["restarts"] == 0  # the first's intact
        # Asked, the screen starts; without a display it says why and stays FAILED.
        d.call("start", blocks=["screen"])
        failed = d.wait_state("screen", "FAILED")
        assert "needs a display, and $DISPLAY is not set" in failed["reason"]
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


def test_a_previews_address_is_said_once_it_listens_and_why_not_before():
    """A port held by someone else (a first demo's preview): the banner says the preview
    waits for it, never its address; once the port is free the address follows."""
    port = free_port()
    held = socket.create_server(("127.0.0.1", port))
    preview = f'[blocks.preview]\ntype = "preview"\ninput = "count"\nlisten = "127.0.0.1:{port}"\n'
    d = RunningDaemon(graph(counter(), preview)).start()
    try:
        d.wait_all_running()
        d.until(lambda: "preview does not serve yet" in d.log_text(), 30, "why not yet")
        log = d.log_text()
        assert f"listen 127.0.0.1:{port}: the address is in use" in log
        assert f"streams at http://127.0.0.1:{port}/" not in log
        held.close()
        d.until(lambda: f"preview streams at http://127.0.0.1:{port}/" in d.log_text(), 30,
                "the address once the preview has the port")  # fmt: skip
    finally:
        held.close()
        d.close()
