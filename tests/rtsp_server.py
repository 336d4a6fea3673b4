"""A real RTSP server for tests and benchmarks: GStreamer's, run by Debian's python3.

    server = RtspServer.h264(size=(320, 240), fps=15, gop=15)   # x264enc, live
    with server:                          # start() ... stop()
        server.url                        # rtsp://127.0.0.1:PORT/cam
        server.sent()                     # the H.264 it sent so far (Annex B, every NAL)
        server.pause(); server.resume()   # SIGSTOP / SIGCONT: a camera that hangs
        server.stop(); server.start()     # killed, and back on the same port

    clip = encode_clip(size=(1920, 1080), fps=30, gop=30, bit_rate=4_000_000, seconds=10)
    RtspServer.clip(clip, fps=30)         # a clip's access units, looped forever
    RtspServer.mjpeg(...), RtspServer.audio()   # JPEG over RTP; a stream with no video

Each client gets a pipeline of its own (a server whose clients share one can abort when
a client comes back while it is torn down): an ``h264`` client's stream starts at its
own first keyframe, a ``clip`` client's at the clip's first access unit.

Kinds: ``h264`` encodes ``videotestsrc`` live with x264enc (a known GOP, and a copy of
every byte it sent in ``sent()``); ``clip`` serves pre-encoded access units paced to
``fps`` (cheap for the server, so a benchmark measures the client; a clip whose
resolution changes midway changes it on the wire); ``mjpeg``; ``audio`` (G.711, no
video at all). The server runs in its own process, started from this file by Debian's
``/usr/bin/python3`` (GStreamer's Python bindings are Debian packages: python3-gst-1.0,
gir1.2-gst-rtsp-server-1.0, gstreamer1.0-plugins-base, -good, -ugly for x264enc).
``unavailable()`` says why it cannot run here, for a skip.

This module's test side imports only the standard library (``encode_clip`` loads PyAV
when called); its server side (``python3 rtsp_server.py serve …``) only GStreamer.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEBIAN_PYTHON = "/usr/bin/python3"
MOUNT = "/cam"
_AU = struct.Struct("<IB")  # an access unit in a clip file: length, keyframe flag, bytes


@dataclass(frozen=True)
class AccessUnit:
    """One encoded picture: its bytes (Annex B) and whether it is a keyframe."""

    data: bytes
    keyframe: bool


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def unavailable() -> str | None:
    """Why GStreamer's RTSP server cannot run here (a reason to skip), or None."""
    if not os.path.exists(DEBIAN_PYTHON):
        return f"needs {DEBIAN_PYTHON} with GStreamer's bindings"
    probe = (
        "import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0');"
        " from gi.repository import Gst, GstRtspServer; Gst.init(None);"
        " missing = [e for e in ('x264enc', 'rtph264pay', 'h264parse', 'jpegenc')"
        " if Gst.ElementFactory.find(e) is None]; print(' '.join(missing))"
    )
    try:
        result = subprocess.run(
            [DEBIAN_PYTHON, "-c", probe], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"GStreamer's Python bindings did not load: {exc}"
    if result.returncode != 0:
        return (
            "needs Debian's python3-gst-1.0, gir1.2-gst-rtsp-server-1.0,"
            " gstreamer1.0-plugins-base, -good and -ugly"
        )
    if result.stdout.strip():
        return f"GStreamer lacks {result.stdout.strip()} (gstreamer1.0-plugins-ugly, -good)"
    return None


@dataclass
class RtspServer:
    """One server process on a fixed port; ``start`` and ``stop`` as often as needed."""

    kind: str
    size: tuple[int, int] = (320, 240)
    fps: int = 15
    gop: int = 15
    bit_rate: int = 500_000
    clip: list[AccessUnit] = field(default_factory=list)
    port: int = field(default_factory=free_port)
    wrapper: tuple[str, ...] = ()  # a command the server runs under (``ip netns exec NS``)
    _dir: Path = field(init=False)
    _proc: subprocess.Popen | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="rtsp-"))

    @classmethod
    def h264(cls, size=(320, 240), fps=15, gop=15, bit_rate=500_000, **kw: Any) -> RtspServer:
        return cls("h264", size=size, fps=fps, gop=gop, bit_rate=bit_rate, **kw)

    @classmethod
    def clip_of(cls, clip: list[AccessUnit], fps: int = 30, **kw: Any) -> RtspServer:
        return cls("clip", fps=fps, clip=clip, **kw)

    @classmethod
    def mjpeg(cls, size=(320, 240), fps=15, **kw: Any) -> RtspServer:
        return cls("mjpeg", size=size, fps=fps, **kw)

    @classmethod
    def audio(cls, **kw: Any) -> RtspServer:
        return cls("audio", **kw)

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}{MOUNT}"

    def url_with(self, user: str, password: str) -> str:
        return f"rtsp://{user}:{password}@127.0.0.1:{self.port}{MOUNT}"

    # -- life ----------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> RtspServer:
        """Start serving (again, on the same port); returns once it listens."""
        if self._proc is not None and self._proc.poll() is None:
            return self
        config = self._dir / "config.json"
        clip_file = self._dir / "clip.aus"
        if self.kind == "clip" and not clip_file.exists():
            write_clip(clip_file, self.clip)
        config.write_text(
            json.dumps(
                {
                    "kind": self.kind,
                    "port": self.port,
                    "width": self.size[0],
                    "height": self.size[1],
                    "fps": self.fps,
                    "gop": self.gop,
                    "kbps": max(1, self.bit_rate // 1000),
                    "sent": str(self._dir / "sent.h264"),
                    "sessions": len(list(self._dir.glob("sent.h264.*"))),
                    "clip": str(clip_file),
                }
            )
        )
        with open(self._dir / "server.log", "ab") as log:
            self._proc = subprocess.Popen(
                [*self.wrapper, DEBIAN_PYTHON, __file__, "serve", str(config)],
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        line = self._proc.stdout.readline() if self._proc.stdout else ""
        while line.strip() != "ready":
            if not line or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the RTSP server ({self.kind}) did not start")
            line = self._proc.stdout.readline()
        return self

    def stop(self) -> None:
        """Kill the server (SIGKILL: a camera that loses power), and reap it."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)  # a paused server dies as well
            proc.kill()
        proc.wait(timeout=10)
        if proc.stdout:
            proc.stdout.close()

    def pause(self) -> None:
        """SIGSTOP: connections stay open, nothing more is sent."""
        assert self._proc is not None
        self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self._proc is not None
        self._proc.send_signal(signal.SIGCONT)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def close(self) -> None:
        """Stop, and remove the server's files (a server that died says so first)."""
        if self._proc is not None and self._proc.poll() is not None:
            print(f"the RTSP server died ({self._proc.returncode}): {self.log()[-2000:]}")
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> RtspServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def log(self) -> str:
        """What the server printed on stderr (GStreamer's warnings, a traceback)."""
        path = self._dir / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def sent(self) -> bytes:
        """Every byte of H.264 the ``h264`` server encoded since it first started: each
        client's session (its own encoder) after the other."""
        return b"".join(p.read_bytes() for p in sorted(self._dir.glob("sent.h264.*")))


# -- clips ------------------------------------------------------------------------------


def write_clip(path: Path, clip: list[AccessUnit]) -> None:
    with open(path, "wb") as out:
        for au in clip:
            out.write(_AU.pack(len(au.data), au.keyframe) + au.data)


def read_clip(path: Path) -> list[AccessUnit]:
    data, at, clip = Path(path).read_bytes(), 0, []
    while at < len(data):
        size, key = _AU.unpack_from(data, at)
        at += _AU.size
        clip.append(AccessUnit(data[at : at + size], bool(key)))
        at += size
    return clip


def encode_clip(
    size: tuple[int, int] = (640, 360),
    fps: int = 30,
    gop: int = 30,
    bit_rate: int = 1_000_000,
    seconds: float = 2.0,
    start: int = 0,
    noise: float = 0.0,
) -> list[AccessUnit]:
    """A clip of the synthetic scene, encoded with libx264 as a camera would send it:
    Annex B, the SPS and PPS before each keyframe, an access unit delimiter in front of
    each picture, no B-frames, a keyframe exactly every ``gop`` frames, about
    ``bit_rate`` bits a second. Frame numbers begin at ``start``. ``noise`` (the standard
    deviation of a sensor's noise, in grey levels) makes the encoder spend its bits on a
    picture as busy as a camera's, so that decoding costs what it would."""
    from fractions import Fraction

    import av
    import cv2

    from pipelined.workers.blocks.testsrc import TestScene

    width, height = size
    context = av.CodecContext.create("libx264", "w")
    context.width, context.height = width, height
    context.pix_fmt = "yuv420p"
    context.time_base = Fraction(1, fps)
    context.framerate = fps
    context.gop_size = gop
    context.max_b_frames = 0
    context.bit_rate = bit_rate
    context.options = {
        "preset": "veryfast",
        "x264-params": (
            f"keyint={gop}:min-keyint={gop}:scenecut=0:aud=1:repeat-headers=1"
            f":vbv-maxrate={bit_rate // 1000}:vbv-bufsize={bit_rate // 1000}"
        ),
    }
    import numpy as np

    scene = TestScene(width, height, fps=fps)
    grain = np.random.default_rng(0)
    clip: list[AccessUnit] = []
    for n in range(round(seconds * fps)):
        picture = scene.render(start + n)
        if noise:
            shaken = picture + grain.normal(0, noise, picture.shape).astype(np.float32)
            picture = np.clip(shaken, 0, 255).astype(np.uint8)
        yuv = cv2.cvtColor(picture, cv2.COLOR_BGR2YUV_I420)
        frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
        frame.pts = n
        clip += [AccessUnit(bytes(p), p.is_keyframe) for p in context.encode(frame)]
    clip += [AccessUnit(bytes(p), p.is_keyframe) for p in context.encode(None)]
    return clip


# -- the server side (Debian's python3, GStreamer) --------------------------------------

_LAUNCH = {
    "h264": (
        "( videotestsrc is-live=false pattern=ball"
        " ! video/x-raw,format=I420,width={width},height={height},framerate={fps}/1"
        " ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max={gop}"
        " bitrate={kbps} option-string=scenecut=0"
        " ! video/x-h264,profile=baseline,stream-format=byte-stream,alignment=au"
        " ! tee name=t ! queue ! rtph264pay name=pay0 pt=96"
        " t. ! queue ! filesink location={sent} buffer-mode=unbuffered )"
    ),
    "mjpeg": (
        "( videotestsrc is-live=false pattern=smpte"
        " ! video/x-raw,format=I420,width={width},height={height},framerate={fps}/1"
        " ! jpegenc ! rtpjpegpay name=pay0 pt=26 )"
    ),
    "audio": (
        "( audiotestsrc is-live=false ! audio/x-raw,rate=8000,channels=1"
        " ! mulawenc ! rtppcmupay name=pay0 pt=0 )"
    ),
}


def _serve(config_path: str) -> None:  # pragma: no cover - runs in the server process
    import ctypes

    import gi

    # Die with the test that started us, even one that never called stop().
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() == 1:
        sys.exit("the process that started the server is gone")

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstRtspServer

    config = json.loads(Path(config_path).read_text())
    Gst.init(None)
    kind, fps = config["kind"], config["fps"]
    units = read_clip(Path(config["clip"])) if kind == "clip" else []
    sessions = [config["sessions"]]  # numbered on from the runs before a restart

    class Factory(GstRtspServer.RTSPMediaFactory):
        """A pipeline of its own for each client: a shared one can abort the server
        (gst_rtsp_media_get_rates) when a client comes back while it is torn down."""

        def do_create_element(self, url):
            sessions[0] += 1
            if kind == "clip":
                launch = (
                    "appsrc name=src is-live=false format=time"
                    " caps=video/x-h264,stream-format=byte-stream,alignment=au"
                    f",framerate={fps}/1 ! h264parse ! rtph264pay name=pay0 pt=96"
                )
            else:
                sent = f"{config['sent']}.{sessions[0]:04d}"
                launch = _LAUNCH[kind].format(**{**config, "sent": sent})
            return Gst.parse_launch(launch)

        def do_configure(self, media):
            if kind != "clip":
                return
            src = media.get_element().get_child_by_name("src")
            count = [0]

            def need_data(src, _length):
                n = count[0]
                buffer = Gst.Buffer.new_wrapped(units[n % len(units)].data)
                buffer.pts = buffer.dts = n * Gst.SECOND // fps
                buffer.duration = Gst.SECOND // fps
                count[0] = n + 1
                src.emit("push-buffer", buffer)

            src.connect("need-data", need_data)

    factory = Factory()
    factory.set_shared(False)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(config["port"]))
    server.get_mount_points().add_factory(MOUNT, factory)
    if server.attach(None) == 0:
        sys.exit(f"cannot listen on port {config['port']}")
    print("ready", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__" and sys.argv[1:2] == ["serve"]:
    _serve(sys.argv[2])
