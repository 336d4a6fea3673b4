"""Starting one worker: its arguments as one string, its secrets on stdin.

Workers are started with ``subprocess`` (fork+exec of a fresh interpreter, never a fork
of the daemon's memory), with the command line and stdin that the worker contract
(``pipelined.workers.contract``) gives: secrets on stdin, never in /proc/<pid>/cmdline.
"""

from __future__ import annotations

import os
import subprocess

from pipelined.workers.contract import WorkerArgs, launch_command
from pipelined.workers.ipc.liveness import ProcessIdentity
from pipelined.workers.ipc.names import RunNames

from .graph import BlockSpec, Graph


def worker_args(names: RunNames, spec: BlockSpec, graph: Graph) -> WorkerArgs:
    """The arguments of ``spec``'s worker in ``graph``: its reader slot on each input.

    The graph file's folder goes along: a user's block module may live there.
    """
    frames = [w for w, kind in zip(spec.inputs, spec.kinds, strict=True) if kind == "frames"]
    packets = [w for w, kind in zip(spec.inputs, spec.kinds, strict=True) if kind == "packets"]
    beside = graph.path.parent if graph.path else None
    return WorkerArgs(
        instance=names.instance,
        run=names.run,
        block=spec.name,
        type=spec.type,
        params=spec.params,
        inputs=[(w, graph.readers(w).index(spec.name)) for w in frames],
        output=spec.frame_bytes is not None,
        packet_inputs=[(w, graph.packet_readers(w).index(spec.name)) for w in packets],
        packet_output=spec.packet_bytes is not None,
        encode=spec.encode.to_dict() if spec.encode is not None else None,
        supervisor=tuple(ProcessIdentity.me().encode()),
        liveness_interval=spec.supervision.liveness_interval,
        beside=str(beside) if beside is not None else None,
    )


def launch(args: WorkerArgs) -> subprocess.Popen:
    """Start the worker; its stderr comes back on a pipe for the log and ``last_exit``."""
    command = launch_command(args)
    proc = subprocess.Popen(
        command.argv,
        stdin=subprocess.PIPE if command.stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        close_fds=True,
        # Its own session: a Ctrl-C or a terminal hang-up reaches the daemon only, which
        # stops the blocks in order, instead of every block at once behind its back.
        start_new_session=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    if command.stdin is not None:
        try:
            proc.stdin.write(command.stdin)
            proc.stdin.close()
        except BrokenPipeError:
            pass  # it died at once; its exit tells the story
        proc.stdin = None  # closed: the worker reads its secrets to EOF
    return proc
