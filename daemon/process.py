"""One worker process: its arguments, its launch, and a handle on it while it lives.

Workers are started with ``subprocess`` (fork+exec of a fresh interpreter, never a fork
of the daemon's memory), with the command line and stdin that the worker contract
(``pipelined.workers.contract``) gives: secrets on stdin, never in /proc/<pid>/cmdline.

A ``WorkerProcess`` is what the daemon holds of one launched worker: a pidfd, which
the event loop watches to learn of the exit at once; its stderr, logged line by line
with the last lines kept to explain an exit; and psutil samples for status. It decides
nothing: the watcher (watcher.py) and its restart policy do.

A worker's stderr is read on the daemon's one event loop, so whatever a block prints
costs the loop time in proportion to what it printed, never more: a line ends at a
newline or a carriage return (a progress bar is many lines), a line longer than
LINE_BYTES is cut (and says so), and the tail is bounded in lines and bytes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import select
import subprocess
import time
from collections.abc import Callable
from typing import Any

import psutil

from pipelined.workers.contract import WorkerArgs, launch_command, mask, secret_strings
from pipelined.workers.ipc.heartbeat import Beat
from pipelined.workers.ipc.liveness import ProcessIdentity
from pipelined.workers.ipc.names import RunNames

from .graph import BlockSpec, Graph
from .lines import Lines, Tail

log = logging.getLogger("pipelined.block")


def worker_args(
    names: RunNames, spec: BlockSpec, graph: Graph, preview_token: str | None = None
) -> WorkerArgs:
    """The arguments of ``spec``'s worker in ``graph``: its reader slot on each input.

    The graph file's folder goes along: a user's block module may live there. A preview
    block that sets no token gets ``preview_token``, the daemon's (its page's) own.
    """
    params = spec.params
    if spec.type == "preview" and not params.get("token") and preview_token:
        params = {**params, "token": preview_token}
    frames = [w for w, kind in zip(spec.inputs, spec.kinds, strict=True) if kind == "frames"]
    packets = [w for w, kind in zip(spec.inputs, spec.kinds, strict=True) if kind == "packets"]
    beside = graph.path.parent if graph.path else None
    me = ProcessIdentity.me()
    return WorkerArgs(
        instance=names.instance,
        run=names.run,
        block=spec.name,
        type=spec.type,
        params=params,
        inputs=[(w, graph.readers(w).index(spec.name)) for w in frames],
        output=spec.frame_bytes is not None,
        packet_inputs=[(w, graph.packet_readers(w).index(spec.name)) for w in packets],
        packet_output=spec.packet_bytes is not None and spec.fed_by is None,
        incoming=len(graph.packet_readers(spec.name)) if spec.fed_by is not None else None,
        encode=spec.encode.to_dict() if spec.encode is not None else None,
        supervisor=(me.pid, me.start_time),
        liveness_interval=spec.supervision.liveness_interval,
        beside=str(beside) if beside is not None else None,
    )


def launch(args: WorkerArgs, pass_fds: tuple[int, ...] = ()) -> subprocess.Popen:
    """Start the worker; its stderr comes back on a pipe for the log and ``last_exit``.

    ``pass_fds`` are the worker's ends of its event pipes, kept open in it at their numbers.
    """
    command = launch_command(args)
    proc = subprocess.Popen(
        command.argv,
        stdin=subprocess.PIPE if command.stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        close_fds=True,
        pass_fds=pass_fds,
        # Its own session: a Ctrl-C or a terminal hang-up reaches the daemon only, which
        # stops the blocks in order, instead of every block at once behind its back.
        start_new_session=True,
        env=command.env,
    )
    if command.stdin is not None:
        assert proc.stdin is not None  # a pipe, asked for above
        try:
            proc.stdin.write(command.stdin)
            proc.stdin.close()
        except BrokenPipeError:
            pass  # it died at once; its exit tells the story
        proc.stdin = None  # closed: the worker reads its secrets to EOF
    return proc


class WorkerProcess:
    """A launched worker, watched from the running event loop until it has exited.

    ``on_exit`` is called once, after the exit, when everything the worker wrote to
    stderr has been read: its last words explain the exit.
    """

    def __init__(
        self,
        name: str,
        popen: subprocess.Popen,
        pidfd: int,
        on_exit: Callable[[WorkerProcess], None],
        secrets: list[str] | None = None,
        on_line: Callable[[str], None] | None = None,
    ):
        self.name = name
        self.popen = popen
        self.secrets = secrets or []  # hidden in every line it prints (``mask``)
        self.tail = Tail()
        self.fps = self.fps_in = self.cpu_percent = 0.0
        self.rss_bytes = 0
        self._on_exit = on_exit
        self._on_line = on_line or self._log_line
        self._pidfd: int | None = pidfd
        assert popen.stderr is not None  # launch() pipes it
        self._stderr_fd: int | None = popen.stderr.fileno()
        self._lines = Lines()
        self._sample: tuple[float, int, int] | None = None
        try:
            self._ps: psutil.Process | None = psutil.Process(popen.pid)
        except psutil.Error:
            self._ps = None
        loop = asyncio.get_running_loop()
        loop.add_reader(pidfd, self._exited)
        os.set_blocking(self._stderr_fd, False)
        loop.add_reader(self._stderr_fd, self._read_stderr)

    @classmethod
    def start(
        cls,
        args: WorkerArgs,
        on_exit: Callable[[WorkerProcess], None],
        on_line: Callable[[str], None] | None = None,
        pass_fds: tuple[int, ...] = (),
    ) -> WorkerProcess:
        """Launch the worker of ``args`` and watch it on the running loop.

        Each line of its stderr, its block's secrets hidden, goes to ``on_line`` (else
        to the log, at INFO).

        Raises OSError (or CodecError) if it cannot be launched. A worker launched but
        that cannot be watched (no pidfd: out of file descriptors) is killed and reaped
        first: a failed start leaves no process behind.
        """
        popen = launch(args, pass_fds)
        try:
            pidfd = os.pidfd_open(popen.pid)
        except OSError:
            popen.kill()
            popen.wait()
            if popen.stderr is not None:
                popen.stderr.close()
            raise
        return cls(args.block, popen, pidfd, on_exit, secret_strings(args.params), on_line)

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        """None while it runs; then its exit code, or minus the signal that killed it."""
        return self.popen.returncode

    @property
    def log_extra(self) -> dict[str, Any]:
        """Fields for the journal: which block, and which worker process."""
        return {"block": self.name, "worker_pid": self.pid}

    def signal(self, sig: int) -> None:
        """Send ``sig``, unless the worker has been reaped (its pid may be another's now)."""
        if self.popen.returncode is None:
            try:
                os.kill(self.popen.pid, sig)
            except ProcessLookupError:
                pass

    def sample(self, beat: Beat | None) -> None:
        """CPU and memory from psutil, frame rates from the heartbeat's counters."""
        if self._ps is None:
            return
        try:
            with self._ps.oneshot():
                self.cpu_percent = self._ps.cpu_percent(None)
                self.rss_bytes = self._ps.memory_info().rss
        except psutil.Error:
            return
        if beat is None:
            return
        now = time.monotonic()
        if self._sample is not None:
            then, frames_out, frames_in = self._sample
            dt = now - then
            if dt > 0:
                self.fps = (beat.frames_out - frames_out) / dt
                self.fps_in = (beat.frames_in - frames_in) / dt
        self._sample = (now, beat.frames_out, beat.frames_in)

    # -- plumbing -----------------------------------------------------------------------

    def _exited(self) -> None:
        self.popen.wait()
        self._close_fds()
        self._on_exit(self)

    def _read_stderr(self) -> None:
        fd = self._stderr_fd
        if fd is None:
            return  # read to its end already
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if chunk:
            lines = self._lines.feed(chunk)
        else:
            asyncio.get_running_loop().remove_reader(fd)
            self._stderr_fd = None
            lines = self._lines.end()
        for line in lines:
            line = mask(line, self.secrets)  # before anyone sees it: the tail, the log
            self.tail.append(line)
            self._on_line(line)

    def _log_line(self, line: str) -> None:
        log.info("%s: %s", self.name, line, extra=self.log_extra)

    def _close_fds(self) -> None:
        loop = asyncio.get_running_loop()
        while self._stderr_fd is not None:
            self._read_stderr()  # take what the worker wrote last: it explains the exit
            if self._stderr_fd is not None and not _readable(self._stderr_fd):
                loop.remove_reader(self._stderr_fd)
                self._stderr_fd = None
        if self.popen.stderr is not None:
            self.popen.stderr.close()
        if self._pidfd is not None:
            loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None


def _readable(fd: int) -> bool:
    """Whether a read would not block (poll: select() cannot take fds past 1023)."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))
