"""Measure video: recording a camera, the cameras a box can carry, and what decoding costs.

    python bench/video.py [--quick] [--json] [--only record decode cameras]

A real RTSP server on this machine (GStreamer's, ``tests/rtsp_server.py``) is the camera:
it serves a clip of the synthetic scene with sensor noise, encoded once with libx264 as
a camera sends it (1920x1080, 30 fps, a keyframe a second, about 4 Mbit/s, Annex B), in
a loop. Encoding it takes a few minutes, so the clip is kept in ``$XDG_CACHE_HOME``
(``~/.cache/pipelined-bench``) between runs. Serving it costs the server little; its CPU
is shown for context and never counted, since on a real box the camera is elsewhere.

- **record**: one camera recorded for ``--seconds`` (60), after the first segment and
  5 s more: pipelined with ``codec = "copy"`` (with and without ``latest.jpg``), with
  the camera decoding every frame and the recorder encoding ``h264`` or ``mjpeg`` (at
  30 fps, the stream's rate), and ``ffmpeg -c copy -f segment -segment_time 10`` with
  Frigate's own arguments (the anchor). CPU is every process involved (the daemon and
  each worker; ffmpeg's process), 100 = one core; bytes/s are the growth of the
  recorded files over the window, and what the processes wrote (``/proc/PID/io``,
  ``latest.jpg`` and logs included). Targets: copy at most 1.2 times ffmpeg's CPU, and
  its files' bytes/s within 5 % of the stream's own.
- **decode**: one camera and a sink reading its frames at 640x360: the camera
  worker's CPU with no reader (packets only), decoding every frame (30 converted a
  second), ``decode_fps = 5`` (a keyframe a second is not enough for 5 a second, so
  every frame is decoded and 5 converted), and keyframes only (``decode_fps = 1``).
- **cameras**: N cameras, each recorded with ``copy`` and analysed by
  ``examples/motion.py`` at 5 frames a second, for ``--cameras-seconds`` (120): the
  largest N that keeps up. Two ways: ``main`` decodes the main stream at
  ``decode_fps = 5``; ``sub`` records the main stream and analyses the camera's
  640x360 sub-stream at 5 fps (a second camera block on a second URL, Frigate's advice).
  Keeping up: every camera receives the whole stream, every recorder lost no packet and
  its segments follow each other without a hole, every motion block gets its 5 frames
  a second and drops none of them, nothing restarted. N goes up from 8 while it keeps
  up (by 4), else down (by 2), then halves the gap. Target: at least 8.

``--quick`` is a smoke test (small clips, short windows, N = 1 only): its numbers mean
nothing. ``--json`` prints the results for machines. A missed target prints MISS, never
an error exit. Everything is cleaned up on any exit. Results: bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import inspect
import itertools
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the harness and the RTSP server
import rtsp_server  # noqa: E402
from harness.daemon import RunningDaemon, sigterm_as_interrupt, worker_pids  # noqa: E402
from rtsp_server import AccessUnit, RtspServer, read_clip, write_clip  # noqa: E402

MOTION = ROOT / "examples" / "motion.py"
SEGMENT_SECONDS = 10
ANALYSIS_FPS = 5
ANALYSIS_SIZE = [640, 360]
CONTIGUOUS = 1.0  # seconds between one segment's end and the next one's start: no hole
TARGET_CPU_RATIO = 1.2
TARGET_BYTES = 0.05
TARGET_CAMERAS = 8
FFMPEG = "ffmpeg"
# Frigate's preset-rtsp-generic input and preset-record-generic output arguments.
FRIGATE_INPUT = [
    "-avoid_negative_ts", "make_zero", "-fflags", "+genpts+discardcorrupt",
    "-rtsp_transport", "tcp", "-timeout", "5000000", "-use_wallclock_as_timestamps", "1",
]  # fmt: skip
FRIGATE_RECORD = [
    "-f", "segment", "-segment_time", str(SEGMENT_SECONDS), "-segment_format", "mp4",
    "-reset_timestamps", "1", "-strftime", "1", "-c", "copy", "-an",
]  # fmt: skip


# -- the camera's streams --------------------------------------------------------------


@dataclass(frozen=True)
class Stream:
    """A clip a camera sends: its size, rate, GOP (frames) and bit rate."""

    size: tuple[int, int]
    fps: int
    gop: int
    bit_rate: int
    seconds: int = 10
    noise: float = 4.0  # grey levels: a sensor's noise, so the bits are spent as a camera's

    def describe(self) -> str:
        w, h = self.size
        return (
            f"{w}x{h} H.264 at {self.fps} fps, a keyframe every {self.gop / self.fps:g} s,"
            f" {self.bit_rate / 1e6:g} Mbit/s, {self.seconds} s looped"
        )


MAIN = Stream((1920, 1080), 30, 30, 4_000_000)
SUB = Stream((640, 360), 5, 5, 500_000)
QUICK_MAIN = Stream((640, 360), 30, 30, 1_000_000, seconds=2)
QUICK_SUB = Stream((320, 180), 5, 5, 200_000, seconds=2)


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "pipelined-bench"


def clip_of(stream: Stream, log: Callable[[str], None]) -> list[AccessUnit]:
    """The stream's clip, from the cache if it was encoded before with this encoder.

    One group of pictures more is encoded and the first dropped: x264's rate control
    starts with a small keyframe, and the loop should look like the rest of the clip."""
    recipe = inspect.getsource(rtsp_server.encode_clip) + repr(asdict(stream))
    key = hashlib.sha256(recipe.encode()).hexdigest()[:12]
    w, h = stream.size
    path = cache_dir() / f"clip-{w}x{h}-{stream.fps}fps-{stream.bit_rate // 1000}k-{key}.aus"
    if path.exists():
        return read_clip(path)
    log(f"encoding the clip ({stream.describe()}) into {path}; once")
    seconds = stream.seconds + stream.gop / stream.fps
    clip = rtsp_server.encode_clip(
        size=stream.size, fps=stream.fps, gop=stream.gop, bit_rate=stream.bit_rate,
        seconds=seconds, noise=stream.noise,
    )[stream.gop :]  # fmt: skip
    assert clip[0].keyframe, "the clip must start at a keyframe"
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".part")
    write_clip(partial, clip)
    partial.replace(path)
    return clip


def clip_bytes_per_second(clip: list[AccessUnit], fps: int) -> float:
    return sum(len(au.data) for au in clip) * fps / len(clip)


@dataclass(frozen=True)
class Timing:
    """Seconds: to settle after the first file or frame, and each kind of window."""

    settle: float
    record: float
    decode: float
    cameras: float


# -- measuring processes ---------------------------------------------------------------


def cpu_seconds(pid: int) -> float | None:
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return None
    return times.user + times.system


def rss(pid: int) -> int:
    try:
        return psutil.Process(pid).memory_info().rss
    except psutil.Error:
        return 0


def written_bytes(pid: int) -> int | None:
    """Bytes the process sent to storage (cancelled ones, as of a file deleted before
    writeback, taken off)."""
    try:
        io = Path(f"/proc/{pid}/io").read_text()
    except OSError:
        return None
    fields = dict(line.split(": ") for line in io.splitlines())
    return int(fields["write_bytes"]) - int(fields["cancelled_write_bytes"])


@dataclass
class Meter:
    """CPU seconds and bytes written by a set of processes between start and stop."""

    pids: list[int]
    cpu0: dict[int, float] = field(default_factory=dict)
    io0: dict[int, int] = field(default_factory=dict)
    t0: float = 0.0

    def start(self) -> Meter:
        self.t0 = time.monotonic()
        for pid in self.pids:
            cpu, io = cpu_seconds(pid), written_bytes(pid)
            if cpu is not None and io is not None:
                self.cpu0[pid], self.io0[pid] = cpu, io
        return self

    def stop(self) -> tuple[float, float, float]:
        """(seconds, CPU % of one core, bytes written a second) since start."""
        elapsed = time.monotonic() - self.t0
        cpu = io = 0.0
        for pid in self.cpu0:
            c, w = cpu_seconds(pid), written_bytes(pid)
            if c is not None and w is not None:
                cpu += c - self.cpu0[pid]
                io += w - self.io0[pid]
        return elapsed, 100 * cpu / elapsed, io / elapsed


INSTANCES: list[str] = []  # every daemon's, for the smoke test to check nothing is left


def daemon(graph_text: str, tmp: Path) -> RunningDaemon:
    """A daemon (not started) with its folder in the bench's temp dir."""
    d = RunningDaemon(graph_text, prefix="bv", parent=tmp)
    INSTANCES.append(d.instance)
    return d


def daemon_pids(d: RunningDaemon) -> list[int]:
    assert d.proc is not None
    return [d.proc.pid, *worker_pids(d.instance)]


def files_bytes(folder: Path) -> int:
    """The size of the recorded video files (not latest.jpg, not a temporary file)."""
    total = 0
    for path in folder.rglob("*"):
        if path.suffix in (".mp4", ".avi") and not path.name.startswith("."):
            try:
                total += path.stat().st_size
            except FileNotFoundError:
                pass
    return total


def pictures_per_second(folder: Path) -> float:
    """Pictures a second of recording in the files: their packets over their length."""
    import av

    packets = 0
    seconds = 0.0
    for path in sorted(folder.rglob("*")):
        if path.suffix not in (".mp4", ".avi") or path.name.startswith("."):
            continue
        try:
            with av.open(str(path)) as container:
                stream = container.streams.video[0]
                times = [p.pts for p in container.demux(stream) if p.size and p.pts is not None]
        except (av.error.FFmpegError, IndexError):
            continue  # a file cut short
        if len(times) > 1:
            packets += len(times) - 1
            seconds += float((max(times) - min(times)) * stream.time_base)
    return packets / seconds if seconds else 0.0


def wait_until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.2)
    raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")


@contextmanager
def serving(clip: list[AccessUnit], fps: int) -> Iterator[RtspServer]:
    server = RtspServer.clip_of(clip, fps=fps)
    with server:
        yield server


# -- record: one camera, recorded five ways ----------------------------------------------


def camera_block(name: str, url: str, **keys: Any) -> str:
    lines = [f"[blocks.{name}]", 'type = "camera"', f'source = "{url}"']
    lines += [f"{k} = {json.dumps(v)}" for k, v in keys.items()]
    return "\n".join(lines) + "\n"


def block(name: str, type_: str, **keys: Any) -> str:
    lines = [f"[blocks.{name}]", f"type = {json.dumps(type_)}"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in keys.items()]
    return "\n".join(lines) + "\n"


def recorder(name: str, source: str, folder: Path, **keys: Any) -> str:
    return block(
        name, "recorder", input=source, directory=str(folder),
        segment_seconds=SEGMENT_SECONDS, min_free_bytes=0, max_total_bytes=0, **keys,
    )  # fmt: skip


RECORD_ROWS = {
    "copy": "pipelined, codec = copy",
    "copy-nosnap": "pipelined, copy, no latest.jpg",
    "h264": "pipelined, decode + h264",
    "mjpeg": "pipelined, decode + mjpeg",
    "ffmpeg": "ffmpeg -c copy (Frigate)",
}


def record_graph(kind: str, url: str, folder: Path, stream: Stream) -> str:
    size = list(stream.size)
    if kind == "copy":
        return camera_block("cam", url) + recorder("rec", "cam", folder, codec="copy")
    if kind == "copy-nosnap":
        return camera_block("cam", url) + recorder(
            "rec", "cam", folder, codec="copy", snapshot_interval=0
        )
    encode = {"bit_rate": stream.bit_rate} if kind == "h264" else {}
    return camera_block("cam", url, size=size, fps=stream.fps) + recorder(
        "rec", "cam", folder, codec=kind, fps=stream.fps, **encode
    )


def record_row(
    kind: str, url: str, stream: Stream, timing: Timing, tmp: Path, server: RtspServer
) -> dict[str, Any]:
    folder = tmp / f"rec-{kind}"
    folder.mkdir()
    with ExitStack() as stack:
        if kind == "ffmpeg":
            proc = subprocess.Popen(
                [FFMPEG, "-hide_banner", "-loglevel", "error", *FRIGATE_INPUT, "-i", url,
                 *FRIGATE_RECORD, str(folder / "%Y%m%d%H%M%S.mp4")],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=stack.enter_context(open(tmp / "ffmpeg.log", "ab")),
                start_new_session=True,
            )  # fmt: skip
            stack.callback(stop_process, proc)
            pids = lambda: [proc.pid]  # noqa: E731
            restarts = lambda: 0 if proc.poll() is None else 1  # noqa: E731
        else:
            d = daemon(record_graph(kind, url, folder, stream), tmp)
            stack.callback(d.close)
            d.start().wait_all_running(120)
            pids = lambda: daemon_pids(d)  # noqa: E731
            restarts = lambda: sum(b["restarts"] for b in d.status()["blocks"])  # noqa: E731
        wait_until(lambda: files_bytes(folder) > 0, 60, f"{kind}: a first file")
        time.sleep(timing.settle)
        bytes0, server_meter = files_bytes(folder), Meter([server.pid or 0]).start()
        meter = Meter(pids()).start()
        time.sleep(timing.record)
        elapsed, cpu, io = meter.stop()
        growth = (files_bytes(folder) - bytes0) / elapsed
        _, server_cpu, _ = server_meter.stop()
        lost = restarts()
    return {
        "kind": kind,
        "what": RECORD_ROWS[kind],
        "seconds": round(elapsed, 1),
        "cpu_pct": cpu,
        "files_bytes_per_s": growth,
        "written_bytes_per_s": io,
        "pictures_per_s": pictures_per_second(folder),
        "server_cpu_pct": server_cpu,
        "restarts": lost,
    }


def stop_process(proc: subprocess.Popen) -> None:
    """ffmpeg's clean stop (q on stdin is gone: SIGINT), then SIGKILL if it hangs."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_record(args: argparse.Namespace, tmp: Path, log: Callable[[str], None]) -> dict:
    stream = QUICK_MAIN if args.quick else MAIN
    clip = clip_of(stream, log)
    stream_bps = clip_bytes_per_second(clip, stream.fps)
    rows = []
    with serving(clip, stream.fps) as server:
        for kind in RECORD_ROWS:
            log(f"record: {RECORD_ROWS[kind]}, {args.timing.record:g} s")
            rows.append(record_row(kind, server.url, stream, args.timing, tmp, server))
    anchor = next(r for r in rows if r["kind"] == "ffmpeg")
    for r in rows:
        r["cpu_vs_ffmpeg"] = r["cpu_pct"] / anchor["cpu_pct"] if anchor["cpu_pct"] else None
        r["bytes_vs_stream"] = r["files_bytes_per_s"] / stream_bps
    copy = next(r for r in rows if r["kind"] == "copy")
    targets = [
        target(
            f"copy's CPU at most {TARGET_CPU_RATIO:g} x ffmpeg's",
            copy["cpu_vs_ffmpeg"] is not None and copy["cpu_vs_ffmpeg"] <= TARGET_CPU_RATIO,
            f"{copy['cpu_pct']:.1f} % against {anchor['cpu_pct']:.1f} %"
            f" ({fmt_ratio(copy['cpu_vs_ffmpeg'])})",
        ),
        target(
            f"copy's bytes/s within {TARGET_BYTES:.0%} of the stream's",
            abs(copy["bytes_vs_stream"] - 1) <= TARGET_BYTES,
            f"{copy['files_bytes_per_s'] / 1e3:.1f} kB/s against {stream_bps / 1e3:.1f} kB/s"
            f" ({fmt_ratio(copy['bytes_vs_stream'])})",
        ),
    ]
    return {
        "stream": stream.describe(),
        "stream_bytes_per_s": stream_bps,
        "rows": rows,
        "targets": targets,
    }


# -- decode: what a camera's frames cost -------------------------------------------------

DECODE_ROWS = {  # kind: (what, the sub-stream?, decode_fps or None: no reader at all)
    "none": ("main, no reader: packets only", False, None),
    "every": ("main, every frame, 30 converted/s", False, 0.0),
    "fps5": ("main, decode_fps = 5 (every frame decoded)", False, 5.0),
    "keyframes": ("main, keyframes only (decode_fps = 1)", False, 1.0),
    "sub-none": ("sub, no reader: packets only", True, None),
    "sub-every": ("sub, every frame (5 a second)", True, 0.0),
}
MODES = {None: "not decoding", 0.0: "decoding every frame", 5.0: "decoding every frame",
         1.0: "decoding keyframes only"}  # fmt: skip
"""What the camera's status says once it decodes as the row asks."""


def run_decode(args: argparse.Namespace, tmp: Path, log: Callable[[str], None]) -> dict:
    """Every row's camera at once in one daemon, each measured by its own worker's CPU:
    together they use well under the box, so none waits for another."""
    main, sub = (QUICK_MAIN, QUICK_SUB) if args.quick else (MAIN, SUB)
    main_clip, sub_clip = clip_of(main, log), clip_of(sub, log)
    log(f"decode: {len(DECODE_ROWS)} cameras at once, {args.timing.decode:g} s")
    with serving(main_clip, main.fps) as main_server, serving(sub_clip, sub.fps) as sub_server:
        text = ""
        for kind, (_, on_sub, decode_fps) in DECODE_ROWS.items():
            stream, url = (sub, sub_server.url) if on_sub else (main, main_server.url)
            keys: dict[str, Any] = {"size": ANALYSIS_SIZE, "fps": stream.fps}
            if decode_fps is not None:
                keys["decode_fps"] = decode_fps
            text += camera_block(kind, url, **keys)
            if decode_fps is not None:  # a reader of the frames: decoding starts
                text += block(f"{kind}-sink", "userblocks.runtime_blocks:Tally", input=kind,
                              path=str(tmp / f"tally-{kind}"))  # fmt: skip
        with daemon(text, tmp) as d:
            d.start().wait_all_running(120)

            def decoding_as_asked() -> bool:
                status = {b["name"]: b for b in d.status()["blocks"]}
                return all(
                    MODES[decode_fps] in (status[kind]["detail"] or "")
                    for kind, (_, _, decode_fps) in DECODE_ROWS.items()
                )

            wait_until(decoding_as_asked, 60, "every camera decoding as its row asks")
            time.sleep(args.timing.settle)
            first = {b["name"]: b for b in d.status()["blocks"]}
            meters = {kind: Meter([first[kind]["pid"]]).start() for kind in DECODE_ROWS}
            time.sleep(args.timing.decode)
            results = {kind: meter.stop() for kind, meter in meters.items()}
            last = {b["name"]: b for b in d.status()["blocks"]}
    rows = []
    for kind, (what, _, _) in DECODE_ROWS.items():
        elapsed, cpu, _ = results[kind]
        rows.append({
            "kind": kind,
            "what": what,
            "camera_cpu_pct": cpu,
            "frames_per_s": (last[kind]["frames_out"] - first[kind]["frames_out"]) / elapsed,
            "detail": last[kind]["detail"],
        })  # fmt: skip
    for r in rows:
        base = "sub-none" if r["kind"].startswith("sub") else "none"
        r["decode_cost_pct"] = r["camera_cpu_pct"] - next(
            b["camera_cpu_pct"] for b in rows if b["kind"] == base
        )
    return {"main": main.describe(), "sub": sub.describe(), "size": ANALYSIS_SIZE, "rows": rows}


# -- cameras: how many a box carries -------------------------------------------------------


def cameras_graph(way: str, n: int, main_url: str, sub_url: str, rec: Path) -> str:
    text = ""
    for i in range(n):
        if way == "main":
            text += camera_block(f"cam{i}", main_url, size=ANALYSIS_SIZE, decode_fps=ANALYSIS_FPS)
            text += recorder(f"rec{i}", f"cam{i}", rec / str(i), codec="copy")
            text += block(f"motion{i}", "motion:Motion", input=f"cam{i}")
        else:
            text += camera_block(f"cam{i}", main_url)
            text += recorder(f"rec{i}", f"cam{i}", rec / str(i), codec="copy")
            text += camera_block(f"sub{i}", sub_url, size=ANALYSIS_SIZE, decode_fps=ANALYSIS_FPS)
            text += block(f"motion{i}", "motion:Motion", input=f"sub{i}")
    return text


@dataclass
class Sample:
    """What status says at one moment, per block and wire."""

    t: float
    blocks: dict[str, dict[str, Any]]
    packets: dict[str, int]

    @classmethod
    def of(cls, d: RunningDaemon) -> Sample:
        status = d.status()
        return cls(
            time.monotonic(),
            {b["name"]: b for b in status["blocks"]},
            {w["name"]: w["packets"] for w in status["packet_wires"]},
        )


def watch_decoders(d: RunningDaemon, seconds: float) -> dict[str, str]:
    """Wait ``seconds``, looking at the cameras' status every few: those whose decoder was
    too slow for its stream (it drops groups of pictures), and when."""
    slow: dict[str, str] = {}
    start = time.monotonic()
    while (left := seconds - (time.monotonic() - start)) > 0:
        time.sleep(min(5.0, left))
        for b in d.status()["blocks"]:
            if "too slow for the stream" in (b["detail"] or "") and b["name"] not in slow:
                slow[b["name"]] = f"at {time.monotonic() - start:.0f} s"
    return slow


def holes(segments: list, since_ns: int, until_ns: int) -> list[float]:
    """Seconds between segments (more than CONTIGUOUS) within the window; -1 if none
    covers its start."""
    found = []
    inside = [s for s in segments if s.end_ns >= since_ns and s.start_ns <= until_ns]
    for a, b in itertools.pairwise(inside):
        if (b.start_ns - a.end_ns) / 1e9 > CONTIGUOUS:
            found.append((b.start_ns - a.end_ns) / 1e9)
    if not inside or inside[0].start_ns > since_ns + CONTIGUOUS * 1e9:
        found.append(-1.0)  # nothing covers the window's start
    return found


def cameras_trial(
    way: str, n: int, urls: tuple[str, str], streams: tuple[Stream, Stream],
    timing: Timing, tmp: Path, servers: list[RtspServer],
) -> dict[str, Any]:  # fmt: skip
    from pipelined.workers.video.segments import Namer

    rec = tmp / f"cams-{way}-{n}"
    d = daemon(cameras_graph(way, n, *urls, rec), tmp)
    shutil.copy(MOTION, d.dir / "motion.py")  # `type = "motion:Motion"` beside the graph
    main, _ = streams
    problems: list[str] = []
    with d:
        d.start().wait_all_running(300)
        wait_until(
            lambda: all(Namer(f"rec{i}").scan(rec / str(i)) for i in range(n)), 120,
            "a first segment from every recorder",
        )  # fmt: skip
        try:  # a box that cannot keep up may never get there: the trial says so
            wait_until(
                lambda: all(d.block(f"motion{i}")["frames_in"] > 0 for i in range(n)), 60,
                "a first frame analysed by every motion block",
            )  # fmt: skip
        except TimeoutError as exc:
            problems.append(str(exc))
        time.sleep(2 * timing.settle)  # every worker's start-up work done
        first = Sample.of(d)
        since_ns = time.time_ns()
        pids = daemon_pids(d)
        meter, daemon_meter = Meter(pids).start(), Meter(pids[:1]).start()
        server_meter = Meter([s.pid or 0 for s in servers]).start()
        load0 = os.getloadavg()[0]
        slow = watch_decoders(d, timing.cameras)
        elapsed, cpu, _ = meter.stop()
        _, daemon_cpu, _ = daemon_meter.stop()
        _, server_cpu, _ = server_meter.stop()
        memory = sum(rss(pid) for pid in pids)
        last = Sample.of(d)
        until_ns = time.time_ns()
        load1 = os.getloadavg()[0]
    dt = last.t - first.t
    motion_fps, packets_fps = [], []
    for i in range(n):
        cam, rec_block, motion = f"cam{i}", f"rec{i}", f"motion{i}"
        analysed = cam if way == "main" else f"sub{i}"
        b0, b1 = first.blocks, last.blocks
        for name in (cam, rec_block, motion, analysed):
            if b1[name]["restarts"] != b0[name]["restarts"] or b1[name]["state"] != "RUNNING":
                problems.append(f"{name} restarted or stopped")
            if b1[name]["reason"]:
                problems.append(f"{name}: {b1[name]['reason']}")
        packets = (last.packets[cam] - first.packets[cam]) / dt
        packets_fps.append(packets)
        if packets < 0.97 * main.fps:
            problems.append(f"{cam} received {packets:.1f} of {main.fps} packets/s")
        for name in (rec_block, motion):
            missed = b1[name]["missed"] - b0[name]["missed"]
            taken = b1[name]["frames_in"] - b0[name]["frames_in"]
            if missed > (0 if name == rec_block else 0.01 * taken):
                problems.append(f"{name} missed {missed} of {taken + missed}")
        fps = (b1[motion]["frames_in"] - b0[motion]["frames_in"]) / dt
        motion_fps.append(fps)
        if fps < 0.9 * ANALYSIS_FPS:
            made = (b1[analysed]["frames_out"] - b0[analysed]["frames_out"]) / dt
            problems.append(
                f"{motion} analysed {fps:.2f} frames/s, not {ANALYSIS_FPS}"
                f" ({analysed} made {made:.2f})"
            )
        if analysed in slow:
            problems.append(f"{analysed}'s decoder too slow for the stream: {slow[analysed]}")
        found = holes(Namer(rec_block).scan(rec / str(i)), since_ns, until_ns)
        if found:
            problems.append(f"{rec_block}: holes between segments {found}")
    shutil.rmtree(rec, ignore_errors=True)
    return {
        "way": way,
        "cameras": n,
        "keeps_up": not problems,
        "problems": problems[:6],
        "seconds": round(elapsed, 1),
        "cpu_pct": cpu,
        "daemon_cpu_pct": daemon_cpu,
        "memory_bytes": memory,
        "server_cpu_pct": server_cpu,
        "motion_fps_min": min(motion_fps),
        "packets_fps_min": min(packets_fps),
        "load": [round(load0, 2), round(load1, 2)],
    }


def ladder(first: int, lowest: int, highest: int, trial: Callable[[int], bool]) -> int:
    """The largest N in [lowest, highest] for which ``trial`` passes (0 if none), from
    ``first``: up by 4 while it passes, else down by 2 while it fails, then halving the
    gap between the largest that passed and the smallest that failed above it."""
    passed: set[int] = set()
    failed: set[int] = set()

    def known(n: int) -> bool:
        if n not in passed and n not in failed:
            (passed if trial(n) else failed).add(n)
        return n in passed

    n, up = first, known(first)
    step = 4 if up else -2
    while lowest <= n + step <= highest and known(n + step) == up:
        n += step
    low = max(passed, default=lowest - 1)
    high = min((f for f in failed if f > low), default=highest + 1)
    while high - low > 1:
        middle = (low + high) // 2
        if known(middle):
            low = middle
        else:
            high = middle
    return max(passed, default=0)


def run_cameras(args: argparse.Namespace, tmp: Path, log: Callable[[str], None]) -> dict:
    main, sub = (QUICK_MAIN, QUICK_SUB) if args.quick else (MAIN, SUB)
    main_clip, sub_clip = clip_of(main, log), clip_of(sub, log)
    trials: list[dict[str, Any]] = []
    best: dict[str, int] = {}
    with serving(main_clip, main.fps) as main_server, serving(sub_clip, sub.fps) as sub_server:
        urls = (main_server.url, sub_server.url)
        for way in args.ways:

            def trial(n: int, way: str = way) -> bool:
                log(f"cameras: {way} stream analysed, {n} cameras, {args.timing.cameras:g} s")
                servers = [main_server] if way == "main" else [main_server, sub_server]
                row = cameras_trial(way, n, urls, (main, sub), args.timing, tmp, servers)
                trials.append(row)
                log(f"  {'keeps up' if row['keeps_up'] else 'falls behind'}: {row['problems']}")
                return row["keeps_up"]

            if args.cameras:
                passed = [n for n in args.cameras if trial(n)]
                best[way] = max(passed, default=0)
            else:
                best[way] = ladder(TARGET_CAMERAS, 1, args.max_cameras, trial)
    targets = [
        target(
            f"cameras per box, {way} stream analysed: at least {TARGET_CAMERAS}",
            best[way] >= TARGET_CAMERAS,
            f"{best[way]} keep up",
        )
        for way in args.ways
    ]
    return {
        "main": main.describe(),
        "sub": sub.describe(),
        "trials": trials,
        "best": best,
        "targets": targets,
    }


# -- the report ------------------------------------------------------------------------------


def target(what: str, ok: bool, numbers: str) -> dict[str, Any]:
    return {"target": what, "verdict": "PASS" if ok else "MISS", "numbers": numbers}


def fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def record_table(result: dict) -> str:
    lines = [
        f"record: {result['stream']}; the stream is {result['stream_bytes_per_s'] / 1e3:.1f} kB/s",
        f"{'':32} {'CPU %':>7} {'vs ffmpeg':>9} {'files kB/s':>10} {'vs stream':>9}"
        f" {'written kB/s':>12} {'pictures/s':>10} {'server CPU %':>12}",
    ]
    for r in result["rows"]:
        lines.append(
            f"{r['what']:32} {r['cpu_pct']:>7.1f} {fmt_ratio(r['cpu_vs_ffmpeg']):>9}"
            f" {r['files_bytes_per_s'] / 1e3:>10.1f} {fmt_ratio(r['bytes_vs_stream']):>9}"
            f" {r['written_bytes_per_s'] / 1e3:>12.1f} {r['pictures_per_s']:>10.1f}"
            f" {r['server_cpu_pct']:>12.1f}"
            + (f"  ({r['restarts']} restarts)" if r["restarts"] else "")
        )
    return "\n".join(lines)


def decode_table(result: dict) -> str:
    w, h = result["size"]
    lines = [
        f"decode: main {result['main']}; sub {result['sub']}; frames at {w}x{h}",
        f"{'':44} {'camera CPU %':>12} {'decoding %':>10} {'frames/s':>8}",
    ]
    for r in result["rows"]:
        lines.append(
            f"{r['what']:44} {r['camera_cpu_pct']:>12.1f} {r['decode_cost_pct']:>+10.1f}"
            f" {r['frames_per_s']:>8.1f}"
        )
    return "\n".join(lines)


def cameras_table(result: dict) -> str:
    lines = [
        f"cameras: main {result['main']}; sub {result['sub']}",
        f"{'way':5} {'N':>3} {'keeps up':>8} {'CPU %':>6} {'daemon %':>8} {'memory MB':>9}"
        f" {'server %':>8} {'motion fps':>10} {'packets/s':>9} {'load':>11}  problems",
    ]
    for r in result["trials"]:
        lines.append(
            f"{r['way']:5} {r['cameras']:>3} {'yes' if r['keeps_up'] else 'no':>8}"
            f" {r['cpu_pct']:>6.0f} {r['daemon_cpu_pct']:>8.1f} {r['memory_bytes'] / 2**20:>9.0f}"
            f" {r['server_cpu_pct']:>8.0f} {r['motion_fps_min']:>10.2f}"
            f" {r['packets_fps_min']:>9.1f} {r['load'][0]:>5.2f}-{r['load'][1]:<5.2f}"
            f"  {'; '.join(r['problems'][:2])}"
        )
    lines.append("largest N: " + ", ".join(f"{k} {v}" for k, v in result["best"].items()))
    return "\n".join(lines)


def commit() -> str:
    try:
        done = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, timeout=10,
        )  # fmt: skip
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10,
        )  # fmt: skip
    except OSError:
        return "?"
    return done.stdout.strip() + (" (modified)" if dirty.stdout.strip() else "")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke test: small and short")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--only", nargs="+", choices=("record", "decode", "cameras"),
                        default=["record", "decode", "cameras"])  # fmt: skip
    parser.add_argument("--seconds", type=float, help="record: the window (60)")
    parser.add_argument("--decode-seconds", type=float, help="decode: each window (20)")
    parser.add_argument("--cameras-seconds", type=float, help="cameras: each trial (120)")
    parser.add_argument("--cameras", type=int, nargs="+", help="cameras: these N, no search")
    parser.add_argument("--max-cameras", type=int, default=24)
    parser.add_argument("--ways", nargs="+", choices=("main", "sub"), default=["main", "sub"])
    args = parser.parse_args()
    quick = args.quick
    args.timing = Timing(
        settle=0.5 if quick else 5.0,
        record=args.seconds or (2.0 if quick else 60.0),
        decode=args.decode_seconds or (2.0 if quick else 20.0),
        cameras=args.cameras_seconds or (3.0 if quick else 120.0),
    )
    if quick and not args.cameras:
        args.cameras = [1]
    if (why := rtsp_server.unavailable()) is not None:
        print(f"bench/video.py needs GStreamer's RTSP server: {why}", file=sys.stderr)
        return 1

    def log(line: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {line}", file=sys.stderr, flush=True)

    load0 = os.getloadavg()
    started = datetime.datetime.now(datetime.UTC)
    report: dict[str, Any] = {
        "date": f"{started:%Y-%m-%d %H:%M} UTC",
        "commit": commit(),
        "machine": f"{os.cpu_count()} cores, {platform.processor() or platform.machine()},"
        f" Linux {platform.release()}, Python {platform.python_version()}",
        "quick": quick,
    }
    runs = {"record": run_record, "decode": run_decode, "cameras": run_cameras}
    tmp = Path(tempfile.mkdtemp(prefix="bv"))
    report["tmp"] = str(tmp)
    try:
        with sigterm_as_interrupt():
            for name in args.only:
                report[name] = runs[name](args, tmp, log)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report["instances"] = INSTANCES
    report["load"] = {"before": [round(x, 2) for x in load0],
                      "after": [round(x, 2) for x in os.getloadavg()]}  # fmt: skip
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    print(
        f"{report['date']}, commit {report['commit']}, {report['machine']};"
        f" load {report['load']['before'][0]:.2f} before, {report['load']['after'][0]:.2f} after"
    )
    tables = {"record": record_table, "decode": decode_table, "cameras": cameras_table}
    for name in args.only:
        print()
        print(tables[name](report[name]))
    verdicts = [t for name in args.only for t in report[name].get("targets", [])]
    if verdicts:
        print()
        for t in verdicts:
            print(f"{t['verdict']}  {t['target']}: {t['numbers']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
