"""The writer's answer to "does anyone take my frames?": reader slots held by live processes."""

from __future__ import annotations

import signal
import sys
import textwrap

from pipelined.workers.ipc.names import RunNames
from pipelined.workers.ipc.wire import Wire, WireReader, WireWriter

HOLD = textwrap.dedent(
    """
    import sys, time
    from pipelined.workers.ipc.names import RunNames
    from pipelined.workers.ipc.wire import WireReader
    reader = WireReader(RunNames(sys.argv[1], sys.argv[2]), "cam", int(sys.argv[3]))
    print("attached", flush=True)
    time.sleep(600)
    """
)


def test_readers_count_while_attached_and_alive(names: RunNames, procs) -> None:
    wire = Wire.create(names, "cam", 64, readers=3)
    writer = WireWriter(names, "cam")
    try:
        assert writer.attached_readers() == 0  # slots made by the daemon, nobody in them
        mine = WireReader(names, "cam", 0)
        assert writer.attached_readers() == 1
        other = procs.start([sys.executable, "-c", HOLD, names.instance, names.run, "2"])
        assert other.stdout.readline().strip() == "attached"
        assert writer.attached_readers() == 2
        mine.close()  # a reader that leaves clears its slot
        assert writer.attached_readers() == 1
        other.send_signal(signal.SIGKILL)  # one that is killed leaves its pid behind
        other.wait(timeout=30)
        assert wire.stats()["readers"][2]["attached_pid"] == other.pid
        assert writer.attached_readers() == 0
    finally:
        writer.close()
        wire.unlink()
        wire.close()
